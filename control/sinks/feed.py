"""The feed: msgpack maps over a sink process's Unix socket in the data dir (the recorder's, the transcriber's).

Framing is sfu/wire.py's (a plain sequence of msgpack maps, `wire.Channel`), one home for both links. The control
plane holds one connection per sink process; every further connection is a media-only one from the process that
holds a room's tracks (an SFU worker, sfu/worker.py `RelayTap`), carrying `rtp` and `sr` for the jobs named in them.
With the SFU in the control process (CLASSCAST_SFU_WORKERS=0) media goes over the control connection instead.

Media, either connection (key `t` is the kind, `j` the job id):
  rtp {j, id, d, a}       one packet as the publisher sent it, `a` its arrival (CLOCK_MONOTONIC seconds)
  sr {j, id, ntp, rtp, a, c} the publisher's sender-report NTP <-> RTP mapping for the track, of its clock `c`
                         (`sfu.taps.Tap.sender_report`; absent: 0)
Server -> recorder (recorder/__main__.py):
  start {j, room, mode, layout, preset, logo, dir, t0, names}   a job begins (t0: the SFU's monotonic clock)
  track {j, track}        a track is in the room (the SFU's track dict with codec details, plus name and role)
  untrack {j, id}         the track is gone
  tmute {j, id, muted}    the publisher muted (unmuted) the track: its tile shows the name, its sound is left out
  mute {j, uid, muted}    a moderator muted (unmuted) the participant: their microphone is left out (in again)
  stop {j}                finish the job's files
Recorder -> server:
  file {j, path, label}   a file was opened (so a crash still knows what to keep)
  keyframe {j, id}        a video track needs a keyframe (to start, or after loss): the server asks the publisher
  active {j}              the first media reached a file
  done {j, files: [{path, label, size, duration}]}
  failed {j, error}
Server -> transcriber (transcriber/__main__.py; one job per room being transcribed):
  start {j, room}
  track {j, track, speaker}   an Opus microphone of the room; `speaker`: its words become captions (the teacher's)
  untrack {j, id}         the track is gone: what it said so far is transcribed
  stop {j}                transcribe what was heard, then say `stopped`
Transcriber -> server:
  segment {j, room, uid, text, started, ended}   one utterance; `started`/`ended` CLOCK_MONOTONIC seconds of its
                          first and last voiced 20 ms (the server dates it on its own clock)
  stopped {j, segments, dropped, utterances_dropped}

`FeedLink` is the server's side of the socket: it never blocks the caller. Media messages go into a bounded
queue and are dropped and counted when the queue is full or the sink is not connected; a slow or dead sink
never slows forwarding. `FeedTap` is the SFU tap (sfu/taps.py) for one job that writes into the link, and names
the socket (`address`) so that an SFU worker sends the job's media there itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sfu import wire

log = logging.getLogger("classcast.sinks.feed")

MEDIA_QUEUE_LIMIT = wire.MEDIA_QUEUE_LIMIT  # packets waiting for the socket: beyond that the sink is too slow


class FeedLink(wire.Channel):
    """The server's connection to a sink process: fire-and-forget sends, events back through a callback."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(on_event, lambda: None)
        self.closed = True  # until connected: control messages are refused, media dropped and counted

    @property
    def on_event(self) -> Callable[[dict[str, Any]], None]:
        return self.on_message

    @property
    def connected(self) -> bool:
        return not self.closed

    async def connect(self, path: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        await self.attach(reader, writer)


class FeedTap:
    """The SFU tap of one recording job: plain-data calls in, feed messages out; never blocks, never raises."""

    def __init__(self, link: FeedLink, job_id: str, people: dict[str, dict[str, str]]) -> None:
        self.link = link
        self.job_id = job_id
        self.people = people  # uid -> {"name", "role"}, kept current by the recording service
        self.dropped = 0  # this job's packets and reports the recorder could not take
        # The recorder's socket: an SFU worker process sends this job's `rtp`/`sr` there itself (sfu/taps.py)
        self.address: str | None = None

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        person = self.people.get(str(track.get("uid")), {})
        self.link.send({"t": "track", "j": self.job_id, "track": {**track, **person}})

    def track_removed(self, room_sid: str, track_id: str) -> None:
        self.link.send({"t": "untrack", "j": self.job_id, "id": track_id})

    def track_muted(self, room_sid: str, track_id: str, muted: bool) -> None:
        self.link.send({"t": "tmute", "j": self.job_id, "id": track_id, "muted": muted})

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        if not self.link.send_media({"t": "rtp", "j": self.job_id, "id": track_id, "d": data, "a": arrival}):
            self.dropped += 1

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
        if not self.link.send_media({"t": "sr", "j": self.job_id, "id": track_id, "ntp": ntp, "rtp": rtp_timestamp,
                                     "a": arrival, "c": clock}):
            self.dropped += 1
