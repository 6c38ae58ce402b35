"""Chaos: the database locked for a while by another process (a backup, a migration, an operator's shell): REST
calls get 503 DATABASE_UNAVAILABLE with Retry-After instead of a 500, nothing is half-written, and the same calls
succeed once the lock is gone. Reads and the running classes are not held up (SQLite's WAL lets readers on)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

import pytest

from tests.conftest import Api


def _teacher(room_id: str) -> dict[str, object]:
    return {"roomId": room_id, "title": "T", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}


async def test_a_locked_database_is_503_then_success_and_nothing_half_written(api: Api) -> None:
    await api.create_room("running")
    db = sqlite3.connect(api.svc.config.data_dir / "classcast.db", timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")  # every writer now waits, then gives up after the store's busy timeout
        started = time.monotonic()
        create = asyncio.create_task(api.client.post("/v1/room/create", json=_teacher("locked"),
                                                     headers={"VF-ORG-ID": api.org.id}))
        # Meanwhile the server answers reads at once: the wait is in the store's thread, not the event loop.
        await asyncio.sleep(0.5)
        status, body = await api.get("/v1/room/running/status")
        assert status == 200 and time.monotonic() - started < 3, body
        resp = await create
        body = await resp.json()
        assert resp.status == 503, body
        assert body["code"] == "DATABASE_UNAVAILABLE" and resp.headers["Retry-After"] == "1"
        join = await api.client.post("/v1/room/running/join", json={"participant": {
            "uid": "s1", "name": "S", "role": "STUDENT"}}, headers={"VF-ORG-ID": api.org.id})
        assert join.status == 503
    finally:
        db.execute("ROLLBACK")
        db.close()
    # Nothing of the refused calls was written: the same calls now succeed as if they were the first.
    assert await api.svc.store.get_room(api.org.id, "locked") is None
    status, body = await api.post("/v1/room/create", _teacher("locked"))
    assert status == 200, body
    room = await api.room("running")
    assert await api.svc.store.get_participant(room.sid, "s1") is None
    await api.join("running", "s1")
    rooms = [r for r in (await api.get("/v1/rooms"))[1]["data"]["rooms"] if r["roomId"] in ("locked", "running")]
    assert sorted(r["roomId"] for r in rooms) == ["locked", "running"]


async def test_the_failover_sweep_waits_for_a_locked_database_with_a_warning(
        api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """operations.md: a locked database is a warning, not an error with a 108-line traceback per beat."""
    failover = api.svc.failover
    assert failover is not None
    db = sqlite3.connect(api.svc.config.data_dir / "classcast.db", timeout=0, isolation_level=None)
    monkeypatch.setattr(failover, "interval_s", 0.05)
    caplog.set_level(logging.WARNING, logger="classcast.failover")
    try:
        db.execute("BEGIN EXCLUSIVE")
        task = asyncio.create_task(failover.run())
        for _ in range(400):  # the beat's write waits out the store's busy timeout, then gives up
            if any(r.levelno == logging.WARNING for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        db.execute("ROLLBACK")
        db.close()
    records = [r for r in caplog.records if r.name == "classcast.failover"]
    assert records and all(r.levelno == logging.WARNING and not r.exc_info for r in records), records
    assert "waits for the database" in records[0].getMessage() and "locked" in records[0].getMessage()
