"""SIGKILL of an SFU worker mid-class: the control plane sees it at once, restarts it, tells the participants
`reconnecting`, and the Python clients join again by themselves; the sessions never closed."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from sfu.client import State, SyntheticVideoTrack
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size
from tests.workers.conftest import pool_of


async def test_sigkill_of_a_worker_the_class_goes_on(workers_room: Classroom) -> None:
    pool = pool_of(workers_room)
    teacher = await workers_room.client(await workers_room.create_room(), name="teacher", backoff=(0.1, 1.0))
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    student = await workers_room.client(await workers_room.token("physics-1", "s1"), name="s1", backoff=(0.1, 1.0))
    assert await _frame_size(await student.remote_track("camera")) == (320, 240)
    room_sid = next(iter(pool.rooms))
    holder = pool.rooms[room_sid]
    old_pid = holder.pid
    sessions_before = {s.id for s in await workers_room.svc.store.room_sessions(room_sid, active_only=True)}
    assert len(sessions_before) == 2
    deadline = time.monotonic() + 5  # the worker's load report (every wire.LOAD_PERIOD) has counted the media
    while not (counted := pool.metrics())["forwarded_packets"] or not counted["packets_in"]:
        assert time.monotonic() < deadline, "no load report counted the class's packets"
        await asyncio.sleep(0.05)

    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.wait_for(holder.down.wait(), 1.0)  # the loss is noticed within a second
    assert not holder.alive and time.monotonic() - killed < 1.0
    assert pool.lost_total == 1
    for client in (teacher, student):
        await client.wait_for("reconnecting", timeout=2)

    # the worker comes back as a new process; both clients join again and the student sees the camera again
    deadline = time.monotonic() + 15
    while not (holder.alive and holder.pid != old_pid):
        assert time.monotonic() < deadline, "the worker was not restarted"
        await asyncio.sleep(0.05)
    # /metrics' counters never fall: the new process starts from zero, the dead one's counts stay in the totals
    restarted = pool.metrics()
    for key in ("forwarded_packets", "forwarded_bytes", "packets_in"):
        assert restarted[key] >= counted[key], (key, restarted[key], counted[key])
    assert await teacher.wait_state(State.CONNECTED, timeout=15) == State.CONNECTED
    assert await student.wait_state(State.CONNECTED, timeout=15) == State.CONNECTED
    track = await student.remote_track("camera", timeout=15)
    assert await _frame_size(track, timeout=15) == (320, 240)
    assert pool.rooms[room_sid].alive
    deadline = time.monotonic() + 5  # and the new process's packets add to them
    while pool.metrics()["forwarded_packets"] <= restarted["forwarded_packets"]:
        assert time.monotonic() < deadline, "the restarted worker's packets were not counted"
        await asyncio.sleep(0.05)
    # rooms, sessions and credits: the same two sessions, still open (a reconnect is not a leave)
    sessions_after = {s.id for s in await workers_room.svc.store.room_sessions(room_sid, active_only=True)}
    assert sessions_after == sessions_before
    assert all(s.left_at is None for s in await workers_room.svc.store.room_sessions(room_sid))


async def test_a_hung_worker_is_killed_and_restarted(workers_room: Classroom) -> None:
    pool = pool_of(workers_room)
    teacher = await workers_room.client(await workers_room.create_room(), name="teacher", backoff=(0.1, 1.0))
    pool.hung_after = 2.0  # 10 s in service
    holder = next(iter(pool.rooms.values()))
    old_pid = holder.pid
    os.kill(old_pid, signal.SIGSTOP)  # alive but silent and using no CPU: its socket stays open
    stopped = time.monotonic()
    await asyncio.wait_for(holder.down.wait(), 5.0)
    # Not killed early: silence AND no CPU progress for hung_after (2 s), less up to one watch period (0.5 s)
    # between its last observed progress and the stop. Not late either: the wait above gives up at 5 s.
    assert time.monotonic() - stopped > 1.5
    await teacher.wait_for("reconnecting", timeout=2)
    assert await teacher.wait_state(State.CONNECTED, timeout=15) == State.CONNECTED
    deadline = time.monotonic() + 15
    while not (holder.alive and holder.pid != old_pid):
        assert time.monotonic() < deadline, "the worker was not restarted"
        await asyncio.sleep(0.05)


async def test_a_whip_session_ends_when_its_worker_dies(workers_room: Classroom) -> None:
    from control.api.whip import SESSIONS
    from sfu.whip_client import WhipClient

    token = await workers_room.create_room(customization={"allowIngress": True})
    encoder = WhipClient(workers_room.base + "/v1/whip/physics-1", token, ice=workers_room.svc.config.ice)
    await encoder.publish({"camera": SyntheticVideoTrack(160, 120, 15)})
    await encoder.wait_connected()
    sessions = workers_room.server.app[SESSIONS].sessions
    (session,) = sessions.values()
    pool = pool_of(workers_room)
    os.kill(pool.rooms[session.room_sid].pid, signal.SIGKILL)
    for _ in range(100):  # RFC 9725 has no way to move a session: it ends, the encoder POSTs again
        if not sessions:
            break
        await asyncio.sleep(0.05)
    assert not sessions
    for _ in range(100):  # the session's end is written right after it leaves the table
        stored = await workers_room.svc.store.get_session(session.session_id)
        if stored is not None and stored.left_at is not None:
            break
        await asyncio.sleep(0.05)
    assert stored is not None and stored.leave_reason == "disconnected"
    encoder.location = None
    await encoder.close()
