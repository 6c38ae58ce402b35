"""RTCP parse/build, cross-checked against aiortc's own RTCP classes as an independent oracle."""

from __future__ import annotations

import os

from aiortc import rtp as artp

from sfu import rtcp


def test_sender_report_round_trip_with_aiortc() -> None:
    blocks = [rtcp.ReportBlock(ssrc=0xAABBCCDD, fraction_lost=12, cumulative_lost=-3, highest_seq=70000,
                               jitter=55, lsr=0x12345678, dlsr=655)]
    data = rtcp.build_sr(0x11223344, 0xE1234567_89ABCDEF, 3_000_000_000, 1000, 1_200_000, blocks)
    [theirs] = artp.RtcpPacket.parse(data)
    assert isinstance(theirs, artp.RtcpSrPacket)
    assert theirs.ssrc == 0x11223344 and theirs.sender_info.ntp_timestamp == 0xE1234567_89ABCDEF
    assert theirs.sender_info.rtp_timestamp == 3_000_000_000 and theirs.sender_info.packet_count == 1000
    assert theirs.reports[0].packets_lost == -3 and theirs.reports[0].highest_sequence == 70000
    [ours] = rtcp.parse_rtcp(data)
    assert isinstance(ours, rtcp.SenderReport) and ours.reports == blocks


def test_nack_packs_runs_across_wraparound() -> None:
    lost = [65534, 65535, 0, 5, 17, 40]
    data = rtcp.build_nack(1, 2, lost)
    [theirs] = artp.RtcpPacket.parse(data)
    assert sorted(s & 0xFFFF for s in theirs.lost) == sorted(lost)  # aiortc does not wrap PID+n
    [ours] = rtcp.parse_rtcp(data)
    assert isinstance(ours, rtcp.Nack) and sorted(ours.lost) == sorted(lost)
    assert len(data) == 12 + 4 * 3  # 65534 covers 65535, 0 and 5; 17 and 40 need a pair each


def test_parse_what_aiortc_sends() -> None:
    rr = artp.RtcpRrPacket(ssrc=9, reports=[artp.RtcpReceiverInfo(
        ssrc=10, fraction_lost=1, packets_lost=2, highest_sequence=3, jitter=4, lsr=5, dlsr=6)])
    pli = artp.RtcpPsfbPacket(fmt=1, ssrc=9, media_ssrc=10)
    remb = artp.RtcpPsfbPacket(fmt=15, ssrc=9, media_ssrc=0, fci=artp.pack_remb_fci(1_500_000, [10, 11]))
    sdes = artp.RtcpSdesPacket(chunks=[artp.RtcpSourceInfo(ssrc=9, items=[(1, b"cname")])])
    bye = artp.RtcpByePacket(sources=[10])
    compound = bytes(rr) + bytes(sdes) + bytes(pli) + bytes(remb) + bytes(bye)
    parsed = rtcp.parse_rtcp(compound)
    assert [type(p).__name__ for p in parsed] == ["ReceiverReport", "Pli", "Remb", "Bye"]
    assert parsed[0].reports[0].ssrc == 10  # type: ignore[union-attr]
    assert parsed[2].bitrate == 1_500_000 and parsed[2].ssrcs == [10, 11]  # type: ignore[union-attr]


def test_remb_and_pli_and_fir_builders_match_aiortc() -> None:
    [remb] = artp.RtcpPacket.parse(rtcp.build_remb(5, 2_345_678, [7]))
    assert artp.unpack_remb_fci(remb.fci) == (2_345_678 >> 4 << 4, [7])  # 18-bit mantissa, exponent 4
    [pli] = artp.RtcpPacket.parse(rtcp.build_pli(5, 7))
    assert (pli.fmt, pli.ssrc, pli.media_ssrc) == (1, 5, 7)
    [fir] = rtcp.parse_rtcp(rtcp.build_fir(5, 7, 3))
    assert isinstance(fir, rtcp.Fir) and fir.entries == [(7, 3)]


def test_a_bad_packet_keeps_what_came_before_it() -> None:
    good = rtcp.build_pli(1, 2)
    bad = bytes([0x81, 201, 0, 40]) + b"\x00" * 8  # claims 160 bytes, has 8
    assert [type(p) for p in rtcp.parse_rtcp(good + bad)] == [rtcp.Pli]


def test_garbage_never_raises() -> None:
    rng = os.urandom
    for n in range(2000):
        data = rng(n % 97)
        rtcp.parse_rtcp(data)
        rtcp.parse_rtcp(b"\x81\xc9" + data)
        rtcp.parse_rtcp(b"\x8f\xce\x00\x04" + data)


def test_ntp_helpers() -> None:
    ntp = rtcp.ntp_now(1_700_000_000.5)
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800 and ntp & 0xFFFFFFFF == 1 << 31
    assert rtcp.ntp_middle(ntp) == ((ntp >> 16) & 0xFFFFFFFF)
