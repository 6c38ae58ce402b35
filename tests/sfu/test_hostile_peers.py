"""Hostile peers: real aiortc peers (ICE, DTLS, SRTP) that send what a browser never would, through their own
SRTP session, to a real server (issue 13). Whatever they do, the server's tables and work stay bounded and the
class goes on for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pylibsrtp
import pytest

from bench.fanout import Publisher
from bench.targets.classcast import ClasscastTarget
from sfu import rtcp
from sfu.client import Client, SyntheticVideoTrack
from sfu.engine.reference import RTX_BURST
from sfu.ice import IceConfig
from sfu.participant import SfuParticipant
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size, _router

LOOPBACK = IceConfig(hosts=("127.0.0.1",))


@contextlib.contextmanager
def sfu_heap_growth() -> Iterator[list[int]]:
    """Bytes allocated by code in sfu/ while the block ran and still held after it (objects, tables, slices the
    SFU makes; one frame of traceback keeps tracing cheap enough for a loaded machine)."""
    gc.collect()
    tracemalloc.start(1)
    growth = [0]
    try:
        yield growth
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/sfu/*")])
        growth[0] = sum(stat.size for stat in snapshot.statistics("filename"))
    finally:
        tracemalloc.stop()


def _no_callback_failures(caplog: pytest.LogCaptureFixture) -> None:
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "sfu" in r.name]
    assert not failures, failures[:5]


async def extra_heap(attack: Any, seconds: float) -> int:
    """What `attack()` makes the SFU keep beyond an ordinary stretch of the class as long: the SFU's heap growth
    over `seconds` with the attack, minus its growth over `seconds` without (caches filling, the class going on)."""
    loop = asyncio.get_running_loop()
    grown = []
    for act in (None, attack):
        with sfu_heap_growth() as growth:
            end = loop.time() + seconds
            if act is not None:
                await act()
            await asyncio.sleep(max(0.0, end - loop.time()))
        grown.append(growth[0])
    return grown[1] - grown[0]


async def _settle(done: Any, timeout: float = 10) -> None:
    """Waits (a loaded machine is slow) until `done()` or the timeout; the caller asserts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done() and loop.time() < deadline:  # noqa: ASYNC110 - polling a counter the SFU owns
        await asyncio.sleep(0.1)


def _participant(classroom: Classroom, uid: str) -> SfuParticipant:
    return next(p for p in _router(classroom).participants.values() if p.uid == uid)


class BrowserLikeTeacher:
    """The fan-out benchmark's publisher (three simulcast layers with MID/RID, like Chrome) on the test server."""

    def __init__(self, classroom: Classroom) -> None:
        self.target = ClasscastTarget("127.0.0.1", url=classroom.base, org=classroom.org.id)
        self.target.room = "physics-1"
        self.publisher = Publisher("lecture", "h264", LOOPBACK)
        self.session = aiohttp.ClientSession()

    async def start(self) -> None:
        await self.publisher.start(self.session, self.target)

    def stream(self, name: str) -> Any:
        return next(s for s in self.publisher.streams if s.track is self.publisher.clip[name])

    async def send_raw(self, packet: bytes) -> None:
        await self.publisher.peer.send_rtp(packet)

    async def close(self) -> None:
        await self.publisher.close()
        await self.target.close()
        await self.session.close()


@pytest.fixture
async def teacher(classroom: Classroom) -> AsyncIterator[BrowserLikeTeacher]:
    t = BrowserLikeTeacher(classroom)
    await t.start()
    try:
        yield t
    finally:
        await t.close()


async def _watching(classroom: Classroom, uid: str) -> tuple[Client, Any]:
    """A student who decodes the teacher's camera (a `Client` teacher)."""
    student = await classroom.client(await classroom.token("physics-1", uid), name=uid)
    track = await student.remote_track("camera", uid="teacher", timeout=15)
    await _frame_size(track, timeout=15)
    return student, track


async def _video_packets(client: Client) -> int:
    """RTP packets of video the client received, media and retransmissions (the bench clip carries a trailer no
    decoder takes, so a student of the browser-like teacher is checked by its packets, not by pictures).

    Read from aiortc's per-SSRC counters, not `getStats()`: aiortc files every SSRC of one receiver under the same
    stats id, so once the SFU answers a NACK on the RTX SSRC the report shows only the retransmissions' count and
    the media stream looked stopped while it flowed (how this test failed on loaded machines)."""
    total = 0
    for transceiver in client.pc.getTransceivers():  # type: ignore[union-attr]
        if transceiver.kind == "video":
            streams = transceiver.receiver._RTCRtpReceiver__remote_streams
            total += sum(stream.packets_received for stream in streams.values())
    return total


async def _receiving(client: Client, timeout: float = 15) -> int:
    """Waits until the client receives video packets steadily; how many it received in half a second."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        before = await _video_packets(client)
        await asyncio.sleep(0.5)
        got = await _video_packets(client) - before
        if got >= 5:
            return got
    raise AssertionError(f"{client.name} receives no video")


@pytest.mark.in_process_sfu("reads the participant's tables and drop counters")
async def test_a_thousand_new_ssrcs_leave_the_tables_bounded(classroom: Classroom, teacher: BrowserLikeTeacher,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A publisher sending with a new SSRC per packet, each carrying a valid MID and RID: each rebinds the layer
    (as a publisher restarting its encoder would), none is remembered beside it."""
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await _receiving(student)
    server = _participant(classroom, "teacher")
    q = teacher.stream("q")
    learned = server.ssrcs_learned

    async def attack() -> None:
        for i in range(1000):
            ssrc = 0x5000_0000 + i
            header = struct.pack("!BBHII", 0x90, q.payload_type, i, i * 3000, ssrc)
            await teacher.send_raw(header + q.ext + b"\x41\x9a" + bytes(100))  # a non-IDR slice of nothing
            if i % 10 == 9:
                await asyncio.sleep(0.01)  # paced: the point is the server's tables, not the socket buffers
        await _settle(lambda: server.ssrcs_learned - learned >= 900)

    extra = await extra_heap(attack, seconds=6)
    assert server.ssrcs_learned - learned >= 900, "the packets reached the server and were bound"
    streams = sum(len(p.streams) for p in server.producers.values())
    assert len(server._by_ssrc) <= streams and len(server._by_rtx) <= streams
    # The fake packets themselves may sit in the fixed caches (2048-packet ring, 1500-packet group of pictures,
    # 1024 missing sequence numbers) until real ones push them out: that much, never more per SSRC.
    assert extra < 4_000_000, f"the SFU kept {extra} bytes more for a thousand SSRCs"
    await _receiving(student, timeout=5)  # and the class goes on
    _no_callback_failures(caplog)


@pytest.mark.in_process_sfu("reads the participant's tables and drop counters")
async def test_a_students_rtp_on_its_receive_only_sections_is_dropped_and_counted(
        classroom: Classroom, caplog: pytest.LogCaptureFixture) -> None:
    """A student may not publish; RTP it sends anyway, on the m-sections it receives on, reaches nobody."""
    publisher = await classroom.client(await classroom.create_room(), name="teacher")
    await publisher.publish({"camera": SyntheticVideoTrack(320, 240)})
    sender, _ = await _watching(classroom, "sender")
    _other, other_track = await _watching(classroom, "other")
    server = _participant(classroom, "sender")
    dropped = server.rtp_dropped
    transceiver = sender.pc.getTransceivers()[0]  # type: ignore[union-attr]
    assert transceiver.direction == "recvonly"
    mid = transceiver.mid.encode()
    ext = struct.pack("!HH", 0xBEDE, 1) + bytes([(1 << 4) | (len(mid) - 1)]) + mid + b"\0" * (3 - len(mid))
    for i in range(500):  # under every MID extension id a client may have negotiated (1 is aiortc's)
        packet = struct.pack("!BBHII", 0x90, 96 + i % 32, i, i * 3000, 0x7700_0000 + i % 4) + ext + bytes(200)
        await transceiver.receiver.transport._send_rtp(packet)
        if i % 10 == 9:
            await asyncio.sleep(0.01)
    await _settle(lambda: server.rtp_dropped - dropped >= 450)
    assert server.rtp_dropped - dropped >= 450, "the packets arrived and were counted as dropped"
    router = _router(classroom)
    assert {p.uid for p in router.producers.values()} == {"teacher"}, "nothing of the student is a track"
    assert all(c.producer.uid == "teacher" for p in router.participants.values() for c in p.consumers.values())
    for _ in range(15):  # the class goes on
        await _frame_size(other_track, timeout=3)
    _no_callback_failures(caplog)


@pytest.mark.in_process_sfu("measures the SFU's heap with tracemalloc")
async def test_a_publisher_at_ten_times_its_rate_costs_bounded_memory(classroom: Classroom,
                                                                     teacher: BrowserLikeTeacher,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The top layer sent at ten times its rate for three seconds (each packet again under nine new sequence
    numbers): what the SFU keeps stays its fixed caches, and the students keep receiving."""
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await _receiving(student)
    f = teacher.stream("f")
    sent = 0

    async def attack() -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        end = loop.time() + 3
        while loop.time() < end:
            for packet in list(f.history.values())[-60:]:
                for _ in range(9):
                    seq = (f.seq + 20_000 + sent) & 0xFFFF
                    await teacher.send_raw(packet[:2] + struct.pack("!H", seq) + packet[4:])
                    sent += 1
            await asyncio.sleep(0.1)

    extra = await extra_heap(attack, seconds=5)
    assert sent > 3000
    assert extra < 8_000_000, f"the SFU kept {extra} bytes more for {sent} extra packets"
    await _receiving(student, timeout=5)
    _no_callback_failures(caplog)


@pytest.mark.in_process_sfu("measures the SFU's heap with tracemalloc")
async def test_garbage_after_dtls_is_dropped_and_the_class_goes_on(classroom: Classroom,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A student whose DTLS handshake completed sends garbage: SRTP-protected (so it decrypts) RTP and RTCP of
    random bytes, and raw datagrams to the server's media port. Nothing crashes, nothing is kept."""
    publisher = await classroom.client(await classroom.create_room(), name="teacher")
    await publisher.publish({"camera": SyntheticVideoTrack(320, 240)})
    vandal, _ = await _watching(classroom, "vandal")
    _other, other_track = await _watching(classroom, "other")
    transport = vandal.pc.getTransceivers()[0].receiver.transport  # type: ignore[union-attr]
    pair = transport.transport._connection._nominated[1]
    rng = random.Random(13)
    protected = 0

    async def _protected(data: bytes) -> None:
        nonlocal protected
        with contextlib.suppress(pylibsrtp.Error):  # what libsrtp cannot even protect never leaves the client
            await transport._send_rtp(data)
            protected += 1

    async def attack() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for i in range(2000):
                body = rng.randbytes(rng.randrange(0, 1200))
                if i % 3 == 0:  # RTP-looking: version 2, any payload type outside the RTCP range
                    await _protected(bytes([0x80 | rng.randrange(32), rng.choice([0, 96, 127, 255])])
                                     + rng.randbytes(10) + body)
                elif i % 3 == 1:  # RTCP-looking: version 2, a type the SFU reads, any length word
                    await _protected(bytes([0x80 | rng.randrange(32), rng.randrange(200, 208)])
                                     + rng.randbytes(6) + body)
                else:  # not even SRTP: raw bytes of every first-byte class (STUN, DTLS, RTP) to the media port
                    raw.sendto(bytes([rng.choice([0, 1, 20, 22, 23, 64, 128, 144, 200])]) + body, pair.remote_addr)
                if i % 20 == 19:
                    await asyncio.sleep(0.01)

    extra = await extra_heap(attack, seconds=5)
    assert protected > 800, "the garbage went out under SRTP"
    assert extra < 1_000_000, f"the SFU kept {extra} bytes more for garbage"
    for _ in range(15):
        await _frame_size(other_track, timeout=3)
    # The vandal's own connection survives too (garbage is dropped, not fatal): it still receives the teacher.
    assert vandal.pc.connectionState == "connected"  # type: ignore[union-attr]
    _no_callback_failures(caplog)


@pytest.mark.in_process_sfu("reads the participant's tables and drop counters")
async def test_a_nack_flood_resends_at_most_half_of_what_was_sent(classroom: Classroom) -> None:
    """A student asking for its whole history again and again: the retransmissions stay bounded by what was sent,
    and another student is not affected."""
    publisher = await classroom.client(await classroom.create_room(), name="teacher")
    await publisher.publish({"camera": SyntheticVideoTrack(320, 240)})
    flooder, _ = await _watching(classroom, "flooder")
    _other, other_track = await _watching(classroom, "other")
    server = _participant(classroom, "flooder")
    consumer = next(iter(server.consumers.values()))
    transport = flooder.pc.getTransceivers()[0].receiver.transport  # type: ignore[union-attr]
    for _ in range(100):  # a history worth asking for
        info = consumer.slot.info()
        sent = sorted((info["last_seq"] - k) & 0xFFFF for k in range(min(info["packets_sent"], 1000)))
        if len(sent) > 150:
            break
        await asyncio.sleep(0.1)
    nack = rtcp.build_nack(1, consumer.slot.ssrc, sent)  # everything the student was ever sent, every time
    for _ in range(200):
        await transport._send_rtp(nack)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)
    assert consumer.nacks_refused > 0
    assert consumer.retransmitted <= consumer.slot.packets_sent // 2 + RTX_BURST
    for _ in range(30):
        await _frame_size(other_track, timeout=3)
