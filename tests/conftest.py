"""Shared fixtures: a real app on a real database, a fake clock, and an org with credits.

The database is SQLite in the test's folder, except in modules marked `both_databases`: their tests run twice,
on SQLite and on a real PostgreSQL (a private cluster `tests/pg.py` starts once per session, one database per
test).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from control.app import create_app
from control.clock import FakeClock
from control.config import Config
from control.events import Event
from control.services import SERVICES, Services
from control.store.records import Org
from tests.pg import PostgresCluster
from tests.redis_server import RedisServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# The tests that need the machine to themselves. `make test` runs everything else first on two workers (xdist),
# then these one at a time: they drive browsers, hold a recording's audio to its video or a student's video to a
# freeze bound, measure CPU or latency, or make network namespaces, and a test beside them on the other core would
# make those checks about the machine instead of the code. Any other test must pass with another one beside it.
# (Whisper runs on one thread, its tests wait up to a minute and check words and caption times from the voice's
# arrival, so they share.)
ALONE = (
    "tests/e2e/",  # Chromium and Firefox: their encoders and bandwidth estimates
    "tests/bench/",  # CPU per packet, loss, latency
    "tests/net/test_namespaces.py", "tests/cluster/test_netns.py",  # network namespaces and nft rules
    "tests/cluster/test_browser.py", "tests/workers/test_pipe_browser.py", "tests/workers/test_worker_death_browser.py",
    "tests/recorder/test_browser_publishers.py", "tests/recorder/test_recording_media.py",  # A/V sync in the file
    "tests/recorder/test_captions_recording.py", "tests/workers/test_pipe_recording.py",
    "tests/workers/test_worker_recording.py",
    "tests/sfu/test_hostile_peers.py", "tests/sfu/test_forwarding.py",  # a student's video within a freeze bound
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(ALONE):
            item.add_marker(pytest.mark.alone)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_live"):
        metafunc.parametrize("redis_url", ["memory", "redis"], indirect=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The test's database as `Config.database_url`: "" (SQLite in the data folder, the default) or a fresh
    PostgreSQL database of the session's cluster, dropped afterwards. CLASSCAST_TEST_DATABASE=postgresql runs
    every test that is not marked `both_databases` on PostgreSQL too (a longer run, for store changes)."""
    engine = getattr(request, "param", os.environ.get("CLASSCAST_TEST_DATABASE", "sqlite"))
    if engine not in ("sqlite", "postgresql"):
        raise ValueError(f"CLASSCAST_TEST_DATABASE must be sqlite or postgresql, not {engine!r}")
    if engine == "sqlite":
        yield ""
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = await cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        await cluster.drop_database(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The test's `Config.redis_url`: "" (one node's memory, the default) or the session's Redis, emptied."""
    if getattr(request, "param", "memory") == "memory":
        yield ""
        return
    import redis.asyncio as aioredis

    server: RedisServer = request.getfixturevalue("redis_server")
    client = aioredis.Redis.from_url(server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    yield server.url


@pytest.fixture
def sfu_workers(request: pytest.FixtureRequest) -> int:
    """The test server's `Config.sfu_workers`: the default (one worker process per core, as `classcast serve` runs),
    or 0 (media in the server process) for a test marked `in_process_sfu` with its reason: it reads the SFU's own
    objects, which live in another process otherwise."""
    marker = request.node.get_closest_marker("in_process_sfu")
    if marker is not None:
        assert marker.args and marker.args[0], "say why the test needs the SFU in-process"
        return 0
    return Config().sfu_workers


@pytest.fixture
def config(tmp_path: Path, database_url: str, redis_url: str, sfu_workers: int) -> Config:
    return Config(data_dir=tmp_path / "data", public_url="https://class.example.test", database_url=database_url,
                  redis_url=redis_url, sfu_workers=sfu_workers)


@dataclass
class Api:
    """A client that speaks to the app as an integrator's backend does (VF-ORG-ID on every call)."""

    client: TestClient
    svc: Services
    org: Org
    clock: FakeClock
    events: list[Event] = field(default_factory=list)

    def _h(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"VF-ORG-ID": self.org.id, **(headers or {})}

    async def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
        resp = await self.client.get(path, headers=self._h(headers), **kw)
        return resp.status, await resp.json()

    async def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[int, Any]:
        resp = await self.client.post(path, json=json, headers=self._h(headers), **kw)
        return resp.status, await resp.json()

    async def delete(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        resp = await self.client.delete(path, headers=self._h(headers))
        return resp.status, await resp.json()

    async def create_room(self, room_id: str = "math-101", **extra: Any) -> dict[str, Any]:
        body = {
            "roomId": room_id, "title": "Calculus I - Morning Session",
            "participant": {"uid": "teacher-1", "name": "Ada", "role": "TEACHER"}, **extra,
        }
        status, data = await self.post("/v1/room/create", body)
        assert status == 200, data
        return data["data"]

    async def join(self, room_id: str, uid: str, role: str = "STUDENT", name: str | None = None) -> dict[str, Any]:
        status, data = await self.post(
            f"/v1/room/{room_id}/join", {"participant": {"uid": uid, "name": name or uid, "role": role}}
        )
        assert status == 200, data
        return data["data"]

    async def room(self, room_id: str):  # type: ignore[no-untyped-def]
        room = await self.svc.store.get_room(self.org.id, room_id)
        assert room is not None
        return room

    async def refresh_org(self) -> Org:
        org = await self.svc.store.get_org(self.org.id)
        assert org is not None
        self.org = org
        return org


@pytest.fixture
async def api(aiohttp_client: Any, config: Config, clock: FakeClock) -> AsyncIterator[Api]:
    app = await create_app(config, clock, background=False)
    client = await aiohttp_client(app)
    svc = app[SERVICES]
    org = await svc.store.create_org("Test School", 10_000, clock.now_ms())
    api = Api(client=client, svc=svc, org=org, clock=clock)
    svc.bus.subscribe(api.events.append)
    yield api
