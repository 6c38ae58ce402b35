"""RTP packets back into media frames: H.264 access units (Annex B), VP8 frames, Opus packets. Loss-tolerant.

A short reorder buffer puts packets back in sequence (the SFU's NACKs bring retransmissions a few tens of ms
late); a gap that outlives the buffer is loss. A frame with a hole is never emitted: video then waits for the next
keyframe (the file stays decodable, the picture holds), audio just misses that packet.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.rtp import parse_rtp, parse_vp8_descriptor

START_CODE = b"\x00\x00\x00\x01"
REORDER_PACKETS = 64


@dataclass(slots=True)
class RtpPacket:
    seq: int  # extended (never wraps)
    timestamp: int
    marker: bool
    payload: bytes
    arrival: float


@dataclass(slots=True)
class Frame:
    timestamp: int  # RTP timestamp of the frame
    data: bytes
    keyframe: bool
    arrival: float


class Reorder:
    """Releases packets in sequence order; a gap is given up on after REORDER_PACKETS later packets."""

    def __init__(self, window: int = REORDER_PACKETS) -> None:
        self.window = window
        self.pending: dict[int, RtpPacket] = {}
        self.next_seq: int | None = None
        self.highest = -1
        self.lost = 0

    def _extend(self, seq16: int) -> int:
        if self.highest < 0:
            return seq16 + (1 << 16)  # room below for late packets
        base = self.highest & ~0xFFFF
        candidates = (base - 0x10000 + seq16, base + seq16, base + 0x10000 + seq16)
        return min(candidates, key=lambda c: abs(c - self.highest))

    def push(self, data: bytes, arrival: float) -> list[tuple[RtpPacket, bool]]:
        """Returns [(packet, gap_before)] now in order; gap_before says packets were lost just before it."""
        try:
            h = parse_rtp(data)
        except ValueError:
            return []
        seq = self._extend(h.sequence_number)
        if self.next_seq is None:
            self.next_seq = seq
        if seq < self.next_seq or seq in self.pending:
            return []  # too late, or a duplicate
        self.highest = max(self.highest, seq)
        self.pending[seq] = RtpPacket(seq, h.timestamp, h.marker, bytes(data[h.payload_offset:h.payload_end]),
                                      arrival)
        out: list[tuple[RtpPacket, bool]] = []
        gap = False
        while True:
            packet = self.pending.pop(self.next_seq, None)
            if packet is not None:
                out.append((packet, gap))
                gap = False
                self.next_seq += 1
            elif self.highest - self.next_seq >= self.window and self.pending:
                skip_to = min(self.pending)
                self.lost += skip_to - self.next_seq
                self.next_seq = skip_to
                gap = True
            else:
                return out


# The most one picture may hold while it is put together: a 4K keyframe is a few megabytes. Past it the picture is
# dropped (and a keyframe asked for): packets that never end a picture (one timestamp, no marker) kept everything.
MAX_FRAME_BYTES = 8 * 1024 * 1024


class H264Depacketizer:
    """RFC 6184 single NAL, STAP-A and FU-A into Annex B access units."""

    def __init__(self) -> None:
        self.nals: list[bytes] = []
        self.fu: bytearray | None = None
        self.held = 0  # bytes of the picture put together so far
        self.timestamp: int | None = None
        self.arrival = 0.0
        self.broken = False
        self.need_keyframe = True
        self.dropped = 0  # frames not emitted: incomplete, or waiting for a keyframe

    def push(self, p: RtpPacket, gap: bool) -> list[Frame]:
        out: list[Frame] = []
        if self.timestamp is not None and p.timestamp != self.timestamp:
            out += self._finish()
        if gap:
            self.broken = True
        self.timestamp, self.arrival = p.timestamp, p.arrival
        payload = p.payload
        if not payload:
            return out
        self.held += len(payload)
        if self.held > MAX_FRAME_BYTES:
            self.nals, self.fu, self.held, self.broken = [], None, 0, True
            return out
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self.nals.append(payload)
        elif kind == 24:  # STAP-A
            i = 1
            while i + 2 <= len(payload):
                size = int.from_bytes(payload[i:i + 2], "big")
                i += 2
                if size == 0 or i + size > len(payload):
                    self.broken = True
                    break
                self.nals.append(payload[i:i + size])
                i += size
        elif kind == 28 and len(payload) > 2:  # FU-A
            start, end = payload[1] & 0x80, payload[1] & 0x40
            if start:
                self.fu = bytearray([(payload[0] & 0xE0) | (payload[1] & 0x1F)]) + payload[2:]
            elif self.fu is not None:
                self.fu += payload[2:]
            else:
                self.broken = True
            if end and self.fu is not None:
                self.nals.append(bytes(self.fu))
                self.fu = None
        if p.marker:
            out += self._finish()
        return out

    def _finish(self) -> list[Frame]:
        nals, broken = self.nals, self.broken or self.fu is not None
        self.nals, self.fu, self.broken, self.held = [], None, False, 0
        ts, self.timestamp = self.timestamp, None
        if not nals or ts is None:
            return []
        keyframe = any(n[0] & 0x1F == 5 for n in nals) and any(n[0] & 0x1F == 7 for n in nals)
        if broken:
            self.need_keyframe = True
            self.dropped += 1
            return []
        if self.need_keyframe and not keyframe:
            self.dropped += 1
            return []
        self.need_keyframe = False
        return [Frame(ts, b"".join(START_CODE + n for n in nals), keyframe, self.arrival)]


class Vp8Depacketizer:
    """RFC 7741: concatenates the payloads of one picture (descriptor removed)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.held = 0  # bytes of the picture put together so far
        self.timestamp: int | None = None
        self.arrival = 0.0
        self.broken = False
        self.started = False
        self.need_keyframe = True

    def push(self, p: RtpPacket, gap: bool) -> list[Frame]:
        out: list[Frame] = []
        if self.timestamp is not None and p.timestamp != self.timestamp:
            out += self._finish()
        if gap:
            self.broken = True
        try:
            d = parse_vp8_descriptor(p.payload)
        except ValueError:
            self.broken = True
            return out
        if d.start_of_partition and d.partition_id == 0:
            if self.parts:
                out += self._finish()
            self.started = True
        self.timestamp, self.arrival = p.timestamp, p.arrival
        if not self.started:
            self.broken = True
        self.parts.append(p.payload[d.size:])
        self.held += len(p.payload)
        if self.held > MAX_FRAME_BYTES:
            self.parts, self.held, self.broken = [], 0, True
        if p.marker:
            out += self._finish()
        return out

    def _finish(self) -> list[Frame]:
        parts, broken = self.parts, self.broken or not self.started
        self.parts, self.broken, self.started, self.held = [], False, False, 0
        ts, self.timestamp = self.timestamp, None
        data = b"".join(parts)
        if not data or ts is None:
            return []
        keyframe = not (data[0] & 0x01)
        if broken:
            self.need_keyframe = True
            return []
        if self.need_keyframe and not keyframe:
            return []
        self.need_keyframe = False
        return [Frame(ts, data, keyframe, self.arrival)]


class OpusDepacketizer:
    """One RTP packet is one Opus packet (RFC 7587)."""

    def push(self, p: RtpPacket, gap: bool) -> list[Frame]:
        return [Frame(p.timestamp, p.payload, True, p.arrival)] if p.payload else []


def depacketizer(mime_type: str) -> H264Depacketizer | Vp8Depacketizer | OpusDepacketizer:
    mime = mime_type.lower()
    if mime == "video/h264":
        return H264Depacketizer()
    if mime == "video/vp8":
        return Vp8Depacketizer()
    if mime == "audio/opus":
        return OpusDepacketizer()
    raise ValueError(f"cannot record {mime_type}")
