"""Keyframe handling without a network: the GOP cache and the request throttle under a crowd of joiners."""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Iterator

import pytest
from pylibsrtp import Policy

from sfu.codecs import CodecInfo
from sfu.consumer import Consumer, OutSlot
from sfu.engine.bridge import process_bridge
from sfu.frames import h264_sps
from sfu.producer import Producer
from sfu.rtcp import Pli, parse_rtcp
from sfu.rtp import parse_rtp

H264 = CodecInfo("video/H264", 90000, 102, fmtp=(("packetization-mode", "1"), ("profile-level-id", "42e01f")))
# A keyframe access unit as browsers send it: a STAP-A carrying SPS, PPS and the IDR slice.
IDR = bytes([0x78, 0x00, 0x04, 0x67, 0x42, 0xC0, 0x1E, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x03, 0x65, 0x88, 0x84])
SLICE = bytes([0x41, 0x9A, 0x00])  # NAL type 1, first_mb 0


def _packet(seq: int, ts: int, payload: bytes, marker: bool = True) -> bytes:
    return struct.pack("!BBHII", 0x80, 102 | (0x80 if marker else 0), seq, ts, 1234) + payload


ENGINE = process_bridge().engine
CAPTURE: list[tuple[int, bytes, bytes | None]] = []


@pytest.fixture(autouse=True)
def capture() -> Iterator[None]:
    """What the engine sends, before encryption (these transports have no keys and no socket)."""
    CAPTURE.clear()
    ENGINE.set_capture(CAPTURE)
    yield
    ENGINE.set_capture(None)


class Wire:
    """A subscriber's transport in the engine, and the RTCP a producer sends upstream."""

    def __init__(self) -> None:
        self.transport = ENGINE.add_transport()
        # connected: DTLS gave the transport its keys (the engine starts no consumer on a transport without them)
        ENGINE.set_srtp(self.transport, Policy.SRTP_PROFILE_AES128_CM_SHA1_80, bytes(range(30)))
        self.rtcp: list[bytes] = []

    @property
    def rtp(self) -> list[bytes]:
        return [plain for transport, plain, _ in CAPTURE if transport == self.transport]

    async def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(data)
        return True


def _producer(upstream: Wire) -> Producer:
    return Producer("TR_1", "owner", "teacher", "camera", "0", H264, 1234, None, None, 99, upstream.send_rtcp)


async def _feed(producer: Producer, frames: int, keyframe_every: int, start_seq: int = 1000) -> None:
    for i in range(frames):
        payload = IDR if keyframe_every and i % keyframe_every == 0 else SLICE
        data = _packet(start_seq + i, 3000 * i, payload + b"\x00" * 100)
        producer.on_rtp(producer.streams[0], data, parse_rtp(data), i / 30)


def _consumer(producer: Producer, wire: Wire, n: int) -> Consumer:
    slot = OutSlot(mid=str(n), kind="video", clock_rate=90000, transport=wire.transport)
    slot.bind(5000 + n, 96, None, None)
    consumer = Consumer(producer, slot, wire.send_rtcp)
    producer.consumers.append(consumer)
    return consumer


async def test_hundred_joiners_replay_the_cached_pictures_and_ask_nothing() -> None:
    upstream = Wire()
    producer = _producer(upstream)
    await _feed(producer, frames=40, keyframe_every=90)  # one keyframe, then 39 delta frames
    wires = [Wire() for _ in range(100)]
    consumers = [_consumer(producer, w, i) for i, w in enumerate(wires)]
    for consumer in consumers:
        await consumer.start()
    assert not [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Pli)]
    for wire in wires:
        first = parse_rtp(wire.rtp[0])
        assert h264_sps(wire.rtp[0], first.payload_offset, first.payload_end), "each starts at the keyframe"
        seqs = [parse_rtp(d).sequence_number for d in wire.rtp]
        assert len(seqs) == 40 and seqs == list(range(seqs[0], seqs[0] + 40))
    # and the live stream continues on each without a gap
    data = _packet(1040, 3000 * 40, SLICE)
    producer.on_rtp(producer.streams[0], data, parse_rtp(data), 2.0)
    assert all(parse_rtp(w.rtp[-1]).sequence_number == parse_rtp(w.rtp[-2]).sequence_number + 1 for w in wires)


async def test_hundred_joiners_without_a_cached_keyframe_cause_one_request() -> None:
    upstream = Wire()
    producer = _producer(upstream)
    await _feed(producer, frames=5, keyframe_every=0, start_seq=1)  # joined mid-stream: deltas only
    assert ENGINE.stream_stats(producer.streams[0].sid)["keyframes"] == 0
    consumers = [_consumer(producer, Wire(), i) for i in range(100)]
    for consumer in consumers:
        await consumer.start()
    plis = [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Pli)]
    assert len(plis) == 1 and plis[0].media_ssrc == 1234 and plis[0].sender_ssrc == 99
    assert producer.keyframes.suppressed == 99


async def test_a_long_group_keeps_only_the_keyframe_and_waits_for_the_next() -> None:
    upstream = Wire()
    producer = _producer(upstream)
    await _feed(producer, frames=1510, keyframe_every=100_000)  # the engine keeps at most 1500 packets
    wire = Wire()
    consumer = _consumer(producer, wire, 0)
    await consumer.start()
    assert len(wire.rtp) == 1, "only the cached keyframe picture"
    assert [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Pli)], "and a fresh one is asked"
    delta = _packet(2510, 3000 * 1510, SLICE)
    producer.on_rtp(producer.streams[0], delta, parse_rtp(delta), 1.0)
    assert len(wire.rtp) == 1, "delta frames wait for the next keyframe"
    key = _packet(2511, 3000 * 1511, IDR)
    producer.on_rtp(producer.streams[0], key, parse_rtp(key), 1.1)
    assert len(wire.rtp) == 2
    assert parse_rtp(wire.rtp[1]).sequence_number == parse_rtp(wire.rtp[0]).sequence_number + 1


async def test_missing_packets_are_asked_from_the_publisher_until_they_come() -> None:
    upstream = Wire()
    producer = _producer(upstream)
    for seq in (1, 2, 5, 6):  # 3 and 4 lost on the way in
        data = _packet(seq, 3000 * seq, SLICE)
        producer.on_rtp(producer.streams[0], data, parse_rtp(data), seq / 100)
    await producer.tick(0.1)
    from sfu.rtcp import Nack

    nacks = [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Nack)]
    assert len(nacks) == 1 and sorted(nacks[0].lost) == [3, 4] and nacks[0].media_ssrc == 1234
    data = _packet(3, 9000, SLICE)
    producer.on_rtp(producer.streams[0], data, parse_rtp(data), 0.11)  # 3 arrives (retransmitted)
    await producer.tick(0.2)
    nacks = [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Nack)]
    assert sorted(nacks[-1].lost) == [4]
    await producer.tick(5.0)  # too old: given up
    assert len([p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Nack)]) == 2


async def test_slot_numbering_is_continuous_across_a_publisher_restart() -> None:
    from sfu.codecs import CodecInfo
    from sfu.rtp import parse_vp8_descriptor

    vp8 = CodecInfo("video/VP8", 90000, 96)
    wire = Wire()
    slot = OutSlot(mid="0", kind="video", clock_rate=90000, transport=wire.transport)
    slot.bind(777, 100, None, None)

    def vp8_packet(seq: int, ts: int, picture_id: int, key: bool, ssrc: int) -> bytes:
        descriptor = bytes([0x90, 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF])  # X, S, I; 15-bit id
        header = bytes([0x00 if key else 0x01, 0, 0])  # P bit 0 = keyframe
        return struct.pack("!BBHII", 0x80, 0x80 | 96, seq, ts, ssrc) + descriptor + header

    for run, (ssrc, seq0, ts0, pid0) in enumerate(((1, 100, 5000, 300), (2, 40000, 123456789, 7000))):
        producer = Producer(f"TR_{run}", "o", "teacher", "camera", "0", vp8, ssrc, None, None, 1, Wire().send_rtcp)
        consumer = Consumer(producer, slot, wire.send_rtcp)
        producer.consumers.append(consumer)
        for i in range(5):
            data = vp8_packet(seq0 + i, ts0 + 3000 * i, pid0 + i, i == 0, ssrc)
            producer.on_rtp(producer.streams[0], data, parse_rtp(data), run * 10 + i / 30)
        consumer.close()
    out = [parse_rtp(d) for d in wire.rtp]
    assert [h.ssrc for h in out] == [777] * 10 and all(h.payload_type == 100 for h in out)
    seqs = [h.sequence_number for h in out]
    assert seqs == list(range(seqs[0], seqs[0] + 10)), "no gap, no repeat across the restart"
    ts = [h.timestamp for h in out]
    assert all(b > a for a, b in itertools.pairwise(ts)), "timestamps keep moving forward"
    pids = [parse_vp8_descriptor(d, 12).picture_id for d in wire.rtp]
    assert pids == list(range(pids[0], pids[0] + 10)), "VP8 picture ids continue too"


class TapSink:
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.reports: list[int] = []

    def track_added(self, room_sid: str, track: dict) -> None:  # type: ignore[type-arg]
        pass

    def track_removed(self, room_sid: str, track_id: str) -> None:
        pass

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        self.packets.append(data)

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
        self.reports.append(rtp_timestamp)


async def test_taps_get_one_continuous_stream_of_a_simulcast_track() -> None:
    """The recorder decodes one stream per track: three layers interleaved would be garbage to it."""
    from sfu.codecs import CodecInfo
    from sfu.rtcp import SenderReport

    vp8 = CodecInfo("video/VP8", 90000, 96)
    producer = Producer("TR_s", "o", "teacher", "camera", "0", vp8, None, None, None, 1, Wire().send_rtcp,
                        rids=["q", "h", "f"])
    for i, stream in enumerate(producer.streams):
        stream.ssrc = 100 + i
    sink = TapSink()
    producer.taps = [sink]

    def vp8_packet(seq: int, ts: int, key: bool, ssrc: int) -> bytes:
        return (struct.pack("!BBHII", 0x80, 0x80 | 96, seq, ts, ssrc) + bytes([0x90, 0x80, 0x80, seq & 0xFF])
                + bytes([0x00 if key else 0x01, 0, 0, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]))

    t = 0.0
    for i in range(30):  # all three layers, keyframe every 10 frames, interleaved
        for stream, base in zip(producer.streams, (1000, 5000, 9000), strict=True):
            data = vp8_packet(base + i, 3000 * i + base, i % 10 == 0, stream.ssrc)  # type: ignore[arg-type]
            producer.on_rtp(stream, data, parse_rtp(data), t)
        t += 1 / 30
    out = [parse_rtp(d) for d in sink.packets]
    assert {h.ssrc for h in out} == {producer.tap_feed.ssrc}  # type: ignore[union-attr]
    # q's keyframe came first, then h's and f's in the same frame: from then on one packet per frame, all f's.
    assert len(out) == 32 and [b.timestamp - a.timestamp for a, b in itertools.pairwise(out[2:])] == [3000] * 29
    report = SenderReport(ssrc=102, ntp=1 << 32, rtp_timestamp=9000 + 3000 * 29, packets=0, octets=0)
    producer.on_sender_report(producer.streams[2], report, t)
    producer.on_sender_report(producer.streams[0], SenderReport(100, 1 << 32, 5, 0, 0), t)
    assert sink.reports == [out[-1].timestamp], "only the fed layer's reports, mapped into the feed's timeline"
    # f stops (the publisher paused it): the feed falls back to h at h's next keyframe, continuously.
    count = len(sink.packets)
    t += 1.0
    for i in range(30, 45):
        for stream, base in zip(producer.streams[:2], (1000, 5000), strict=True):
            data = vp8_packet(base + i, 3000 * i + base, i % 10 == 0, stream.ssrc)  # type: ignore[arg-type]
            producer.on_rtp(stream, data, parse_rtp(data), t)
        t += 1 / 30
    after = [parse_rtp(d) for d in sink.packets[count:]]
    assert after, "the feed carried on with a lower layer"
    seqs = [h.sequence_number for h in out + after]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap, no repeat"
    stamps = [h.timestamp for h in out + after]
    assert all(b > a for a, b in itertools.pairwise(stamps))


async def test_subscriber_twcc_feedback_is_read_against_what_the_engine_numbered() -> None:
    """The engine writes the transport-wide numbers; the subscriber's feedback about them is judged against what
    the engine sent (bounds of sfu/bwe.py), and loss is counted from it."""
    from sfu.bwe import TwccFeedback, TwccSender
    from sfu.rtcp import TransportCC

    upstream, wire = Wire(), Wire()
    producer = _producer(upstream)
    ENGINE.set_twcc(wire.transport, 5)
    _consumer(producer, wire, 0)
    await _feed(producer, frames=120, keyframe_every=30)
    assert len(wire.rtp) == 120 and all(p[0] == 0x90 and p[16] == 0x51 for p in wire.rtp)  # the extension, id 5
    numbers = [struct.unpack_from("!H", p, 17)[0] for p in wire.rtp]
    assert numbers == list(range(120))
    receiver = TwccFeedback()  # what the subscriber would send back: 10 of the 120 lost
    for n in numbers:
        if n % 12 != 5:
            receiver.record(n, 10 + n / 1000)
    feedback = [p for p in parse_rtcp(receiver.build(1, 2)) if isinstance(p, TransportCC)]  # type: ignore[arg-type]
    sender = TwccSender(5, ENGINE, wire.transport)
    assert sender.on_feedback(feedback[0].fci) == (10, 120)
    assert sender.on_feedback(feedback[0].fci) is None, "reported once: the same feedback again counts nothing"


async def test_a_publisher_cannot_make_every_packet_read_an_sps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading an SPS's picture size walks its bits in Python: a publisher sending a costly SPS (issue 13's fuzz
    finding, about 0.5 ms to read even bounded to 255 bytes), changed in every packet, must not make the server
    read each one."""
    import base64

    from sfu import producer as producer_module

    reads = []
    read = producer_module.h264_size
    monkeypatch.setattr(producer_module, "h264_size", lambda *a: reads.append(1) or read(*a))
    slow = base64.b64decode(
        "Z1VVVVVkAAMAgAAAHkeMGVAABGjvPLACrQYF//+p3EXpvebZSLeWLNgg2SPu73gyNjQgLSBjb3JlIDE2NSAtIEguMjY0L01QRUct"
        "NCBBVkMgY29kZWMgLSBDb3B5bGVmdCAyMDAzLTIwMjUgLSBodHRwOi8vd3d3LnZpZGVvbGFuLm9yZy94MjY0Lmh0bWwgLSBvcHRp"
        "b25zOiBjfmFiYWM9MSByZWY9MSBkZWJsb2NrPTE6MDowIGFuYWx5c2U9MHgzOjB4MTEzIG1lPWhleCBzdWJtZT0yIHBzeT0xIJDz")
    producer = _producer(Wire())
    stream = producer.streams[0]
    for i in range(600):  # 0.3 s of packets
        data = _packet(1 + i, 3000 * i, slow[:-1] + bytes([i & 0xFF]))  # an SPS, different every time
        producer.on_rtp(stream, data, parse_rtp(data), i / 2000)
    # arrivals run from 0 to 0.2995 s: read at 0, 0.1 and 0.2 s, one read per 100 ms of the publisher's packets
    assert len(reads) == 3, f"{len(reads)} SPS read for 600 packets (one per 100 ms at most)"
    assert stream.packets_in == 600, "and every packet was still taken (forwarded, cached)"


async def test_a_joiner_whose_keyframe_request_was_lost_asks_again_until_its_picture_starts() -> None:
    """The first request is lost (nothing comes back): each report tick asks again, spaced by the throttle, and
    once a keyframe has gone out the ticks ask nothing more (aiortc's receiver never asks by itself: its picture
    stayed black)."""
    upstream = Wire()
    producer = _producer(upstream)
    t0 = time.monotonic()

    def feed(seq: int, payload: bytes, at: float) -> None:
        data = _packet(seq, 3000 * seq, payload + b"\x00" * 100)
        producer.on_rtp(producer.streams[0], data, parse_rtp(data), at)

    for seq in range(1, 6):  # joined mid-stream: deltas only
        feed(seq, SLICE, t0)
    consumer = _consumer(producer, wire := Wire(), 0)
    await consumer.start()

    def plis() -> int:
        return len([p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Pli)])

    assert plis() == 1 and not wire.rtp
    await consumer.ask_again(t0 + 0.1)  # within the throttle: not yet
    assert plis() == 1
    feed(6, SLICE, t0 + 0.9)
    await consumer.ask_again(t0 + 1.0)
    assert plis() == 2 and consumer.keyframes_requested == 2
    feed(7, IDR, t0 + 1.1)  # the keyframe the second request brought
    assert wire.rtp and consumer.started
    await consumer.ask_again(t0 + 2.0)
    await consumer.ask_again(t0 + 3.0)
    assert plis() == 2
