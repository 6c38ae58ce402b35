"""Credits: debited as session time accrues, 402 below 100 to start, negative balances while a class runs."""

from __future__ import annotations

import pytest

from control.app import build_services
from control.config import Config
from tests.conftest import Api

pytestmark = pytest.mark.both_databases  # and the store under them: SQLite and PostgreSQL


async def _balance(api: Api) -> int:
    return (await api.refresh_org()).credits


async def test_credits_accrue_while_the_class_runs_and_at_leave(api: Api) -> None:
    await api.create_room()
    start = await _balance(api)
    room = await api.room("math-101")
    c = api.svc.classroom
    teacher = await c.open_session(room.sid, "teacher-1")
    await api.join("math-101", "s1")
    student = await c.open_session(room.sid, "s1")

    api.clock.advance(45)  # 90 participant-seconds
    await c.tick()
    assert await _balance(api) == start - 2
    api.clock.advance(15)  # 120 s: exactly 2 credits, nothing new
    await c.tick()
    assert await _balance(api) == start - 2
    api.clock.advance(10)  # 140 s
    await c.close_session(student.id)  # leave bills at once, without waiting for a tick
    assert await _balance(api) == start - 3
    api.clock.advance(100)  # teacher alone: 140 + 100 = 240 s
    await c.close_session(teacher.id)
    assert await _balance(api) == start - 4

    _status, body = await api.get("/v1/room/math-101/summary")
    assert body["data"]["totalCredits"] == 4  # billing and the summary are the same number
    ledger = [e for e in await api.svc.store.ledger(api.org.id) if e["reason"] == "room_usage"]
    assert sum(-e["delta"] for e in ledger) == 4
    assert all(e["room_sid"] == room.sid for e in ledger)


async def test_class_start_needs_100_credits(api: Api) -> None:
    poor = await api.svc.store.create_org("Poor School", 99, api.clock.now_ms())
    status, body = await api.post("/v1/room/create", {
        "roomId": "r", "title": "x", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}},
        headers={"VF-ORG-ID": poor.id})
    assert status == 402
    assert body["message"] == "Insufficient credits. Minimum 100 required to start a class."
    assert body["success"] is False and body["status"] == 402


async def test_balance_may_go_negative_while_a_class_runs(api: Api) -> None:
    store = api.svc.store
    await api.create_room()
    room = await api.room("math-101")
    # leave exactly 100 credits
    await store.add_credits(api.org.id, 100 - await _balance(api), "test", api.clock.now_ms())
    c = api.svc.classroom
    await c.open_session(room.sid, "teacher-1")
    for i in range(3):
        await api.join("math-101", f"s{i}")
        await c.open_session(room.sid, f"s{i}")
    api.clock.advance(30 * 60)  # 4 people x 30 min = 120 credits
    await c.tick()
    assert await _balance(api) == -20
    # the class goes on: a late student can still join a running class
    await api.join("math-101", "late")
    await c.open_session(room.sid, "late")
    status, body = await api.get("/v1/billing/balance")
    assert status == 200 and body["message"] == "Balance retrieved successfully"
    assert body["data"] == {
        "type": "PREPAID", "status": "OVERCONSUMED", "remainingCredits": -20, "displayCredits": 20,
        "isOverconsumed": True, "creditRate": 0.01, "estimatedValue": 0.2, "currency": "USD",
        "message": "Account has overconsumed 20 credits. Please add more credits.",
    }
    # but a new class cannot start, neither by create nor by joining a room that never started
    status, body = await api.post("/v1/room/create", {
        "roomId": "r2", "title": "x", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    assert status == 402
    await store.add_credits(api.org.id, 200, "test", api.clock.now_ms())
    await api.create_room("r3")
    await store.add_credits(api.org.id, -200, "test", api.clock.now_ms())
    status, body = await api.post("/v1/room/r3/join", {"participant": {"uid": "s", "name": "S", "role": "STUDENT"}})
    assert status == 402


async def test_balance_when_active(api: Api) -> None:
    _status, body = await api.get("/v1/billing/balance")
    assert body["data"]["status"] == "ACTIVE" and body["data"]["remainingCredits"] == 10_000
    assert body["data"]["message"] == "Account has 10000 credits remaining."
    assert body["data"]["estimatedValue"] == 100.0


async def test_sessions_left_open_by_a_crash_end_at_the_last_heartbeat(api: Api, config: Config) -> None:
    await api.create_room()
    room = await api.room("math-101")
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    api.clock.advance(120)
    await api.svc.classroom.tick()  # heartbeat at +120 s
    api.clock.advance(3600)  # the process died; an hour later it starts again
    svc2 = await build_services(config, api.clock)
    try:
        assert not await svc2.store.room_sessions(room.sid, active_only=True)
        sessions = await svc2.store.room_sessions(room.sid)
        assert sessions[0].duration_ms(api.clock.now_ms()) == 120_000
        assert sessions[0].leave_reason == "server_restart"
        summary = await svc2.classroom.summary(api.org, "math-101")
        assert summary["totalCredits"] == 2
    finally:
        await svc2.store.close()
