"""PostgreSQL-only behaviour of the store: what a node does while its database server is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from control.app import build_services, create_app, media_ready
from control.clock import FakeClock
from control.config import Config
from control.services import SERVICES
from control.store import store as store_module
from control.store.store import Store
from control.webhooks.dispatcher import Dispatcher
from tests.pg import PostgresCluster


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own (the session's is shared: stopping it would fail other tests)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_a_database_server_that_goes_away_is_503_and_coming_back_heals(
        aiohttp_client: Any, tmp_path: Path, own_cluster: PostgresCluster) -> None:
    """PostgreSQL stops under a running app: REST calls that need it answer 503 DATABASE_UNAVAILABLE with
    Retry-After (not a 500), /readyz names the database; once it is back, the same calls succeed without a
    restart of classcast, and nothing written before is lost."""
    name = await own_cluster.create_database()
    config = Config(data_dir=tmp_path / "data", database_url=own_cluster.url(name))
    clock = FakeClock()
    app = await create_app(config, clock, background=False)
    client = await aiohttp_client(app)
    org = await app[SERVICES].store.create_org("School", 10_000, clock.now_ms())
    headers = {"VF-ORG-ID": org.id}
    body = {"roomId": "r1", "title": "Room", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}
    assert (await client.post("/v1/room/create", json=body, headers=headers)).status == 200

    own_cluster.stop_server()
    for _ in range(2):  # the pooled connection that died, then a new connection that cannot be made
        resp = await client.get("/v1/room/r1/status", headers=headers)
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"] == "DATABASE_UNAVAILABLE" and resp.headers["Retry-After"] == "1"
    resp = await client.get("/readyz")
    assert resp.status == 503 and not (await resp.json())["checks"]["database"]["ok"]

    own_cluster.start()
    resp = await client.get("/v1/room/r1/status", headers=headers)
    assert resp.status == 200 and (await resp.json())["data"]["exists"] is True
    body["roomId"] = "r2"
    assert (await client.post("/v1/room/create", json=body, headers=headers)).status == 200
    assert await media_ready(app)  # the SFU workers started with the app, in the background
    assert (await client.get("/readyz")).status == 200


async def test_a_room_held_by_a_stuck_node_is_503_after_the_lock_timeout_not_a_hang(
        aiohttp_client: Any, tmp_path: Path, postgres_cluster: PostgresCluster,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node holds a room's row lock and does not let go (stuck mid-transaction): ending that room here
    waits PG_LOCK_TIMEOUT_MS, then answers 503 DATABASE_UNAVAILABLE, as SQLite's busy timeout does, having changed
    nothing; once the lock is released the same call succeeds."""
    monkeypatch.setattr(store_module, "PG_LOCK_TIMEOUT_MS", 300)  # 5 s in production
    name = await postgres_cluster.create_database()
    url = postgres_cluster.url(name)
    clock = FakeClock()
    app = await create_app(Config(data_dir=tmp_path / "data", database_url=url), clock, background=False)
    client = await aiohttp_client(app)
    store = app[SERVICES].store
    org = await store.create_org("School", 10_000, clock.now_ms())
    headers = {"VF-ORG-ID": org.id}
    body = {"roomId": "r1", "title": "Room", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}
    assert (await client.post("/v1/room/create", json=body, headers=headers)).status == 200
    room = await store.get_room(org.id, "r1")
    assert room is not None
    stuck = await Store.open(url)
    held, release = asyncio.Event(), asyncio.Event()

    async def stuck_node() -> None:
        async with stuck.atomic():
            await stuck.lock_room(room.sid)
            held.set()
            await release.wait()

    task = asyncio.create_task(stuck_node())
    try:
        await held.wait()
        started = time.monotonic()
        resp = await client.delete("/v1/room/r1", headers=headers)
        waited = time.monotonic() - started
        assert resp.status == 503 and (await resp.json())["error"] == "DATABASE_UNAVAILABLE", await resp.text()
        assert 0.3 <= waited < 3
        assert not (await store.get_room(org.id, "r1")).ended  # type: ignore[union-attr]
    finally:
        release.set()
        await task
        await stuck.close()
    resp = await client.delete("/v1/room/r1", headers=headers)
    assert resp.status == 200, await resp.text()
    await postgres_cluster.drop_database(name)


async def test_a_stop_whose_cancel_lands_inside_a_query_still_ends_the_webhook_dispatcher(
        tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    """A node's stop cancels its webhook dispatcher while the dispatcher waits on PostgreSQL (here: another
    connection holds a lock on its table). SQLAlchemy hands the cancel back as its own OperationalError, which the
    dispatcher's loop logs like any failed look; the stop must still end it, within a second or so (a draining node
    once waited 20 s here and exited with status 1)."""
    name = await postgres_cluster.create_database()
    config = Config(data_dir=tmp_path / "data", database_url=postgres_cluster.url(name))
    svc = await build_services(config, FakeClock())
    locker = await asyncpg.connect(postgres_cluster.dsn(name))
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
        dispatcher = Dispatcher(svc.classroom.outbox, config.webhooks, svc.clock)
        await dispatcher.start()
        await asyncio.sleep(0.5)  # its first look waits on the lock
        locks = await _waiting_on_locks(postgres_cluster, name)
        assert locks >= 1, "the dispatcher's look is not waiting on the lock: the cancel would not land in it"
        started = time.monotonic()
        stopping = asyncio.create_task(dispatcher.stop())  # not wait_for: a stop that hangs may not be cancellable
        await asyncio.wait({stopping}, timeout=10)
        took = time.monotonic() - started
        await tx.rollback()
        assert stopping.done() and took < 3, f"the dispatcher's stop did not end ({took:.1f} s)"
    finally:
        await locker.close()
        await svc.store.close()
        if svc.live is not None:
            await svc.live.close()
        await postgres_cluster.drop_database(name)


async def _waiting_on_locks(cluster: PostgresCluster, name: str) -> int:
    """How many sessions of database `name` wait on a lock now."""
    conn = await asyncpg.connect(cluster.dsn(name))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", name))
    finally:
        await conn.close()
