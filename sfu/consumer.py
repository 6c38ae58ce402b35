"""Consumers and the out-slots they write to.

An `OutSlot` is one sendonly m-section toward a subscriber: its SSRC, payload types and the sequence, timestamp
and VP8 picture-id rewriters. It outlives the producers it carries, so a teacher who reconnects (a new producer)
continues on the same slot with continuous numbers, which SRTP and the browser's jitter buffer both need.
A `Consumer` attaches one producer to one slot and decides which packets go: those of one stream (simulcast layer)
at a time, from a keyframe on, switching layers only at a keyframe of the new one. The cached group of pictures
is replayed first so a student who joins sees the teacher at once.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sfu import rtcp
from sfu.bwe import TwccSender
from sfu.producer import Packet, Producer, Stream
from sfu.rtp import SequenceRewriter, TimestampRewriter, Vp8PictureIdRewriter, rewrite_vp8_descriptor_in_place

_HEADER = struct.Struct("!BBHII")
_TWCC_EXT = struct.Struct("!HHBHB")  # one-byte extension block holding only the transport-wide sequence
HISTORY = 4096  # out-sequence -> source memory for answering NACKs (a power of two)
SENT_WINDOW_MAX = 8192  # packets a second: about 80 Mbit/s of 1200-byte packets, far above any one consumer
RTX_BURST = 256  # retransmissions allowed beyond half the packets sent (see Consumer.on_nack)
UP_HOLD_S = 5.0  # after the budget moved a subscriber down, this long before stepping up again (no flapping)
QUALITY_NAMES = ("low", "medium", "high")

SendBytes = Callable[[bytes], Awaitable[bool]]
SendNow = Callable[[bytes], bool]  # the fan-out's synchronous send (Peer.send_rtp_now)
Notify = Callable[[dict[str, Any]], None]


class OutSlot:
    def __init__(self, mid: str, kind: str, clock_rate: int) -> None:
        self.mid = mid
        self.kind = kind
        self.clock_rate = clock_rate
        self.ssrc = 0
        self.payload_type = 0
        self.rtx_ssrc: int | None = None
        self.rtx_payload_type: int | None = None
        self.bound = False  # negotiated: ssrc and payload types known
        self.seq = SequenceRewriter()
        self.ts = TimestampRewriter(clock_rate)
        self.vp8 = Vp8PictureIdRewriter()
        self.rtx_seq = 0
        self.history: list[tuple[int, int, int, Stream] | None] = [None] * HISTORY
        self.consumer: Consumer | None = None
        self.offered: Consumer | None = None  # the consumer the last offer carried on this slot
        self.last_key: tuple[str, str] | None = None  # (uid, source) it last carried: reused for them first
        self.packets_sent = 0
        self.octets_sent = 0
        self.twcc: TwccSender | None = None  # the subscriber's transport-wide numbering, when it negotiated TWCC

    def bind(self, ssrc: int, payload_type: int, rtx_ssrc: int | None, rtx_payload_type: int | None) -> None:
        self.ssrc, self.payload_type = ssrc, payload_type
        self.rtx_ssrc, self.rtx_payload_type = rtx_ssrc, rtx_payload_type
        self.bound = True


class Consumer:
    def __init__(self, producer: Producer, slot: OutSlot, send_rtp: SendNow, send_rtcp: SendBytes,
                 notify: Notify | None = None) -> None:
        self.producer = producer
        self.slot = slot
        self._send_rtp = send_rtp
        self._send_rtcp = send_rtcp
        self._notify = notify
        self.current: Stream | None = producer.streams[0] if not producer.simulcast else None
        self.target: Stream | None = producer.streams[0]
        self.max_index = len(producer.streams) - 1  # the subscriber's requested maximum layer
        self.max_size: tuple[int | None, int | None] | None = None  # a maximum asked as a video size
        self.started = False  # the first packet went out: later packets continue the stream
        self.paused = False  # the subscriber asked for no video ("off"), or the slot is not negotiated yet
        self._switch = True  # the next packet sent starts a new source on the slot
        self.retransmitted = 0
        self.nacks_forwarded = 0
        self.nacks_refused = 0  # NACKs cut short by the retransmission bound
        self.keyframes_requested = 0
        self.switches = 0
        self.wanted_index = 0  # the layer the budget allows, flowing or not (dynacast keeps it on)
        self.fraction_lost = 0
        # (arrival, bytes) of what was sent over the last second; bounded even if nothing ever asks the rate
        self.sent_window: deque[tuple[float, int]] = deque(maxlen=SENT_WINDOW_MAX)
        self.last_down = float("-inf")  # when the budget last chose a lower layer than the current one
        self.sent_window: list[tuple[float, int]] = []
        slot.consumer = self
        slot.last_key = (producer.uid, producer.source)

    # ---- layer choice ----------------------------------------------------------------------------------------

    def choose(self, budget_bps: float, now: float) -> Stream | None:
        """The highest flowing layer within the requested maximum whose rate fits the budget (the lowest
        flowing one when none fits: a small picture beats a frozen one)."""
        streams = self.producer.streams

        def usable(s: Stream) -> bool:  # flowing, or paused by us and so resumable on demand
            return s.flowing(now) or not s.active

        flowing = [s for s in streams[: self.max_index + 1] if usable(s)] or [s for s in streams if s.flowing(now)]
        if not flowing:
            return self.target
        best = flowing[0]
        for stream in flowing[1:]:
            rate = stream.expected_bitrate(now)
            # Stepping up needs 15% headroom over the layer's rate; staying on the current layer needs none.
            needed = rate if stream is self.current else rate * 1.15
            if needed <= budget_bps:
                best = stream
        current = self.current
        if current is not None and current in flowing:
            if best.index < current.index <= self.max_index:  # the budget's doing, not the subscriber's maximum
                self.last_down = now
            elif best.index > current.index and now - self.last_down < UP_HOLD_S:
                return current  # a layer the budget just gave up is not tried again at once
        return best

    def wanted(self, budget_bps: float, now: float) -> int:
        """The layer this subscriber could take if every layer flowed: what dynacast must keep on."""
        best = 0
        for stream in self.producer.streams[1 : self.max_index + 1]:
            if stream.expected_bitrate(now) * 1.15 <= budget_bps:
                best = stream.index
        return best

    async def retarget(self, stream: Stream | None, now: float) -> None:
        if stream is not None:
            self.target = stream
        target = self.target
        # Until the switch happens, keep asking for the target's keyframe (the stream's throttle spaces them).
        if target is not None and target is not self.current and target.flowing(now) and \
                await target.request_keyframe(now):
            self.keyframes_requested += 1

    # ---- forwarding ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Called once the slot is negotiated: replay the cached pictures, or ask for a keyframe."""
        if not self.slot.bound or self.paused or self.started:
            return
        stream = self.target if self.target is not None else self.producer.streams[0]
        now = time.monotonic()
        if self.producer.simulcast and not stream.flowing(now):
            # The target is paused (dynacast resumes it for us): start on the best layer flowing below it, not
            # on the target's cached picture from before the pause; the target follows at its first keyframe.
            below = [s for s in self.producer.streams[: stream.index + 1] if s.flowing(now)]
            if below:
                stream = below[-1]
        gop = stream.gop
        if gop is None:
            self.current = stream
            return  # audio: the next packet starts the stream
        packets, complete = gop.snapshot()
        if packets:
            self._become(stream)
            for packet in packets:
                self._send(packet, stream)
            if not complete:
                self.started = False  # show the cached picture, then wait for a fresh keyframe
                self._switch = True
        if not packets or not complete:
            if await stream.request_keyframe(now):
                self.keyframes_requested += 1

    def _become(self, stream: Stream) -> None:
        if stream is not self.current:
            previous = self.current
            self.current = stream
            self._switch = True
            if previous is not None:
                self.switches += 1
            if self.producer.simulcast and self._notify is not None:
                self._notify({"type": "quality_changed", "trackId": self.producer.id, "layer": stream.rid,
                              "quality": QUALITY_NAMES[min(stream.index, 2)], "width": stream.width,
                              "height": stream.height})

    def forward(self, packet: Packet, stream: Stream) -> None:
        if self.paused or not self.slot.bound:
            return
        if stream is not self.current:
            if stream is not self.target or not packet.keyframe:
                return  # another layer: switch only at a keyframe of the target
            self._become(stream)
            self.started = False
        if not self.started and self.producer.kind == "video" and not packet.keyframe:
            return  # a decoder can only start at a keyframe
        self._send(packet, stream)

    def _send(self, packet: Packet, stream: Stream) -> None:
        slot = self.slot
        header = packet.header
        switch = self._switch
        seq = slot.seq.rewrite(header.sequence_number, switch)
        if seq is None:
            return  # older than the switch point: its number is taken
        ts = slot.ts.rewrite(header.timestamp, packet.arrival, switch)
        self._switch = False
        self.started = True
        twcc = slot.twcc
        if twcc is None:
            out = _HEADER.pack(0x80, slot.payload_type | (0x80 if header.marker else 0), seq, ts, slot.ssrc)
            offset = 12
        else:
            wide = twcc.stamp(len(packet.payload) + 40, time.monotonic())
            out = _HEADER.pack(0x90, slot.payload_type | (0x80 if header.marker else 0), seq, ts, slot.ssrc)
            out += _TWCC_EXT.pack(0xBEDE, 1, twcc.ext_id << 4 | 1, wide, 0)
            offset = 20
        out += packet.payload
        if packet.vp8 is not None:
            picture_id, tl0 = slot.vp8.rewrite(packet.vp8, switch)
            if picture_id != packet.vp8.picture_id or tl0 != packet.vp8.tl0picidx:
                buf = bytearray(out)
                rewrite_vp8_descriptor_in_place(buf, offset, packet.vp8, picture_id, tl0)
                out = bytes(buf)
        slot.history[seq & (HISTORY - 1)] = (seq, header.sequence_number, ts, stream)
        slot.packets_sent += 1
        slot.octets_sent += len(packet.payload)
        self.sent_window.append((packet.arrival, len(out)))
        self._send_rtp(out)

    def sent_bitrate(self, now: float) -> int:
        window = self.sent_window
        while window and now - window[0][0] > 1.0:
            window.popleft()
        return sum(n for _, n in window) * 8

    # ---- feedback from the subscriber ------------------------------------------------------------------------

    async def on_nack(self, lost: list[int]) -> None:
        """Answer from the producer's cache; only what the cache lacks goes to the publisher.

        Retransmissions are bounded by what was sent: at most half as many as the slot's packets (plus a burst of
        `RTX_BURST`), so a subscriber cannot make the server resend its history over and over (each NACK names up
        to `rtcp.MAX_NACK_LOST` sequence numbers); what is over the bound is counted in `nacks_refused`.
        """
        upstream: dict[int, list[int]] = {}
        streams: dict[int, Stream] = {}
        slot = self.slot
        for out_seq in lost:
            entry = slot.history[out_seq & (HISTORY - 1)]
            if entry is None or entry[0] != out_seq:
                continue
            if self.retransmitted >= slot.packets_sent // 2 + RTX_BURST:
                self.nacks_refused += 1
                break
            stream = entry[3]
            packet = stream.cached(entry[1])
            if packet is None:
                upstream.setdefault(id(stream), []).append(entry[1])
                streams[id(stream)] = stream
                continue
            self._retransmit(packet, out_seq, entry[2])
        for key, seqs in upstream.items():
            self.nacks_forwarded += 1
            await streams[key].nack_upstream(seqs)

    def _retransmit(self, packet: Packet, out_seq: int, out_ts: int) -> None:
        slot = self.slot
        marker = 0x80 if packet.header.marker else 0
        payload = packet.payload
        if packet.vp8 is not None:
            picture_id, tl0 = slot.vp8.rewrite(packet.vp8)
            buf = bytearray(payload)
            rewrite_vp8_descriptor_in_place(buf, 0, packet.vp8, picture_id, tl0)
            payload = bytes(buf)
        if slot.rtx_ssrc is not None and slot.rtx_payload_type is not None:
            slot.rtx_seq = (slot.rtx_seq + 1) & 0xFFFF
            out = _HEADER.pack(0x80, slot.rtx_payload_type | marker, slot.rtx_seq, out_ts, slot.rtx_ssrc)
            out += struct.pack("!H", out_seq) + payload
        else:
            out = _HEADER.pack(0x80, slot.payload_type | marker, out_seq, out_ts, slot.ssrc) + payload
        self.retransmitted += 1
        self._send_rtp(out)

    async def on_keyframe_request(self, now: float) -> None:
        stream = self.current or self.target
        if stream is not None and await stream.request_keyframe(now):
            self.keyframes_requested += 1

    def on_report(self, block: rtcp.ReportBlock) -> None:
        self.fraction_lost = block.fraction_lost

    async def send_sender_report(self, wallclock: float) -> None:
        """The publisher's last SR translated: same NTP time, RTP time shifted into this slot's timeline."""
        stream = self.current
        report = stream.last_sr if stream is not None else None
        if report is None or not self.started:
            return
        rtp_ts = self.slot.ts.peek(report.rtp_timestamp)
        if rtp_ts is None:
            return
        slot = self.slot
        await self._send_rtcp(rtcp.build_sr(slot.ssrc, report.ntp, rtp_ts, slot.packets_sent, slot.octets_sent))

    def close(self) -> None:
        if self.slot.consumer is self:
            self.slot.consumer = None
        if self in self.producer.consumers:
            self.producer.consumers.remove(self)
