"""RTCP on bytes: parse compound packets from either leg, build the few the SFU sends.

The SFU terminates RTCP per leg (aiortc's own RTCP machinery never runs for a `Peer`): publishers get receiver
reports, NACKs and PLIs from us; subscribers get sender reports from us. Parsing is lenient where aiortc is strict:
an unknown packet type is skipped and a malformed sub-packet ends the walk but keeps what was read before it,
so one odd packet from a browser never hides the PLI next to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
FMT_NACK, FMT_TWCC = 1, 15
FMT_PLI, FMT_FIR, FMT_AFB = 1, 4, 15
MAX_NACK_LOST = 1024  # sequence numbers read from one NACK: more than a subscriber's real loss between two NACKs

_HDR = struct.Struct("!BBH")
_SR_BODY = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IIIIII")
_FB = struct.Struct("!II")


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_timestamp: int
    packets: int
    octets: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class Nack:
    sender_ssrc: int
    media_ssrc: int
    lost: list[int]


@dataclass(slots=True)
class Pli:
    sender_ssrc: int
    media_ssrc: int


@dataclass(slots=True)
class Fir:
    sender_ssrc: int
    entries: list[tuple[int, int]]  # (ssrc, command sequence number)


@dataclass(slots=True)
class Remb:
    sender_ssrc: int
    bitrate: int
    ssrcs: list[int]


@dataclass(slots=True)
class TransportCC:
    sender_ssrc: int
    media_ssrc: int
    fci: bytes  # decoded by the bandwidth estimator


@dataclass(slots=True)
class Bye:
    ssrcs: list[int]


RtcpPacket = SenderReport | ReceiverReport | Nack | Pli | Fir | Remb | TransportCC | Bye


def _blocks(data: bytes, offset: int, count: int, end: int) -> list[ReportBlock]:
    out = []
    for _ in range(count):
        if offset + 24 > end:
            raise ValueError("report block overruns packet")
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        out.append(ReportBlock(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr))
        offset += 24
    return out


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Every packet of interest in a compound; never raises on garbage."""
    out: list[RtcpPacket] = []
    pos, total = 0, len(data)
    while pos + 4 <= total:
        first, pt, length = _HDR.unpack_from(data, pos)
        end = pos + 4 + length * 4
        if first >> 6 != 2 or end > total:
            break
        count = first & 0x1F
        try:
            packet = _parse_one(data, pos, end, pt, count)
        except (ValueError, struct.error):
            break
        if packet is not None:
            out.append(packet)
        pos = end
    return out


def _parse_one(data: bytes, pos: int, end: int, pt: int, count: int) -> RtcpPacket | None:
    body = pos + 4
    if pt == SR:
        if body + 24 > end:
            raise ValueError("short SR")
        ssrc, ntp, rtp_ts, packets, octets = _SR_BODY.unpack_from(data, body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(data, body + 24, count, end))
    if pt == RR:
        if body + 4 > end:
            raise ValueError("short RR")
        return ReceiverReport(struct.unpack_from("!I", data, body)[0], _blocks(data, body + 4, count, end))
    if pt in (RTPFB, PSFB):
        if body + 8 > end:
            raise ValueError("short feedback")
        sender, media = _FB.unpack_from(data, body)
        fci = body + 8
        if pt == RTPFB and count == FMT_NACK:
            lost: dict[int, None] = {}  # ordered and without repeats: a sequence asked for twice is sent once
            for off in range(fci, end - 3, 4):
                pid, blp = struct.unpack_from("!HH", data, off)
                lost[pid] = None
                for i in range(16):
                    if blp >> i & 1:
                        lost[(pid + i + 1) & 0xFFFF] = None
                if len(lost) >= MAX_NACK_LOST:
                    break
            return Nack(sender, media, list(lost)[:MAX_NACK_LOST])
        if pt == RTPFB and count == FMT_TWCC:
            return TransportCC(sender, media, bytes(data[fci:end]))
        if pt == PSFB and count == FMT_PLI:
            return Pli(sender, media)
        if pt == PSFB and count == FMT_FIR:
            entries = [struct.unpack_from("!IB", data, off) for off in range(fci, end - 7, 8)]
            return Fir(sender, [(ssrc, seq) for ssrc, seq in entries])
        if pt == PSFB and count == FMT_AFB and data[fci : fci + 4] == b"REMB" and fci + 8 <= end:
            num, b1, b2, b3 = struct.unpack_from("!BBBB", data, fci + 4)
            exp, mantissa = b1 >> 2, ((b1 & 3) << 16) | (b2 << 8) | b3
            ssrcs = [struct.unpack_from("!I", data, fci + 8 + 4 * i)[0] for i in range(num) if fci + 12 + 4 * i <= end]
            return Remb(sender, mantissa << exp, ssrcs)
        return None
    if pt == BYE:
        return Bye([struct.unpack_from("!I", data, body + 4 * i)[0] for i in range(count) if body + 4 * i + 4 <= end])
    return None  # SDES, APP, XR and anything newer: not needed by the SFU


# ---- builders ------------------------------------------------------------------------------------------------


def _header(count: int, pt: int, body_len: int) -> bytes:
    return _HDR.pack(0x80 | count, pt, body_len // 4)


def _pack_blocks(blocks: list[ReportBlock]) -> bytes:
    return b"".join(
        _BLOCK.pack(b.ssrc, (b.fraction_lost & 0xFF) << 24 | (b.cumulative_lost & 0xFFFFFF), b.highest_seq,
                    b.jitter, b.lsr, b.dlsr)
        for b in blocks
    )


def build_sr(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int,
             blocks: list[ReportBlock] | None = None) -> bytes:
    body = _SR_BODY.pack(ssrc, ntp, rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    body += _pack_blocks(blocks or [])
    return _header(len(blocks or []), SR, len(body)) + body


def build_rr(ssrc: int, blocks: list[ReportBlock]) -> bytes:
    body = struct.pack("!I", ssrc) + _pack_blocks(blocks)
    return _header(len(blocks), RR, len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, SDES, len(chunk)) + chunk


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """Packs lost sequence numbers into PID/BLP pairs (RFC 4585 6.2.1), wrap-aware."""
    pairs: list[tuple[int, int]] = []
    for seq in sorted(set(seqs), key=lambda s: (s - seqs[0]) & 0xFFFF):
        if pairs:
            pid, blp = pairs[-1]
            delta = (seq - pid) & 0xFFFF
            if 1 <= delta <= 16:
                pairs[-1] = (pid, blp | 1 << (delta - 1))
                continue
        pairs.append((seq, 0))
    fci = b"".join(struct.pack("!HH", pid, blp) for pid, blp in pairs)
    return _header(FMT_NACK, RTPFB, 8 + len(fci)) + _FB.pack(sender_ssrc, media_ssrc) + fci


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _header(FMT_PLI, PSFB, 8) + _FB.pack(sender_ssrc, media_ssrc)


def build_fir(sender_ssrc: int, media_ssrc: int, seq: int) -> bytes:
    fci = struct.pack("!IB3x", media_ssrc, seq & 0xFF)
    return _header(FMT_FIR, PSFB, 8 + len(fci)) + _FB.pack(sender_ssrc, 0) + fci


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    exp = 0
    while bitrate >> exp > 0x3FFFF:
        exp += 1
    mantissa = bitrate >> exp
    fci = b"REMB" + struct.pack("!BBBB", len(ssrcs), exp << 2 | mantissa >> 16, mantissa >> 8 & 0xFF,
                                mantissa & 0xFF)
    fci += b"".join(struct.pack("!I", s) for s in ssrcs)
    return _header(FMT_AFB, PSFB, 8 + len(fci)) + _FB.pack(sender_ssrc, 0) + fci


def ntp_now(wallclock: float) -> int:
    """64-bit NTP time for a Unix wallclock in seconds."""
    seconds = wallclock + 2_208_988_800
    return (int(seconds) << 32) | int((seconds % 1) * (1 << 32))


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of a report block."""
    return (ntp >> 16) & 0xFFFFFFFF
