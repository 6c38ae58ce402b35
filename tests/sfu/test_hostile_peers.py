"""Hostile peers: real aiortc peers (ICE, DTLS, SRTP) that send what a browser never would, through their own
SRTP session, to a real server (issue 13). Whatever they do, the server's tables and work stay bounded and the
class goes on for everyone else."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
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
    """RTP packets of video the client received (the bench clip carries a trailer no decoder takes, so a student
    of the browser-like teacher is checked by its packets, not by pictures)."""
    stats = await client.pc.getStats()  # type: ignore[union-attr]
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == "video")


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


async def test_a_thousand_new_ssrcs_leave_the_tables_bounded(classroom: Classroom,
                                                             teacher: BrowserLikeTeacher) -> None:
    """A publisher sending with a new SSRC per packet, each carrying a valid MID and RID: each rebinds the layer
    (as a publisher restarting its encoder would), none is remembered beside it."""
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await _receiving(student)
    server = _participant(classroom, "teacher")
    q = teacher.stream("q")
    learned = server.ssrcs_learned
    for i in range(1000):
        ssrc = 0x5000_0000 + i
        header = struct.pack("!BBHII", 0x90, q.payload_type, i, i * 3000, ssrc)
        await teacher.send_raw(header + q.ext + b"\x41\x9a" + bytes(100))  # a non-IDR slice of nothing
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert server.ssrcs_learned - learned >= 900, "the packets reached the server and were bound"
    streams = sum(len(p.streams) for p in server.producers.values())
    assert len(server._by_ssrc) <= streams and len(server._by_rtx) <= streams
    await _receiving(student, timeout=5)  # and the class goes on


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
