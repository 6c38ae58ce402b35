"""A new room goes to the worker with the least measured load (forwarded packets per second), not the fewest
rooms; operators see each worker's pid, port and load in the log and in /metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from control.workers import WorkerPool
from sfu.client import Client, SyntheticVideoTrack
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size
from tests.workers.conftest import pool_of


async def _room(room: Classroom, pool: WorkerPool, room_id: str) -> tuple[Client, int]:
    """A room with its teacher connected (idle: nothing published); returns the worker index that took it."""
    before = set(pool.rooms)
    teacher = await room.client(await room.create_room(room_id), name=room_id)
    (sid,) = set(pool.rooms) - before
    return teacher, pool.rooms[sid].index


async def test_new_rooms_go_to_the_least_loaded_worker(workers_room: Classroom, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="classcast.workers")
    pool = pool_of(workers_room)
    _, first = await _room(workers_room, pool, "idle-1")
    busy_teacher, busy = await _room(workers_room, pool, "busy")
    assert busy != first, "with no load yet, the second room goes to the worker with nobody on it"
    await busy_teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    student = await workers_room.client(await workers_room.token("busy", "s1"), name="s1")
    await _frame_size(await student.remote_track("camera"))
    deadline = asyncio.get_running_loop().time() + 10
    while pool.workers[busy].pps < 20:  # the busy worker's report shows it forwarding
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    _, third = await _room(workers_room, pool, "idle-2")
    _, fourth = await _room(workers_room, pool, "idle-3")
    # by room count the fourth room would go to the busy worker (1 room there, 2 on the other); by load it does not
    assert third == first and fourth == first
    placed = [r.getMessage() for r in caplog.records if "placed on SFU worker" in r.getMessage()]
    assert len(placed) == 4

    # the operator's view: the log line per worker and the per-worker metrics
    caplog.clear()
    pool.log_load()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SFU worker")]
    assert len(lines) == 2
    for w in pool.workers:
        assert any(f"pid {w.pid}, UDP port {w.port}" in line for line in lines)
    assert "packets/s" in lines[busy] and not lines[busy].split(", ")[3].startswith("0 packets/s")
    async with aiohttp.ClientSession() as session, session.get(workers_room.base + "/metrics") as resp:
        text = await resp.text()
    forwarded = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("classcast_sfu_worker_forwarded_packets_total{")}
    assert forwarded[str(busy)] > 0 and forwarded[str(first)] == 0
    assert f'classcast_sfu_worker_up{{worker="{busy}"}} 1.0' in text
    total = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("classcast_sfu_forwarded_packets_total "))
    assert total >= forwarded[str(busy)]
    received = next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("classcast_sfu_received_packets_total "))
    assert received > 0, "the publishers' packets, counted in the worker"
