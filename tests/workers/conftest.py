"""A real server on 127.0.0.1 whose media runs in SFU worker processes (CLASSCAST_SFU_WORKERS=2)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.app import create_app
from control.config import Config, TutorConfig
from control.services import SERVICES
from control.signaling import HUB
from control.workers import WorkerPool
from tests.recorder.conftest import Studio
from tests.sfu.conftest import Classroom


async def _serve(aiohttp_server: Any, tmp_path: Path, kind: type[Classroom],
                 routes: tuple[tuple[str, Any], ...] = (), workers: int = 2) -> Classroom:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = dataclasses.replace(Config(data_dir=tmp_path / "data"), reconnect_grace_s=5.0, sfu_workers=workers,
                                 public_url=f"http://127.0.0.1:{port}", tutor=TutorConfig(llm_backend="fake"))
    app = await create_app(config, background=False)
    for path, handler in routes:
        app.router.add_get(path, handler)
    server = await aiohttp_server(app, host="127.0.0.1", port=port)
    svc = app[SERVICES]
    assert isinstance(app[HUB].sfu, WorkerPool)
    assert await app[HUB].sfu.ready(), "the workers start with the server"  # their pids are read by the tests
    org = await svc.store.create_org("Worker School", 100_000, svc.clock.now_ms())
    return kind(server=server, svc=svc, org=org)


@pytest.fixture
async def workers_room(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Classroom]:
    room = await _serve(aiohttp_server, tmp_path, Classroom)
    yield room
    for c in room.clients:
        await c.close()


@pytest.fixture
async def three_workers_room(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Classroom]:
    """workers_room with three workers (a room spread over all of them: a mesh of pipes)."""
    room = await _serve(aiohttp_server, tmp_path, Classroom, workers=3)
    yield room
    for c in room.clients:
        await c.close()


@pytest.fixture
async def workers_page_room(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Classroom]:
    """workers_room serving the browser tests' SDK page (tests/e2e/conftest.py)."""
    from aiohttp import web

    from tests.e2e.conftest import TEST_PAGE

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=TEST_PAGE, content_type="text/html")

    room = await _serve(aiohttp_server, tmp_path, Classroom, (("/__e2e__", page),))
    yield room
    for c in room.clients:
        await c.close()


@pytest.fixture
async def workers_studio(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Studio]:
    """The recorder's test world (tests/recorder/conftest.py) with media in worker processes."""
    room = await _serve(aiohttp_server, tmp_path, Studio)
    assert isinstance(room, Studio)
    yield room
    for c in room.clients:
        await c.close()


def pool_of(room: Classroom) -> WorkerPool:
    pool = room.server.app[HUB].sfu
    assert isinstance(pool, WorkerPool)
    return pool
