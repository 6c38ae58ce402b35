"""Taps: how sinks outside the forwarding path (the recorder, the transcriber) see a room's media.

A tap gets the decrypted RTP of every track in the room plus the track list and the publishers' sender-report
NTP mappings, as plain data. Calls are synchronous on the forwarding path, so a tap must never block or await:
it queues what it can take and drops (and counts) the rest. A slow sink must never slow forwarding.
"""

from __future__ import annotations

from typing import Any, Protocol


class Tap(Protocol):
    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        """`track`: the producer's info plus `codec` details (mimeType, clockRate, payloadType, channels, fmtp),
        and `size` ([width, height] of the largest picture a layer has shown) when known."""

    def track_removed(self, room_sid: str, track_id: str) -> None: ...

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        """One received packet of the track, as the publisher sent it (after RTX repair). A simulcast track comes
        as one continuous stream: its highest flowing layer, switching at keyframes, with sequence numbers,
        timestamps (and the matching sender reports) rewritten to stay continuous (`producer.TapFeed`)."""

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
        """The publisher's NTP<->RTP mapping for the track, for lip sync across tracks. `clock` numbers the track's
        timestamp clock: a simulcast feed starts a new one when it switched layers by an arrival-time guess
        (`producer.TapFeed`), and a report of a new clock replaces the earlier mapping rather than correcting it."""

    # Optional (called only when a tap defines it): the publisher muted or unmuted the track.
    # Optional attribute `wants_video` (True when absent): False for an audio-only sink (a transcriber), so that
    # dynacast does not keep a camera's top simulcast layer on for it. A sink that takes video keeps it on.
    # Optional attributes `address` and `job_id`: a sink by address (the recorder, the transcriber: processes of
    # their own). An SFU worker process then sends `rtp` and `sr` in control/sinks/feed.py's format for `job_id`
    # straight to the Unix socket `address`, and only the track calls go through the control process
    # (docs/architecture.md "Worker processes").
    # Optional attribute `hear_since` (CLOCK_MONOTONIC seconds; absent: nothing): the sink is given, when added, the
    # packets each audio track received since then, up to `producer.SPOKEN_KEPT_S` back, with their arrival times
    # (the transcriber, whose process may start after the teacher began speaking).
    # def track_muted(self, room_sid: str, track_id: str, muted: bool) -> None: ...
    # Optional: the sink's media stopped for a reason the server knows (control/workers.py: the SFU worker holding
    # the room died, `sfu_worker_lost`, or was killed as hung, `sfu_worker_hung`); the room's tracks are retracted
    # just before and come back as track_added once its publishers reconnect (a recording's gap, control/recordings).
    # def media_lost(self, room_sid: str, reason: str) -> None: ...


def track_description(info: dict[str, Any], codec: dict[str, Any]) -> dict[str, Any]:
    return {**info, "codec": codec}
