"""The room's report loop (sfu/router.py): it sleeps through the 20 ms ticks where nothing is due, but a packet a
publisher lost is still asked for at the first tick after the gap (issue 21: CPU per forwarded packet)."""

from __future__ import annotations

import asyncio
import struct
import time

from sfu import rtcp
from sfu.codecs import VP8, CodecInfo
from sfu.ice import IceConfig
from sfu.producer import Producer
from sfu.router import NACK_INTERVAL, Router
from sfu.rtp import parse_rtp

SSRC = 4242


def _packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, SSRC) + bytes([0x10, 0x01, 0, 0]) + bytes(100)


async def test_the_report_loop_sleeps_through_empty_ticks_and_nacks_a_gap_at_the_next_tick() -> None:
    sent: list[bytes] = []

    async def send_rtcp(data: bytes) -> bool:
        sent.append(data)
        return True

    camera = Producer("TR_cam", "teacher-key", "teacher", "camera", "0", CodecInfo(VP8, 90000, 96), SSRC, None, None,
                      7, send_rtcp)
    router = Router("RM_ticks", IceConfig())
    await router.add_producer(camera)
    wakes: list[float] = []
    tick = camera.tick

    async def counted(now: float) -> None:
        wakes.append(now)
        await tick(now)

    camera.tick = counted  # type: ignore[method-assign]
    stream = camera.streams[0]
    router._task = asyncio.create_task(router._reports())
    try:
        seq = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # a second of packets, none lost
            data = _packet(seq)
            camera.on_rtp(stream, data, parse_rtp(data), time.monotonic())
            seq += 1
            await asyncio.sleep(0.01)
        idle_wakes = len(wakes)
        assert 5 <= idle_wakes <= 25, idle_wakes  # every third tick (the publisher feedback's), not all 50

        for _ in range(2000):  # the loop sleeps over ticks ...
            if router._skipping:
                break
            await asyncio.sleep(0.001)
        assert router._skipping and router._wake is not None
        loop = asyncio.get_running_loop()
        data = _packet(seq + 1)  # ... when packet `seq` goes missing
        camera.on_rtp(stream, data, parse_rtp(data), time.monotonic())
        assert router._wake.when() - loop.time() <= NACK_INTERVAL + 0.002  # woken at the next tick
        deadline = time.monotonic() + 2
        while not any(isinstance(p, rtcp.Nack) and seq in p.lost for d in sent for p in rtcp.parse_rtcp(d)):
            assert time.monotonic() < deadline, "the missing packet was never asked for"
            await asyncio.sleep(0.005)
    finally:
        await router.close()
