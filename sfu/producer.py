"""A Producer is one track a publisher sends (camera, microphone or screen share); a Stream is one RTP stream of
it: a simulcast layer (named by its RID) or, without simulcast, the only one.

Every incoming packet goes to the media engine (sfu/engine) in one call, which caches it for retransmission,
finds keyframes, keeps the group of pictures and sends every consumer its copy. What stays here is the slow path:
each stream's publisher-facing RTCP state (reception statistics for receiver reports, NACKs for what it lost,
keyframe requests, one per 500 ms per stream), its rate and picture size for the layer choice, and the taps.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from sfu import rtcp
from sfu.codecs import H264, VP8, CodecInfo
from sfu.engine import CODEC_H264, CODEC_OTHER, CODEC_VP8, F_ACCEPTED, F_EVENTS, F_KEYFRAME
from sfu.engine.bridge import EngineBridge, process_bridge
from sfu.frames import h264_size, h264_sps, vp8_size
from sfu.keyframes import KeyframeThrottle
from sfu.reception import NackTracker, ReceptionStats
from sfu.rtp import (
    RtpHeader,
    SequenceRewriter,
    TimestampRewriter,
    Vp8Descriptor,
    Vp8PictureIdRewriter,
    parse_rtp,
    parse_vp8_descriptor,
    rewrite_header,
    rewrite_vp8_descriptor_in_place,
)

if TYPE_CHECKING:
    from sfu.pipe import Pipe
    from sfu.taps import Tap


class ConsumerView(Protocol):
    """What a producer and the room's dynacast know of a consumer (sfu/consumer.py depends on this module, never
    the other way round): copies are the engine's business, so this is only the layer bookkeeping."""

    paused: bool
    wanted_index: int

    @property
    def target(self) -> Stream | None: ...

    @property
    def current(self) -> Stream | None: ...

log = logging.getLogger("classcast.sfu.producer")

SOURCES = {"camera": "video", "microphone": "audio", "screen": "video"}
STALL_S = 0.6  # a layer silent this long is treated as paused by the publisher
RATE_WINDOW_S = 1.0
_MASK, _HALF = 0xFFFFFFFF, 0x80000000  # RTP timestamp arithmetic
SPS_MAX_BYTES = 256  # a real SPS is tens of bytes
SPS_READ_INTERVAL_S = 0.1
# What a microphone said that a sink added later can still hear (a tap's `hear_since`): the transcriber's process
# starts when the class goes live, a second or more on a busy machine, while a teacher may already be speaking.
SPOKEN_KEPT_S = 5.0
LADDER_GUESS_BPS = 150_000  # lowest layer's rate before anything was measured; each layer up about triples it

SendRtcp = Callable[[bytes], Awaitable[bool]]


class Packet:
    """One received packet as the taps' feed sees it (the engine keeps its own copy for forwarding)."""

    __slots__ = ("arrival", "data", "header", "keyframe", "payload", "vp8")

    def __init__(self, data: bytes, header: RtpHeader, arrival: float, vp8: Vp8Descriptor | None,
                 keyframe: bool) -> None:
        self.data = data
        self.header = header
        self.arrival = arrival
        self.payload = data[header.payload_offset : header.payload_end]
        self.vp8 = vp8
        self.keyframe = keyframe

    @property
    def timestamp(self) -> int:
        return self.header.timestamp

    @property
    def sequence_number(self) -> int:
        return self.header.sequence_number


class Stream:
    def __init__(self, producer: Producer, index: int, rid: str | None, ssrc: int | None,
                 rtx_ssrc: int | None) -> None:
        self.producer = producer
        self.index = index  # 0 = lowest layer
        self.rid = rid
        self.ssrc = ssrc  # learned from the first packet when the SDP did not announce it
        self.rtx_ssrc = rtx_ssrc
        codec = {VP8: CODEC_VP8, H264: CODEC_H264}.get(producer.codec.mime_type, CODEC_OTHER)
        # the engine's stream: its packet cache, keyframe detection and group of pictures
        self.sid: int = producer.bridge.engine.add_stream(codec, producer.kind == "video",
                                                          producer.codec.payload_type)
        self.stats = ReceptionStats(producer.codec.clock_rate)
        self.nacks = NackTracker()
        self.keyframes = KeyframeThrottle()
        self.last_sr: rtcp.SenderReport | None = None
        self.packets_in = 0
        self.bytes_in = 0
        self.rtx_in = 0
        self.nacks_sent = 0
        self.last_arrival = 0.0
        self.first_arrival = 0.0
        self.flowing_since = 0.0  # when it last began to flow (first packet, or first after a stall)
        self.active = True  # dynacast: False while the publisher was asked to pause it
        self.unneeded_since: float | None = None
        self.last_rate = 0
        self.width: int | None = None
        self._sps = b""  # the H.264 SPS whose size was read last
        self._sps_read_at = float("-inf")
        self.height: int | None = None
        self._window: deque[tuple[float, int]] = deque(maxlen=8192)  # (arrival, bytes) over the last second
        self._window_bytes = 0  # the sum of the window's sizes
        self._expected_at = float("nan")  # expected_bitrate's last (now, packets_in) and answer
        self._expected_packets = -1
        self._expected = 0

    def cached(self, seq: int) -> bool:
        """Whether the engine's cache holds this packet (for answering NACKs)."""
        return bool(self.producer.bridge.engine.cached(self.sid, seq))

    def flowing(self, now: float) -> bool:
        return self.packets_in > 0 and now - self.last_arrival < STALL_S

    def bitrate(self, now: float) -> int:
        """Bits per second received over the last second."""
        window = self._window
        while window and now - window[0][0] > RATE_WINDOW_S:
            self._window_bytes -= window.popleft()[1]
        rate = self._window_bytes * 8
        if rate and now - self.flowing_since >= RATE_WINDOW_S and rate != self.last_rate:  # a full window
            self.last_rate = rate
            self._expected_at = float("nan")  # expected_bitrate may answer with last_rate
        return rate

    def expected_bitrate(self, now: float) -> int:
        """The rate while it flows, else what it last carried, else a guess from its place in the ladder (a
        layer paused by dynacast before it ever flowed must still be resumable when someone can take it).

        Kept for the `now` and packet count it was computed at: every subscriber's layer choice in one pass asks
        for the same layers at the same `now`, and the answer cannot change until either does."""
        if self._expected_at == now and self._expected_packets == self.packets_in:
            return self._expected
        if self.flowing(now):
            rate = self.bitrate(now)
            if now - self.flowing_since < RATE_WINDOW_S:
                # It began to flow (or resumed) less than a window ago: the window holds part of a second and
                # reads low (a third of the rate 0.3 s after a dynacast resume), and a subscriber stepped up on
                # that would be moved down again a moment later. What it last carried, or the guess, until then.
                rate = max(rate, self.last_rate or LADDER_GUESS_BPS * 3**self.index)
        else:
            rate = self.last_rate or LADDER_GUESS_BPS * 3**self.index
        self._expected_at, self._expected_packets, self._expected = now, self.packets_in, rate
        return rate

    def _count(self, size: int, arrival: float) -> None:
        self.packets_in += 1
        self.bytes_in += size
        if not self.first_arrival:
            self.first_arrival = arrival
        if not self.flowing_since or arrival - self.last_arrival >= STALL_S:
            self.flowing_since = arrival
        self.last_arrival = arrival
        window = self._window
        if len(window) == window.maxlen:
            self._window_bytes -= window[0][1]  # append drops it
        window.append((arrival, size))
        self._window_bytes += size

    async def request_keyframe(self, now: float) -> bool:
        producer = self.producer
        if producer.kind != "video" or self.ssrc is None or producer.closed or not self.keyframes.allow(now):
            return False
        return await producer._send_rtcp(rtcp.build_pli(producer.local_ssrc, self.ssrc))

    async def nack_upstream(self, seqs: list[int]) -> None:
        if seqs and self.ssrc is not None:
            self.nacks_sent += 1
            await self.producer._send_rtcp(rtcp.build_nack(self.producer.local_ssrc, self.ssrc, seqs))

    def report_block(self, now: float) -> rtcp.ReportBlock | None:
        return self.stats.report_block(self.ssrc, now) if self.ssrc is not None and self.packets_in else None


class TapFeed:
    """What taps see of a simulcast track: one continuous stream, the highest layer flowing.

    Sinks such as the recorder decode one stream per track; three layers' packets interleaved under one track id
    would be garbage to them. Like a subscriber, the feed switches layers only at a keyframe and keeps sequence
    numbers, timestamps and VP8 picture ids continuous, and its sender reports are translated to match.
    A switch that cannot be placed through sender reports is placed by arrival time, a guess: the sender reports
    translated before it no longer hold for the timestamps after it, so the feed starts a new `clock` and its
    reports say which clock they map (a sink takes a new clock's report as it is, not as a correction to weigh).
    Unlike a subscriber it has nobody to ask for that keyframe on its behalf: a browser sends keyframes only when
    asked, so while the feed waits for a layer (at the start, or to move to a better one) it asks for that layer's
    keyframe itself, every `ASK_INTERVAL_S`. Without this a browser's camera never reached a recording.
    """

    ASK_INTERVAL_S = 0.5
    RESUME_WAIT_S = 1.0
    # Moving up to a layer before its first sender report would place it by arrival time (off by up to the jitter
    # of a loaded loop, ~0.6 s seen): the feed stays on its current layer until the report, this long at most.
    REPORT_WAIT_S = 2.0

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.current: Stream | None = None
        # The layer whose clock the feed's timestamps last followed; unlike `current` it outlives a restart, so
        # the next start is placed exactly (same layer: the same offset; another: through both layers' reports).
        self.fed: Stream | None = None
        self.wanted: Stream | None = None  # the layer whose keyframe the feed waits for, if any
        self.seq = SequenceRewriter()
        self.ts = TimestampRewriter(producer.codec.clock_rate)
        self.vp8 = Vp8PictureIdRewriter()
        self.ssrc = producer.streams[-1].ssrc or 0x7A90_0000 | hash(producer.id) & 0xFFFF
        self._switch = True
        self._asked = float("-inf")
        self._resume_until = float("-inf")
        self._rebased = False
        self.clock = 0  # which mapping of the publisher's NTP time the feed's timestamps follow (see above)

    def restart(self, now: float) -> None:
        """From the next keyframe on (a new sink joined and must start at one); numbering stays continuous.
        For a moment the feed waits for a better layer that dynacast is resuming for it rather than starting
        on a lower one: a track-mode VP8 file is encoded at its first picture's size."""
        self.current = self.wanted = None
        self._switch = True
        self._asked = float("-inf")
        self._resume_until = now + self.RESUME_WAIT_S

    def _best(self, now: float, fallback: Stream) -> Stream:
        streams = self.producer.streams
        flowing = [s for s in streams if s.flowing(now)]
        best = flowing[-1] if flowing else fallback
        if self.current is None and now < self._resume_until:
            resuming = [s for s in streams if s.index > best.index and s.active and s.packets_in]
            if resuming:
                return resuming[-1]
        return best

    def packet(self, packet: Packet, stream: Stream) -> bytes | None:
        now = packet.arrival
        if stream is not self.current:
            best = self._best(now, stream)
            current_ok = self.current is not None and self.current.flowing(now) and \
                (self.current.index >= best.index or not self._placeable(best, now))
            self.wanted = None if current_ok else best
            if current_ok or stream is not best or not packet.keyframe:
                return None
            self._rebased = False  # set by `_rebase` when the switch lands exactly
            how = self._rebase(self.fed, stream, packet)
            if not self._rebased:
                self.clock += 1
            log.info("track %s: taps fed layer %d from its keyframe (%s; clock %d)", self.producer.id, stream.index,
                     how, self.clock)
            self.current, self.fed, self.wanted, self._switch = stream, stream, None, True
        header = packet.header
        seq = self.seq.rewrite(header.sequence_number, self._switch)
        if seq is None:
            return None
        ts = self.ts.rewrite(header.timestamp, packet.arrival, self._switch and not self._rebased)
        self._rebased = False
        buf = rewrite_header(packet.data, header, self.ssrc, header.payload_type, seq, ts)
        if packet.vp8 is not None:
            picture_id, tl0 = self.vp8.rewrite(packet.vp8, self._switch)
            rewrite_vp8_descriptor_in_place(buf, header.payload_offset, packet.vp8, picture_id, tl0)
        self._switch = False
        return bytes(buf)

    def _placeable(self, best: Stream, now: float) -> bool:
        """Whether a switch to `best` can land exactly on the feed's clock: both layers have a sender report (see
        `_rebase`), or `best` has sent none for REPORT_WAIT_S since it began to flow and the guess must do."""
        current = self.current
        if current is None or current.last_sr is None or best.last_sr is not None:
            return True
        return now - best.flowing_since >= self.REPORT_WAIT_S

    def _rebase(self, old: Stream | None, new: Stream, packet: Packet) -> str:
        """Places the new layer's first picture on the feed's clock through both layers' sender reports (one
        NTP clock at the publisher), so a sink's lip sync survives the switch exactly; without reports the
        rewriter's arrival-time guess is used (off by the network and scheduling jitter, until the next report).
        A restart that goes on with the layer it had keeps its offset: a sink added then was handed the layer's
        latest report mapped through that offset (`Producer.replay_sender_reports`), and an arrival-time guess
        there put a VP8 camera 236 ms off its microphone for the whole of a recording, a big keyframe's late
        arrival being the guess's error, which the recorder then took for a stalled sender's report."""
        if old is new:
            in_old, how = packet.header.timestamp, "same layer, same offset"
        elif old is None or old.last_sr is None or new.last_sr is None:
            return "placed by arrival: " + ("first layer" if old is None else "a layer without a sender report")
        else:
            how = f"through the sender reports of layers {old.index} and {new.index}"
            rate = self.producer.codec.clock_rate
            ntp_delta = (new.last_sr.ntp - old.last_sr.ntp) / (1 << 32)  # seconds from old's report to new's
            since_new = ((packet.header.timestamp - new.last_sr.rtp_timestamp + _HALF) & _MASK) - _HALF
            in_old = old.last_sr.rtp_timestamp + round(ntp_delta * rate) + since_new
        out = self.ts.peek(in_old)
        if out is None:
            return "placed by arrival: the feed's clock has no offset yet"
        self.ts.rebase(packet.header.timestamp, out, packet.arrival)
        self._rebased = True
        return how

    def keyframe_due(self, now: float) -> Stream | None:
        """The layer to ask a keyframe of now: the one the feed waits for, at most every ASK_INTERVAL_S."""
        if self.wanted is None or now - self._asked < self.ASK_INTERVAL_S:
            return None
        self._asked = now
        return self.wanted

    def source(self, now: float) -> Stream:
        """The layer a sink's keyframe request is for: the one it waits for, else the one it is fed."""
        return self.wanted or self.current or self._best(now, self.producer.streams[-1])

    def sender_report(self, stream: Stream, rtp_timestamp: int) -> int | None:
        if stream is not self.current:
            return None
        return self.ts.peek(rtp_timestamp)


class Producer:
    def __init__(
        self, track_id: str, owner: str, uid: str, source: str, mid: str, codec: CodecInfo, ssrc: int | None,
        rtx_ssrc: int | None, rtx_payload_type: int | None, local_ssrc: int, send_rtcp: SendRtcp,
        rids: list[str] | None = None, bridge: EngineBridge | None = None,
    ) -> None:
        self.id = track_id
        self.bridge = bridge or process_bridge()
        self.owner = owner  # the publishing participant's key
        self.uid = uid
        self.source = source
        self.kind = SOURCES[source]
        self.mid = mid
        self.codec = codec
        self.rtx_payload_type = rtx_payload_type
        self.local_ssrc = local_ssrc  # our SSRC on that m-section: the sender SSRC of our RTCP
        self._send_rtcp = send_rtcp
        if rids:
            self.streams = [Stream(self, i, rid, None, None) for i, rid in enumerate(rids)]
        else:
            self.streams = [Stream(self, 0, None, ssrc, rtx_ssrc)]
        self.consumers: list[ConsumerView] = []
        self.taps: list[Tap] = []  # the room's taps (shared list, usually empty)
        self.pipes: list[Pipe] = []  # other workers serving the room (sfu/pipe.py): each gets every packet once
        self.on_missing: Callable[[], None] | None = None  # the router's: a packet is missing, NACK at the next tick
        self.tap_feed = TapFeed(self) if len(self.streams) > 1 else None
        # (packet, arrival) of the last SPOKEN_KEPT_S of an audio track, as its taps saw them
        self.spoken: deque[tuple[bytes, float]] | None = deque() if self.kind == "audio" else None
        self.muted = False  # the publisher muted it
        self._blocked = False
        self.closed = False
        self.wrong_codec = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def blocked(self) -> bool:
        """A moderator muted the publisher: the engine forwards nothing of it."""
        return self._blocked

    @blocked.setter
    def blocked(self, value: bool) -> None:
        self._blocked = value
        for stream in self.streams:
            self.bridge.engine.set_blocked(stream.sid, value)

    @property
    def simulcast(self) -> bool:
        return len(self.streams) > 1

    def stream(self, rid: str | None) -> Stream | None:
        return next((s for s in self.streams if s.rid == rid), None)

    # Single-stream shorthands (the only stream, or the lowest layer).
    @property
    def ssrc(self) -> int | None:
        return self.streams[0].ssrc

    @property
    def keyframes(self) -> KeyframeThrottle:
        return self.streams[0].keyframes

    @property
    def packets_in(self) -> int:
        return sum(s.packets_in for s in self.streams)

    @property
    def nacks_sent(self) -> int:
        return sum(s.nacks_sent for s in self.streams)

    def info(self) -> dict[str, object]:
        """How signaling describes the track to participants."""
        info: dict[str, object] = {"trackId": self.id, "uid": self.uid, "source": self.source, "kind": self.kind,
                                   "muted": self.muted or self.blocked, "codec": self.codec.mime_type}
        if self.simulcast:
            info["layers"] = [s.rid for s in self.streams]
        return info

    def tap_info(self) -> dict[str, object]:
        """How taps see the track: its info plus the largest picture any layer has shown (`size`, when known),
        so a sink that must fix its picture size at the start (a VP8 track re-encoded to H.264) fits the top
        layer even while it is paused and the feed begins below it."""
        sizes = [(s.width, s.height) for s in self.streams if s.width and s.height]
        return self.info() | ({"size": list(max(sizes))} if sizes else {})

    # ---- the per-packet path -----------------------------------------------------------------------------

    def on_rtp(self, stream: Stream, data: bytes, header: RtpHeader, arrival: float, pushed: int | None = None) -> None:
        """One packet of a stream: the engine forwards it (one call, or none when it already did: `pushed` holds
        push's flags then), then the slow path's bookkeeping."""
        if self.closed:
            return  # unpublished: its streams left the engine (a packet in flight may still come)
        flags = self.bridge.engine.push(stream.sid, data, arrival) if pushed is None else pushed
        if not flags & F_ACCEPTED:
            # wrong payload type (another codec of the answer: consumers were negotiated for this one), padding
            # only (bandwidth probing), or malformed: counted by reason in the engine's stream stats
            if header.payload_type != self.codec.payload_type:
                self.wrong_codec += 1
            return
        ext = stream.stats.update(header.sequence_number, header.timestamp, arrival)
        stream.nacks.on_packet(ext, arrival)
        if stream.nacks.missing and self.on_missing is not None:
            self.on_missing()
        stream._count(len(data), arrival)
        keyframe = bool(flags & F_KEYFRAME)
        if keyframe:
            self._measure(stream, data, header, arrival)
        if flags & F_EVENTS:
            self.bridge.dispatch()
        for pipe in self.pipes:
            pipe.rtp(stream, data, header, arrival)
        if (spoken := self.spoken) is not None:
            spoken.append((data, arrival))
            while arrival - spoken[0][1] > SPOKEN_KEPT_S:
                spoken.popleft()
        if self.taps:
            self._tap(stream, data, header, arrival, keyframe)

    def _measure(self, stream: Stream, data: bytes, header: RtpHeader, arrival: float) -> None:
        """A keyframe: the picture size it announces (for subscribers who ask for a video size).

        Reading an H.264 SPS walks it bit by bit in Python (up to ~2 ms for a crafted 1200-byte one, issue 13's
        finding): an SPS is read only when its bytes changed, only if it is of a plausible size, and at most
        every SPS_READ_INTERVAL_S per stream, so a publisher cannot make every packet cost that."""
        size = None
        if self.codec.mime_type == VP8:
            vp8 = parse_vp8_descriptor(data, header.payload_offset, header.payload_end)
            size = vp8_size(data, header.payload_offset + vp8.size, header.payload_end)
        elif self.codec.mime_type == H264:
            span = h264_sps(data, header.payload_offset, header.payload_end)
            if span is None or span[1] - span[0] > SPS_MAX_BYTES:
                return
            sps = data[span[0] : span[1]]
            if sps == stream._sps or arrival - stream._sps_read_at < SPS_READ_INTERVAL_S:
                return
            stream._sps, stream._sps_read_at = sps, arrival
            size = h264_size(data, *span)
        if size:
            stream.width, stream.height = size

    def _tap(self, stream: Stream, data: bytes, header: RtpHeader, arrival: float, keyframe: bool) -> None:
        feed = self.tap_feed
        if feed is None:
            tapped: bytes | None = data
        else:
            vp8 = parse_vp8_descriptor(data, header.payload_offset, header.payload_end) \
                if self.codec.mime_type == VP8 else None
            tapped = feed.packet(Packet(data, header, arrival, vp8, keyframe), stream)
        if tapped is not None:
            for tap in self.taps:
                tap.rtp(self.id, tapped, arrival)
        if feed is not None and (due := feed.keyframe_due(arrival)) is not None:
            self._spawn(due.request_keyframe(arrival))  # the feed asks for the keyframe it waits for

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """RTCP from the synchronous packet path (it leaves through aiortc's coroutines)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_rtx(self, stream: Stream, data: bytes, header: RtpHeader, arrival: float) -> None:
        """RFC 4588: the original sequence number leads the payload; rebuild the original packet."""
        if header.payload_end - header.payload_offset < 2 or stream.ssrc is None or self.closed:
            return  # padding-only RTX (bandwidth probing), or unpublished
        stream.rtx_in += 1
        osn = struct.unpack_from("!H", data, header.payload_offset)[0]
        if stream.cached(osn):
            return  # already have it
        original = bytearray(data[: header.payload_offset])
        original[0] &= 0xDF  # padding is not copied
        original[1] = (original[1] & 0x80) | self.codec.payload_type
        struct.pack_into("!HII", original, 2, osn, header.timestamp, stream.ssrc)
        original += data[header.payload_offset + 2 : header.payload_end]
        rebuilt = bytes(original)
        self.on_rtp(stream, rebuilt, parse_rtp(rebuilt), arrival)

    def drops(self) -> dict[str, int]:
        """Packets of this track the engine did not forward, by reason (requirement 8 of issue 21)."""
        total: dict[str, int] = {}
        for stream in self.streams:
            if self.closed:
                break
            for reason, n in self.bridge.engine.stream_stats(stream.sid)["drops"].items():
                total[reason] = total.get(reason, 0) + n
        return total

    # ---- RTCP toward the publisher -----------------------------------------------------------------------

    async def request_keyframe(self, now: float) -> bool:
        """For a sink (the recorder): the layer its feed carries or waits for. Simulcast consumers ask their
        target stream themselves."""
        stream = self.tap_feed.source(now) if self.tap_feed is not None else self.streams[0]
        return await stream.request_keyframe(now)

    def on_sender_report(self, stream: Stream, report: rtcp.SenderReport, arrival: float) -> None:
        stream.last_sr = report
        stream.stats.on_sender_report(report.ntp, arrival)
        for pipe in self.pipes:
            pipe.sender_report(stream, report)
        self._report_to_taps(stream, report, arrival, self.taps)

    def _report_to_taps(self, stream: Stream, report: rtcp.SenderReport, arrival: float, taps: list[Tap]) -> None:
        """A simulcast track's taps see one continuous stream: its report is mapped by the feed (or not passed on,
        for a layer the feed is not on)."""
        feed = self.tap_feed
        rtp_timestamp = report.rtp_timestamp if feed is None else feed.sender_report(stream, report.rtp_timestamp)
        if rtp_timestamp is not None:
            clock = 0 if feed is None else feed.clock
            for tap in taps:
                tap.sender_report(self.id, report.ntp, rtp_timestamp, arrival, clock)

    def replay_sender_reports(self, tap: Tap) -> None:
        """A sink added mid-track gets the publisher's latest NTP<->RTP mapping at once, as it arrived. Chromium
        reports on an audio track only every ~5 s: without this the recorder placed a new recording's sound by
        arrival times for up to that long and then moved it to the report's mapping, a jump of tens of ms in the
        file (a click, and the sound off its video by that much until then). A simulcast feed maps the report of
        the layer it is on, and its restart for the new sink places the next keyframe exactly on the same clock
        (`TapFeed._rebase`), so the mapping holds."""
        for stream in self.streams:
            if stream.last_sr is not None:
                self._report_to_taps(stream, stream.last_sr, stream.stats.last_sr_at, [tap])

    def replay_spoken(self, tap: Tap, since: float) -> None:
        """A sink added late hears what the microphone said since `since` (at most SPOKEN_KEPT_S back), dated as
        it arrived: the transcriber started after the teacher began speaking, or restarted after a crash."""
        for data, arrival in self.spoken or ():
            if arrival >= since:
                tap.rtp(self.id, data, arrival)

    def missing(self) -> bool:
        """Packets are missing: the router keeps ticking every NACK_INTERVAL to ask for them again."""
        return any(stream.nacks.missing for stream in self.streams)

    async def tick(self, now: float) -> None:
        """Frequent: ask again for missing packets."""
        for stream in self.streams:
            due = stream.nacks.due(now)
            if due:
                await stream.nack_upstream(due)

    def report_blocks(self, now: float) -> list[rtcp.ReportBlock]:
        return [b for s in self.streams if (b := s.report_block(now)) is not None]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self.streams:
            self.bridge.engine.remove_stream(stream.sid)  # its cache and group of pictures go with it
