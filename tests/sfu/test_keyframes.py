"""Keyframe handling without a network: the GOP cache and the request throttle under a crowd of joiners."""

from __future__ import annotations

import struct

from sfu.codecs import CodecInfo
from sfu.consumer import Consumer, OutSlot
from sfu.producer import Producer
from sfu.rtcp import Pli, parse_rtcp
from sfu.rtp import parse_rtp

H264 = CodecInfo("video/H264", 90000, 102, fmtp=(("packetization-mode", "1"), ("profile-level-id", "42e01f")))
IDR = bytes([0x65, 0x88, 0x84])  # NAL type 5
SLICE = bytes([0x41, 0x9A, 0x00])  # NAL type 1, first_mb 0


def _packet(seq: int, ts: int, payload: bytes, marker: bool = True) -> bytes:
    return struct.pack("!BBHII", 0x80, 102 | (0x80 if marker else 0), seq, ts, 1234) + payload


class Wire:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    async def send_rtp(self, data: bytes) -> bool:
        self.rtp.append(data)
        return True

    async def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(data)
        return True


def _producer(upstream: Wire) -> Producer:
    return Producer("TR_1", "owner", "teacher", "camera", "0", H264, 1234, None, None, 99, upstream.send_rtcp)


async def _feed(producer: Producer, frames: int, keyframe_every: int, start_seq: int = 1000) -> None:
    for i in range(frames):
        payload = IDR if keyframe_every and i % keyframe_every == 0 else SLICE
        data = _packet(start_seq + i, 3000 * i, payload + b"\x00" * 100)
        await producer.on_rtp(data, parse_rtp(data), i / 30)


def _consumer(producer: Producer, wire: Wire, n: int) -> Consumer:
    slot = OutSlot(mid=str(n), kind="video", clock_rate=90000)
    slot.bind(5000 + n, 96, None, None)
    consumer = Consumer(producer, slot, wire.send_rtp, wire.send_rtcp)
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
        assert wire.rtp[0][first.payload_offset] & 0x1F == 5, "each subscriber starts at the keyframe"
        seqs = [parse_rtp(d).sequence_number for d in wire.rtp]
        assert len(seqs) == 40 and seqs == list(range(seqs[0], seqs[0] + 40))
    # and the live stream continues on each without a gap
    data = _packet(1040, 3000 * 40, SLICE)
    await producer.on_rtp(data, parse_rtp(data), 2.0)
    assert all(parse_rtp(w.rtp[-1]).sequence_number == parse_rtp(w.rtp[-2]).sequence_number + 1 for w in wires)


async def test_hundred_joiners_without_a_cached_keyframe_cause_one_request() -> None:
    upstream = Wire()
    producer = _producer(upstream)
    await _feed(producer, frames=5, keyframe_every=0, start_seq=1)  # joined mid-stream: deltas only
    assert all(not p.keyframe for p in producer.cache if p is not None)
    consumers = [_consumer(producer, Wire(), i) for i in range(100)]
    for consumer in consumers:
        await consumer.start()
    plis = [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Pli)]
    assert len(plis) == 1 and plis[0].media_ssrc == 1234 and plis[0].sender_ssrc == 99
    assert producer.keyframes.suppressed == 99


async def test_a_long_group_keeps_only_the_keyframe_and_waits_for_the_next() -> None:
    upstream = Wire()
    producer = _producer(upstream)
    producer.gop.max_packets = 10  # type: ignore[union-attr]
    await _feed(producer, frames=30, keyframe_every=1000)
    wire = Wire()
    consumer = _consumer(producer, wire, 0)
    await consumer.start()
    assert len(wire.rtp) == 1, "only the cached keyframe picture"
    assert [p for d in upstream.rtcp for p in parse_rtcp(d) if isinstance(p, Pli)], "and a fresh one is asked"
    delta = _packet(1030, 3000 * 30, SLICE)
    await producer.on_rtp(delta, parse_rtp(delta), 1.0)
    assert len(wire.rtp) == 1, "delta frames wait for the next keyframe"
    key = _packet(1031, 3000 * 31, IDR)
    await producer.on_rtp(key, parse_rtp(key), 1.1)
    assert len(wire.rtp) == 2
    assert parse_rtp(wire.rtp[1]).sequence_number == parse_rtp(wire.rtp[0]).sequence_number + 1
