"""Media in worker processes: aiortc peers through a worker, placement by measured load, stats per worker."""

from __future__ import annotations

import asyncio
import os

from sfu.client import SyntheticVideoTrack, ToneAudioTrack
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size
from tests.workers.conftest import pool_of


async def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_class_runs_through_a_worker_process(workers_room: Classroom) -> None:
    pool = pool_of(workers_room)
    pids = {w.pid for w in pool.workers}
    ports = {w.port for w in pool.workers}
    assert len(pids) == 2 and os.getpid() not in pids, "each worker is its own process"
    assert len(ports) == 2 and 0 not in ports, "each worker listens on its own UDP port"
    teacher = await workers_room.client(await workers_room.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240), "microphone": ToneAudioTrack()})
    student = await workers_room.client(await workers_room.token("physics-1", "s1"), name="s1")
    assert await _frame_size(await student.remote_track("camera")) == (320, 240)
    room_sid = next(iter(pool.rooms))
    holder = pool.rooms[room_sid]
    # the student's media comes from the worker's port, not from this process
    remote = student.pc.remoteDescription.sdp  # type: ignore[union-attr]
    assert f" {holder.port} typ host" in remote
    await _wait(lambda: pool.metrics()["workers"][holder.index]["forwarded_packets"] > 100)
    metrics = pool.metrics()
    other = metrics["workers"][1 - holder.index]
    assert other["forwarded_packets"] == 0
    assert metrics["forwarded_packets"] >= metrics["workers"][holder.index]["forwarded_packets"]
    stats = await pool.room_stats(room_sid)
    assert stats["participants"] == 2 and {t["source"] for t in stats["tracks"]} == {"camera", "microphone"}

