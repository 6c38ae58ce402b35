"""A Producer is one track a publisher sends (camera, microphone or screen share).

Every incoming packet is parsed once here, cached for retransmission, checked for a keyframe, and handed to the
producer's consumers, which write their own copies. The producer also owns the publisher-facing RTCP: receiver
reports, NACKs for what it lost, and keyframe requests (throttled, one per 500 ms).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sfu import rtcp
from sfu.codecs import H264, VP8, CodecInfo
from sfu.keyframes import GopCache, KeyframeThrottle
from sfu.reception import NackTracker, ReceptionStats
from sfu.rtp import RtpHeader, Vp8Descriptor, h264_is_keyframe, h264_starts_frame, parse_rtp, parse_vp8_descriptor

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.taps import Tap

log = logging.getLogger("classcast.sfu.producer")

CACHE_SIZE = 2048  # packets kept for NACKs: at least 1024 as required, a power of two for cheap indexing
SOURCES = {"camera": "video", "microphone": "audio", "screen": "video"}

SendRtcp = Callable[[bytes], Awaitable[bool]]


class Packet:
    """One received packet, parsed once and shared by every consumer."""

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


class Producer:
    def __init__(
        self, track_id: str, owner: str, uid: str, source: str, mid: str, codec: CodecInfo, ssrc: int | None,
        rtx_ssrc: int | None, rtx_payload_type: int | None, local_ssrc: int, send_rtcp: SendRtcp,
    ) -> None:
        self.id = track_id
        self.owner = owner  # the publishing participant's key
        self.uid = uid
        self.source = source
        self.kind = SOURCES[source]
        self.mid = mid
        self.codec = codec
        self.ssrc = ssrc  # learned from the first packet when the SDP did not announce it
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.local_ssrc = local_ssrc  # our SSRC on that m-section: the sender SSRC of our RTCP
        self._send_rtcp = send_rtcp
        self.consumers: list[Consumer] = []
        self.taps: list[Tap] = []  # the room's taps (shared list, usually empty)
        self.cache: list[Packet | None] = [None] * CACHE_SIZE
        self.gop = GopCache() if self.kind == "video" else None
        self.stats = ReceptionStats(codec.clock_rate)
        self.nacks = NackTracker()
        self.keyframes = KeyframeThrottle()
        self.last_sr: rtcp.SenderReport | None = None
        self.muted = False  # the publisher muted it
        self.blocked = False  # a moderator muted the publisher: nothing is forwarded
        self.closed = False
        self.packets_in = 0
        self.bytes_in = 0
        self.rtx_in = 0
        self.nacks_sent = 0
        self.wrong_codec = 0

    def info(self) -> dict[str, object]:
        """How signaling describes the track to participants."""
        return {"trackId": self.id, "uid": self.uid, "source": self.source, "kind": self.kind,
                "muted": self.muted or self.blocked, "codec": self.codec.mime_type}

    # ---- the per-packet path -----------------------------------------------------------------------------

    async def on_rtp(self, data: bytes, header: RtpHeader, arrival: float) -> None:
        if header.payload_type != self.codec.payload_type:
            self.wrong_codec += 1  # another codec of the answer; consumers were negotiated for this one
            return
        if header.payload_end <= header.payload_offset:
            return  # padding only (bandwidth probing): nothing to forward
        ext = self.stats.update(header.sequence_number, header.timestamp, arrival)
        self.nacks.on_packet(ext, arrival)
        self.packets_in += 1
        self.bytes_in += len(data)
        vp8 = None
        keyframe = False
        mime = self.codec.mime_type
        if mime == VP8:
            try:
                vp8 = parse_vp8_descriptor(data, header.payload_offset, header.payload_end)
            except ValueError:
                return
            keyframe = vp8.is_keyframe
        elif mime == H264:
            keyframe = h264_is_keyframe(data, header.payload_offset, header.payload_end) and h264_starts_frame(
                data, header.payload_offset, header.payload_end)
        packet = Packet(data, header, arrival, vp8, keyframe)
        self.cache[header.sequence_number & (CACHE_SIZE - 1)] = packet
        if self.gop is not None:
            self.gop.add(packet)
        for tap in self.taps:
            tap.rtp(self.id, data, arrival)
        if self.blocked:
            return
        for consumer in self.consumers:
            await consumer.forward(packet)

    async def on_rtx(self, data: bytes, header: RtpHeader, arrival: float) -> None:
        """RFC 4588: the original sequence number leads the payload; rebuild the original packet."""
        if header.payload_end - header.payload_offset < 2 or self.ssrc is None:
            return  # padding-only RTX: bandwidth probing
        self.rtx_in += 1
        osn = struct.unpack_from("!H", data, header.payload_offset)[0]
        original = bytearray(data[: header.payload_offset])
        original[1] = (original[1] & 0x80) | self.codec.payload_type
        struct.pack_into("!HII", original, 2, osn, header.timestamp, self.ssrc)
        original += data[header.payload_offset + 2 : header.payload_end]
        original[0] &= 0xDF  # padding was not copied
        rebuilt = bytes(original)
        cached = self.cache[osn & (CACHE_SIZE - 1)]
        if cached is not None and cached.sequence_number == osn:
            return  # already have it
        await self.on_rtp(rebuilt, parse_rtp(rebuilt), arrival)

    def cached(self, seq: int) -> Packet | None:
        packet = self.cache[seq & (CACHE_SIZE - 1)]
        return packet if packet is not None and packet.sequence_number == seq else None

    # ---- RTCP toward the publisher -----------------------------------------------------------------------

    async def request_keyframe(self, now: float) -> bool:
        if self.kind != "video" or self.ssrc is None or self.closed or not self.keyframes.allow(now):
            return False
        return await self._send_rtcp(rtcp.build_pli(self.local_ssrc, self.ssrc))

    async def nack_upstream(self, seqs: list[int]) -> None:
        if seqs and self.ssrc is not None:
            self.nacks_sent += 1
            await self._send_rtcp(rtcp.build_nack(self.local_ssrc, self.ssrc, seqs))

    def on_sender_report(self, report: rtcp.SenderReport, arrival: float) -> None:
        self.last_sr = report
        self.stats.on_sender_report(report.ntp, arrival)
        for tap in self.taps:
            tap.sender_report(self.id, report.ntp, report.rtp_timestamp, arrival)

    async def tick(self, now: float) -> None:
        """Frequent: ask again for missing packets."""
        due = self.nacks.due(now)
        if due:
            await self.nack_upstream(due)

    def report_block(self, now: float) -> rtcp.ReportBlock | None:
        return self.stats.report_block(self.ssrc, now) if self.ssrc is not None and self.packets_in else None

    def close(self) -> None:
        self.closed = True
        self.cache = [None] * CACHE_SIZE
        if self.gop is not None:
            self.gop.clear()
