"""The pipe's protocol without worker processes (sfu/pipe.py): two routers of one room in this process, linked by a
real loopback pipe, a simulcast publisher on one side (packets pushed as a participant's transport would).

What the far side must get: every layer once with its SSRC bound to the right layer, sender reports; what the near
side must do: resend what the far side NACKs from its ring (and NACK the publisher for the rest), pass PLIs on through
its throttle, keep layers the far side needs and pause those nobody needs. Garbage on the pipe is counted, never
raised."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from sfu import rtcp
from sfu.codecs import CodecInfo
from sfu.engine.bridge import process_bridge
from sfu.ice import IceConfig
from sfu.pipe import PipeProducer, _parse_app, describe
from sfu.producer import Producer
from sfu.router import DYNACAST_GRACE, Router
from sfu.rtp import parse_rtp

VP8 = CodecInfo("video/VP8", 90000, 96)
SSRCS = (0x1000, 0x2000, 0x3000)


def _vp8(seq: int, ts: int, key: bool, ssrc: int) -> bytes:
    return (struct.pack("!BBHII", 0x80, 0x80 | 96, seq, ts, ssrc) + bytes([0x90, 0x80, 0x80, seq & 0xFF])
            + bytes([0x00 if key else 0x01, 0, 0, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]))


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


class Publisher:
    """The near side's publisher: a simulcast camera whose RTCP (what the SFU asks of it) is kept."""

    def __init__(self) -> None:
        self.rtcp: list[Any] = []
        self.producer = Producer("TR_cam", "teacher-key", "teacher", "camera", "0", VP8, None, None, None, 7,
                                 self.send_rtcp, rids=["q", "h", "f"], bridge=process_bridge())
        for stream, ssrc in zip(self.producer.streams, SSRCS, strict=True):
            stream.ssrc = ssrc

    async def send_rtcp(self, data: bytes) -> bool:
        self.rtcp += rtcp.parse_rtcp(data)
        return True

    def frames(self, first: int, count: int) -> None:
        now = time.monotonic()
        for i in range(first, first + count):
            for stream in self.producer.streams:
                assert stream.ssrc is not None
                data = _vp8(i, 3000 * i, i % 10 == 0, stream.ssrc)
                self.producer.on_rtp(stream, data, parse_rtp(data), now)


async def _linked() -> tuple[Router, Router, Publisher]:
    near, far = Router("RM_pipe", IceConfig()), Router("RM_pipe", IceConfig())
    publisher = Publisher()
    await near.add_producer(publisher.producer)
    to_far, to_near = near.open_pipe(1), far.open_pipe(0)
    to_far.connect(to_near.port)
    to_near.connect(to_far.port)
    for track in [describe(p, "TEACHER") for p in near.local_producers()]:
        to_near.add_remote(track)
    return near, far, publisher


async def test_every_layer_crosses_once_with_its_ssrc_and_reports() -> None:
    near, far, publisher = await _linked()
    try:
        publisher.frames(0, 20)
        copy = far.pipes[0].remote["TR_cam"]
        await _until(lambda: [s.packets_in for s in copy.streams] == [20, 20, 20], "every layer's 20 packets")
        assert isinstance(far.producers["TR_cam"], PipeProducer), "the far router has the track as a producer"
        assert [s.ssrc for s in copy.streams] == list(SSRCS), "each SSRC bound to its own layer (CCSM)"
        assert near.pipes[1].rtp_sent == 60 and far.pipes[0].rtp_received == 60, "once each, no more"
        assert copy.simulcast and copy.codec == VP8 and copy.uid == "teacher" and copy.role == "TEACHER"
        report = rtcp.SenderReport(SSRCS[2], 5 << 32, 3000 * 19, 20, 400)
        publisher.producer.on_sender_report(publisher.producer.streams[2], report, time.monotonic())
        await _until(lambda: copy.streams[2].last_sr is not None, "the sender report crossed")
        assert copy.streams[2].last_sr.ntp == 5 << 32  # type: ignore[union-attr]
    finally:
        await near.close()
        await far.close()


async def test_nacks_are_answered_from_the_ring_and_the_rest_asked_of_the_publisher() -> None:
    near, far, publisher = await _linked()
    try:
        publisher.frames(0, 20)
        copy = far.pipes[0].remote["TR_cam"]
        await _until(lambda: copy.streams[1].packets_in == 20, "the h layer arrived")
        # the far side asks for seq 5 (sent, in the ring) and 4000 (never sent): one resent, one asked upstream
        await copy.streams[1].nack_upstream([5, 4000])
        pipe = near.pipes[1]
        await _until(lambda: pipe.retransmitted == 1 and pipe.nacks_forwarded == 1, "the NACK was handled")
        await _until(lambda: any(isinstance(p, rtcp.Nack) for p in publisher.rtcp), "the publisher was NACKed")
        (nack,) = [p for p in publisher.rtcp if isinstance(p, rtcp.Nack)]
        assert nack.media_ssrc == SSRCS[1] and nack.lost == [4000]
        await _until(lambda: far.pipes[0].rtp_received == 61, "the resent packet crossed")
    finally:
        await near.close()
        await far.close()


async def test_keyframe_requests_reach_the_publisher_through_its_throttle() -> None:
    near, far, publisher = await _linked()
    try:
        publisher.frames(0, 5)
        copy = far.pipes[0].remote["TR_cam"]
        await _until(lambda: copy.streams[2].ssrc is not None, "the f layer is mapped")
        now = time.monotonic()
        assert await copy.streams[2].request_keyframe(now)
        await _until(lambda: near.pipes[1].keyframe_requests == 1, "the PLI crossed")
        await _until(lambda: any(isinstance(p, rtcp.Pli) for p in publisher.rtcp), "the publisher got it")
        (pli,) = [p for p in publisher.rtcp if isinstance(p, rtcp.Pli)]
        assert pli.media_ssrc == SSRCS[2]
        # a crowd of far requests within 500 ms: the near side's throttle lets none more through
        for _ in range(20):
            await far.pipes[0].send_rtcp(rtcp.build_pli(1, SSRCS[2]))
        await _until(lambda: near.pipes[1].keyframe_requests == 21, "all crossed")
        await asyncio.sleep(0.05)
        assert sum(isinstance(p, rtcp.Pli) for p in publisher.rtcp) == 1
        assert publisher.producer.streams[2].keyframes.suppressed >= 20
    finally:
        await near.close()
        await far.close()


async def test_dynacast_keeps_the_layers_the_far_side_needs() -> None:
    near, far, publisher = await _linked()
    try:
        publisher.frames(0, 5)
        streams = publisher.producer.streams
        t = time.monotonic()
        near._dynacast(t)
        near._dynacast(t + DYNACAST_GRACE + 0.1)
        assert all(s.active for s in streams), "until the far side said, it needs every layer"
        copy = far.pipes[0].remote["TR_cam"]
        await _until(lambda: copy.streams[2].ssrc is not None, "mapped")
        copy.needed({0})  # its subscribers need only q
        await _until(lambda: near.pipes[1].needed.get("TR_cam") == 0b001, "CCLN crossed")
        near._dynacast(t + 10)
        near._dynacast(t + 10 + DYNACAST_GRACE + 0.1)
        assert [s.active for s in streams] == [True, False, False], "nobody anywhere needs h and f: paused"
        copy.needed({0, 2})  # a far student wants the top layer: resumed at once, not at the next tick
        await _until(lambda: streams[2].active, "f resumed")
        assert not streams[1].active
    finally:
        await near.close()
        await far.close()


async def test_track_changes_and_closing() -> None:
    near, far, publisher = await _linked()
    try:
        pipe = far.pipes[0]
        pipe.mute_remote("TR_cam", True)
        await _until(lambda: "TR_cam" in far.producers and far.producers["TR_cam"].muted, "mute mirrored")
        pipe.remove_remote("TR_cam")
        await _until(lambda: "TR_cam" not in far.producers, "unpublish mirrored")
        pipe.add_remote(describe(publisher.producer))  # a late description of a removed track
        await asyncio.sleep(0.05)
        assert "TR_cam" not in far.producers, "cannot revive it"
        await near.close_pipe(1)
        assert publisher.producer.pipes == [], "the near side stops sending"
        publisher.frames(0, 3)  # no error with the pipe gone
    finally:
        await near.close()
        await far.close()


async def test_garbage_on_the_pipe_is_counted_never_raised() -> None:
    near, far, publisher = await _linked()
    try:
        rng = random.Random(15)
        pipe = far.pipes[0]
        for _ in range(3000):
            size = rng.choice((0, 1, 2, 4, 8, 12, 13, 40, 200))
            data = bytearray(rng.randbytes(size))
            if size >= 2 and rng.random() < 0.5:
                data[0] = 0x80 | (data[0] & 0x3F)
                data[1] = rng.choice((200, 201, 204, 205, 206, 96, 0xE0))
            pipe._on_rtcp(bytes(data), 0.0) if size >= 2 and 192 <= data[1] <= 223 else pipe._on_rtp(bytes(data), 0.0)
            near.pipes[1]._on_rtcp(bytes(data), 0.0) if size >= 2 and 192 <= data[1] <= 223 else None
            _parse_app(bytes(data))
        publisher.frames(0, 3)  # and the pipe still carries the track
        copy = pipe.remote["TR_cam"]
        await _until(lambda: copy.streams[0].packets_in >= 3, "still working")
    finally:
        await near.close()
        await far.close()


async def test_only_the_other_end_is_heard() -> None:
    """Another local process sending to a pipe's port: dropped before the pipe is connected (read and counted at
    connect), and by the kernel after (a connected UDP socket)."""
    import socket

    near, far = Router("RM_pipe", IceConfig()), Router("RM_pipe", IceConfig())
    try:
        to_far, to_near = near.open_pipe(1), far.open_pipe(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(_vp8(1, 1, True, SSRCS[0]), ("127.0.0.1", to_near.port))
            to_far.connect(to_near.port)
            to_far._send(rtcp.build_pli(1, SSRCS[0]))  # the real other end, sent before this end connected
            await asyncio.sleep(0.05)
            to_near.connect(to_far.port)
            assert to_near.foreign == 1 and to_near.unknown_ssrc == 0
            stranger.sendto(_vp8(2, 2, True, SSRCS[0]), ("127.0.0.1", to_near.port))
            to_far._send(_vp8(3, 3, True, SSRCS[1]))
            await _until(lambda: to_near.unknown_ssrc == 1, "the other end's packet was read")
            await asyncio.sleep(0.05)
            assert to_near.unknown_ssrc == 1 and to_near.foreign == 1, "the stranger's second packet never came"
    finally:
        await near.close()
        await far.close()
