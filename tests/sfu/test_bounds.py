"""Every count, length and table the network can drive is checked against what we hold (issue 13).

Each test is the regression test of one defect a probe found, or of a sibling of it: the input is what a hostile
peer can send, the assertion is what bounds the work or the memory it causes.
"""

from __future__ import annotations

import base64
import struct

import pytest

from sfu import bwe, rtcp
from sfu.bwe import ARRIVAL_WINDOW, MAX_SENT, TwccFeedback, TwccSender, parse_twcc
from sfu.engine.reference import GOP_MAX
from sfu.reception import NackTracker
from tests.sfu.test_keyframes import Wire, _consumer, _feed, _producer, capture  # noqa: F401  (fixture)


def _feedback_fci(base: int, count: int, chunks: bytes, deltas: bytes = b"", reference: int = 0) -> bytes:
    return struct.pack("!HHI", base, count, reference << 8) + chunks + deltas


def test_twcc_round_trip_reports_each_arrival() -> None:
    record = TwccFeedback()
    arrivals = {100: 10.0, 101: 10.004, 103: 10.020, 104: 9.990}  # 102 lost, 104 late (negative delta)
    for seq, at in arrivals.items():
        record.record(seq, at)
    packet = record.build(1, 2)
    assert packet is not None
    [parsed] = rtcp.parse_rtcp(packet)
    assert isinstance(parsed, rtcp.TransportCC)
    statuses = dict(parse_twcc(parsed.fci))
    assert set(statuses) == {100, 101, 102, 103, 104} and statuses[102] is None
    for seq, at in arrivals.items():
        assert abs(statuses[seq] - at * 1e6) <= bwe.DELTA_UNIT_US, seq
    assert record.build(1, 2) is None  # everything was reported once


def test_a_36_byte_feedback_declaring_65535_statuses_is_refused_unread() -> None:
    """Defect 1: run-length chunks let 36 bytes declare 65,535 statuses; each used to be expanded and applied."""
    run_of_lost = struct.pack("!H", 0x1FFF)  # run length chunk: 8191 x "not received"
    fci = _feedback_fci(0, 0xFFFF, run_of_lost * 8)
    assert len(fci) + 12 == 36
    with pytest.raises(ValueError, match="declares 65535 statuses"):
        parse_twcc(fci)
    sender = TwccSender(ext_id=3)
    for _ in range(100):
        sender.stamp(1000, 0.0)
    assert sender.on_feedback(fci) is None
    assert sender.refused == 1 and len(sender.sent) == 100  # nothing was applied


def test_feedback_may_report_only_what_we_sent() -> None:
    sender = TwccSender(ext_id=3)
    for _ in range(10):
        sender.stamp(1000, 0.0)
    lost_run = struct.pack("!H", 0x0000 | 100)  # run of 100 "not received"
    assert sender.on_feedback(_feedback_fci(0, 100, lost_run)) is None
    assert sender.refused == 1 and len(sender.sent) == 10  # 100 statuses for 10 packets sent: refused
    assert sender.on_feedback(_feedback_fci(5000, 5, lost_run)) is None  # a base we never reached
    assert sender.refused == 2
    five_lost = struct.pack("!H", 5)
    assert sender.on_feedback(_feedback_fci(0, 5, five_lost)) is None  # read: fewer than 50 to judge yet
    assert sender.refused == 2 and sender.lost == 5 and set(sender.sent) == {5, 6, 7, 8, 9}


def test_feedback_whose_deltas_overrun_the_packet_is_refused() -> None:
    sender = TwccSender(ext_id=3)
    for _ in range(10):
        sender.stamp(1000, 0.0)
    received_run = struct.pack("!H", 0x2000 | 10)  # 10 x "received, small delta": needs 10 delta bytes
    assert sender.on_feedback(_feedback_fci(0, 10, received_run, deltas=b"\x01" * 3)) is None
    assert sender.refused == 1 and sender.reported == 0
    reserved = struct.pack("!H", 0x6000 | 10)  # symbol 3 is reserved
    assert sender.on_feedback(_feedback_fci(0, 10, reserved, deltas=b"\x01" * 20)) is None
    assert sender.refused == 2


def test_feedback_reading_is_budgeted_by_packets_sent() -> None:
    """Replaying one valid feedback over and over costs at most two statuses read per packet sent."""
    sender = TwccSender(ext_id=3)
    for _ in range(1000):
        sender.stamp(1000, 0.0)
    fci = _feedback_fci(0, 1000, struct.pack("!H", 1000))  # 1000 x "not received"
    read = 0
    for _ in range(50):
        before = sender.refused
        sender.on_feedback(fci)
        read += 1000 if sender.refused == before else 0
    assert read <= 2 * 1000 + TwccSender.BUDGET_SLACK
    assert sender.refused >= 50 - (2 * 1000 + TwccSender.BUDGET_SLACK) // 1000


def test_sent_record_is_bounded_without_feedback() -> None:
    sender = TwccSender(ext_id=3)
    for _ in range(3 * MAX_SENT):
        sender.stamp(1000, 0.0)
    assert len(sender.sent) <= MAX_SENT


def test_arrival_record_is_bounded_when_sequence_numbers_jump() -> None:
    """Defect 2: a publisher whose transport-wide sequence numbers jump made the arrival record grow without
    bound. The record is now a fixed ring; what the jump skips is counted, and feedback still comes out."""
    record = TwccFeedback()
    seq = 0
    for i in range(20_000):
        seq = (seq + 30_001) & 0xFFFF if i % 2 else (seq + 1) & 0xFFFF
        record.record(seq, i / 1000)
        if i % 50 == 0:
            packet = record.build(1, 2)
            if packet is not None:
                [parsed] = rtcp.parse_rtcp(packet)
                assert len(parse_twcc(parsed.fci)) <= bwe.MAX_STATUSES
    assert len(record._ring) == ARRIVAL_WINDOW
    assert record.pending <= ARRIVAL_WINDOW
    assert record.highest is not None and record.next_base is not None
    assert record.highest - record.next_base < ARRIVAL_WINDOW
    assert record.skipped > 0


def test_nack_names_each_sequence_once_and_at_most_the_bound() -> None:
    fci = struct.pack("!HH", 100, 0xFFFF) * 300  # the same 17 sequence numbers 300 times
    packet = struct.pack("!BBH", 0x80 | rtcp.FMT_NACK, rtcp.RTPFB, 2 + len(fci) // 4) + struct.pack("!II", 1, 2) + fci
    [nack] = rtcp.parse_rtcp(packet)
    assert isinstance(nack, rtcp.Nack) and sorted(nack.lost) == list(range(100, 117))
    spread = b"".join(struct.pack("!HH", pid, 0xFFFF) for pid in range(0, 65535, 17))  # 3855 entries x 17
    packet = struct.pack("!BBH", 0x80 | rtcp.FMT_NACK, rtcp.RTPFB, 2 + len(spread) // 4)
    packet += struct.pack("!II", 1, 2) + spread
    [nack] = rtcp.parse_rtcp(packet)
    assert len(nack.lost) == rtcp.MAX_NACK_LOST and len(set(nack.lost)) == len(nack.lost)


def test_rtcp_counts_are_checked_against_the_packet_length() -> None:
    # An RR claiming 31 report blocks in a packet that holds one: nothing of it is believed.
    rr = rtcp.build_rr(7, [rtcp.ReportBlock(1, 0, 0, 0, 0, 0, 0)])
    lying = bytes([0x80 | 31]) + rr[1:]
    assert rtcp.parse_rtcp(lying) == []
    # A length word pointing past the datagram ends the walk; what came before is kept.
    pli = rtcp.build_pli(1, 2)
    assert rtcp.parse_rtcp(pli + b"\x81\xc9\xff\xff" + b"\x00" * 8) == [rtcp.Pli(1, 2)]
    # A REMB listing 255 SSRCs with room for one.
    remb = bytearray(rtcp.build_remb(1, 500_000, [9]))
    remb[16] = 255
    [parsed] = rtcp.parse_rtcp(bytes(remb))
    assert isinstance(parsed, rtcp.Remb) and parsed.ssrcs == [9]
    # A BYE counting 31 SSRCs with room for none.
    assert rtcp.parse_rtcp(b"\x9f\xcb\x00\x00") == [rtcp.Bye([])]


@pytest.mark.usefixtures("capture")
async def test_gop_cache_is_bounded_for_late_keyframe_packets() -> None:
    """The engine's group of pictures: outgrown, it keeps the keyframe's packets, and a flood of "late packets of
    the keyframe" (same timestamp) does not grow it past its bound: a joiner is replayed at most GOP_MAX."""
    from sfu.rtp import parse_rtp
    from tests.sfu.test_keyframes import IDR, SLICE, _packet

    producer = _producer(Wire())
    stream = producer.streams[0]
    key = _packet(1, 0, IDR)
    producer.on_rtp(stream, key, parse_rtp(key), 0.0)
    for i in range(GOP_MAX + 10):  # outgrows the bound
        data = _packet(2 + i, 3000, SLICE)
        producer.on_rtp(stream, data, parse_rtp(data), 0.1)
    for i in range(10_000):  # a flood with the keyframe's timestamp
        data = _packet((GOP_MAX + 20 + i) & 0xFFFF, 0, SLICE)
        producer.on_rtp(stream, data, parse_rtp(data), 0.2)
    wire = Wire()
    await _consumer(producer, wire, 0).start()
    assert len(wire.rtp) == GOP_MAX, "the keyframe's packets up to the bound, no more"


def test_missing_packets_tracked_for_nack_are_bounded() -> None:
    """A publisher whose sequence numbers advance by 500 a packet: each gap is a burst of "losses"; what is
    tracked, and what one NACK asks for, stays bounded."""
    tracker = NackTracker()
    seq = 0
    for i in range(2000):
        seq += 500
        tracker.on_packet(seq, i * 0.001)
        assert len(tracker.missing) <= tracker.max_missing
    due = tracker.due(2.0005)
    assert len(due) <= tracker.max_per_nack
    assert len(rtcp.build_nack(1, 2, due)) <= 1200  # fits one packet


@pytest.mark.usefixtures("capture")
async def test_a_consumers_sent_window_is_bounded_without_feedback() -> None:
    """A subscriber that never sends RTCP: the engine counts what it sends (no per-packet window anywhere), and the
    consumer's rate samples are bounded however often the rate is asked."""
    wire = Wire()
    producer = _producer(wire)
    consumer = _consumer(producer, wire, 0)
    frames = 10_000
    await _feed(producer, frames, keyframe_every=300)
    assert len(wire.rtp) >= frames - 10  # forwarded
    for i in range(10_000):
        consumer.sent_bitrate(i * 0.001)
    assert len(consumer._sent) <= 64


# Found by the h264 fuzz target (1M-input run, bench/RESULTS.md): a 719-byte "SPS" whose Exp-Golomb fields keep the
# reader going over every bit of the packet. Reading its picture size costs about 1.2 ms of CPU (a real SPS is under
# 100 bytes and costs microseconds), and the producer reads it for every packet that carries an SPS: a publisher
# sending such packets costs the server about a millisecond each. sfu/frames.py stops after 128 bytes (255 still let
# a 699-byte one cost 5 ms under the fuzzer's instrumentation).
SLOW_SPS = base64.b64decode(
    "Z1VVVVVkAAMAgAAAHkeMGVAABGjvPLACrQYF//+p3EXpvebZSLeWLNgg2SPu73gyNjQgLSBjb3JlIDE2NSAtIEguMjY0L01QRUct"
    "NCBBVkMgY29kZWMgLSBDb3B5bGVmdCAyMDAzLTIwMjUgLSBodHRwOi8vd3d3LnZpZGVvbGFuLm9yZy94MjY0Lmh0bWwgLSBvcHRp"
    "b25zOiBjfmFiYWM9MSByZWY9MSBkZWJsb2NrPTE6MDowIGFuYWx5c2U9MHgzOjB4MTEzIG1lPWhleCBzdWJtZT0yIHBzeT0xIJDz"
    "jO7d5R/5CVoblyUAEQTl+geGiYKXk4BFAK0axQF5Ry6DThduWTS1K+33+d1nrkfnA6a/PR8b9ki0Uf+20z6djINwY2waa9v8Ltpw"
    "dVlQ8zWqliZIJR/7ZK4tsbkSoF/6sx0W9ohlg46XFWMTESWeW3CW8IZvZ4E4ofbuI0Z7gxGX4+zvWIkDQ3XL14u3Mv8P1t0RAM2f"
    "LTXNabHkRzI0LaPWTiNwyCCoO50bcIhTYv+wRWvFm9gRzSPME6GvwudseS4pfrXkf27+Ry7PMF2RpCurOKvsHR7IFwZRr3XPToUD"
    "qhYPEpMFEJww4nvnrU9EXI7oMikXHz5C5W0aBQUFBQUFBQUFBQUFa2V5aW50PTkwIGtleWludF9taW49NDYgc2NlbmVjdXQ9MCBp"
    "bnRyYV9yZWZyZXNoPTAgcmNfbG9va2FoZWFkPTAgcmM9Y2JyIG1idHJlZT0wIGJpdHJhdGU9MTUwIHJhdGV0b2w9MS4wIHFjb21w"
    "PTAuNjAgcXBtaW49MCBxcG1heD02OSBxcHN0ZXA9NCB2YnZfbWF4cmF0ZT0xNTAgdmJ2X2J1ZnNpemU9MTUwIG5hbF9ocmQ9bm9u"
    "ZSBmaWxsZXI9MCBpcF9yYXRpbz0xLjQwIGEA//////+///////////////8="
)


def bits_read_for_a_picture_size(data: bytes) -> int:
    from sfu import frames

    read = [0]
    bit = frames._Bits.bit

    def counting(self: object) -> int:
        read[0] += 1
        return bit(self)  # type: ignore[arg-type]

    frames._Bits.bit = counting  # type: ignore[method-assign]
    try:
        frames.h264_size(data, 0, len(data))
    finally:
        frames._Bits.bit = bit  # type: ignore[method-assign]
    return read[0]


def test_reading_a_picture_size_reads_a_bounded_number_of_bits() -> None:
    read = bits_read_for_a_picture_size(SLOW_SPS)
    assert read <= 8 * 128 + 1, f"{read} bits read for a picture size"  # 128 bytes, and the read that stops
