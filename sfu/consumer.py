"""Consumers and the out-slots they write to.

An `OutSlot` is one sendonly m-section toward a subscriber: its SSRC, payload types and the sequence, timestamp
and VP8 picture-id rewriters. It outlives the producers it carries, so a teacher who reconnects (a new producer)
continues on the same slot with continuous numbers, which SRTP and the browser's jitter buffer both need.
A `Consumer` attaches one producer to one slot and decides which packets may go: from a keyframe on, with the
cached group of pictures replayed first so a student who joins sees the teacher at once.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Awaitable, Callable

from sfu import rtcp
from sfu.producer import Packet, Producer
from sfu.rtp import SequenceRewriter, TimestampRewriter, Vp8PictureIdRewriter, rewrite_vp8_descriptor_in_place

_HEADER = struct.Struct("!BBHII")
HISTORY = 4096  # out-sequence -> source-sequence memory for answering NACKs (a power of two)

SendBytes = Callable[[bytes], Awaitable[bool]]


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
        self.history: list[tuple[int, int, int] | None] = [None] * HISTORY  # (out seq, source seq, out ts)
        self.consumer: Consumer | None = None
        self.offered: Consumer | None = None  # the consumer the last offer carried on this slot
        self.last_key: tuple[str, str] | None = None  # (uid, source) it last carried: reused for them first
        self.packets_sent = 0
        self.octets_sent = 0

    def bind(self, ssrc: int, payload_type: int, rtx_ssrc: int | None, rtx_payload_type: int | None) -> None:
        self.ssrc, self.payload_type = ssrc, payload_type
        self.rtx_ssrc, self.rtx_payload_type = rtx_ssrc, rtx_payload_type
        self.bound = True


class Consumer:
    def __init__(self, producer: Producer, slot: OutSlot, send_rtp: SendBytes, send_rtcp: SendBytes) -> None:
        self.producer = producer
        self.slot = slot
        self._send_rtp = send_rtp
        self._send_rtcp = send_rtcp
        self.started = False  # the first packet went out: later packets continue the stream
        self.paused = False  # the subscriber asked for no video ("off"), or the slot is not negotiated yet
        self._switch = True  # the next packet sent starts a new source on the slot
        self.retransmitted = 0
        self.nacks_forwarded = 0
        self.keyframes_requested = 0
        self.fraction_lost = 0
        slot.consumer = self
        slot.last_key = (producer.uid, producer.source)

    # ---- forwarding ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Called once the slot is negotiated: replay the cached pictures, or ask for a keyframe."""
        if not self.slot.bound or self.paused or self.started:
            return
        gop = self.producer.gop
        if gop is None:
            return  # audio: the next packet starts the stream
        packets, complete = gop.snapshot()
        if packets:
            for packet in packets:
                await self._send(packet)
            if not complete:
                self.started = False  # show the cached picture, then wait for a fresh keyframe
                self._switch = True
        if not packets or not complete:
            if await self.producer.request_keyframe(time.monotonic()):
                self.keyframes_requested += 1

    async def forward(self, packet: Packet) -> None:
        if self.paused or not self.slot.bound:
            return
        if not self.started and self.producer.kind == "video" and not packet.keyframe:
            return  # a decoder can only start at a keyframe
        await self._send(packet)

    async def _send(self, packet: Packet) -> None:
        slot = self.slot
        header = packet.header
        switch = self._switch
        seq = slot.seq.rewrite(header.sequence_number, switch)
        if seq is None:
            return  # older than the switch point: its number is taken
        ts = slot.ts.rewrite(header.timestamp, packet.arrival, switch)
        self._switch = False
        self.started = True
        out = _HEADER.pack(0x80, slot.payload_type | (0x80 if header.marker else 0), seq, ts, slot.ssrc)
        out += packet.payload
        if packet.vp8 is not None:
            picture_id, tl0 = slot.vp8.rewrite(packet.vp8, switch)
            if picture_id != packet.vp8.picture_id or tl0 != packet.vp8.tl0picidx:
                buf = bytearray(out)
                rewrite_vp8_descriptor_in_place(buf, 12, packet.vp8, picture_id, tl0)
                out = bytes(buf)
        slot.history[seq & (HISTORY - 1)] = (seq, header.sequence_number, ts)
        slot.packets_sent += 1
        slot.octets_sent += len(packet.payload)
        await self._send_rtp(out)

    # ---- feedback from the subscriber ------------------------------------------------------------------------

    async def on_nack(self, lost: list[int]) -> None:
        """Answer from the producer's cache; only what the cache lacks goes to the publisher."""
        upstream: list[int] = []
        slot = self.slot
        for out_seq in lost:
            entry = slot.history[out_seq & (HISTORY - 1)]
            if entry is None or entry[0] != out_seq:
                continue
            packet = self.producer.cached(entry[1])
            if packet is None:
                upstream.append(entry[1])
                continue
            await self._retransmit(packet, out_seq, entry[2])
        if upstream:
            self.nacks_forwarded += 1
            await self.producer.nack_upstream(upstream)

    async def _retransmit(self, packet: Packet, out_seq: int, out_ts: int) -> None:
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
        await self._send_rtp(out)

    async def on_keyframe_request(self, now: float) -> None:
        if await self.producer.request_keyframe(now):
            self.keyframes_requested += 1

    def on_report(self, block: rtcp.ReportBlock) -> None:
        self.fraction_lost = block.fraction_lost

    async def send_sender_report(self, wallclock: float) -> None:
        """The publisher's last SR translated: same NTP time, RTP time shifted into this slot's timeline."""
        report = self.producer.last_sr
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
