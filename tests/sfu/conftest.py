"""A real server on 127.0.0.1 with real aiortc clients: the SFU tests' world."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from control.app import create_app
from control.config import Config, TutorConfig
from control.services import SERVICES, Services
from control.store.records import Org
from sfu.client import Client


@dataclass
class Classroom:
    server: TestServer
    svc: Services
    org: Org
    clients: list[Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def rest(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.request(
                method, self.base + path, json=json, headers={"VF-ORG-ID": self.org.id}) as resp:
            return resp.status, await resp.json()

    async def create_room(self, room_id: str = "physics-1", **extra: Any) -> str:
        status, body = await self.rest("POST", "/v1/room/create", {
            "roomId": room_id, "title": "Physics", **extra,
            "participant": {"uid": "teacher", "name": "Marie", "role": "TEACHER"}})
        assert status == 200, body
        return body["data"]["token"]

    async def token(self, room_id: str, uid: str, role: str = "STUDENT") -> str:
        status, body = await self.rest("POST", f"/v1/room/{room_id}/join",
                                       {"participant": {"uid": uid, "name": uid.title(), "role": role}})
        assert status == 200, body
        return body["data"]["token"]

    async def client(self, token: str, **kw: Any) -> Client:
        c = Client(self.base, token, name=kw.pop("name", "client"), **kw)
        self.clients.append(c)
        await c.connect()
        return c


@pytest.fixture
def extra_routes() -> list[tuple[str, Any]]:
    """(path, handler) pairs a test directory adds to the app (the browser tests serve their page)."""
    return []


@pytest.fixture
async def classroom(aiohttp_server: Any, tmp_path: Path, extra_routes: list[tuple[str, Any]],
                    sfu_workers: int) -> AsyncIterator[Classroom]:
    # The deterministic fake tutor: the classroom page's AI panel is exercised without loading a model.
    with socket.socket() as probe:  # the port is chosen first so that iframeUrl names the real server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = dataclasses.replace(Config(data_dir=tmp_path / "data"), reconnect_grace_s=2.0, sfu_workers=sfu_workers,
                                 public_url=f"http://127.0.0.1:{port}", tutor=TutorConfig(llm_backend="fake"))
    app = await create_app(config, background=False)
    for path, handler in extra_routes:
        app.router.add_get(path, handler)
    server = await aiohttp_server(app, host="127.0.0.1", port=port)
    svc = app[SERVICES]
    org = await svc.store.create_org("SFU School", 100_000, svc.clock.now_ms())
    room = Classroom(server=server, svc=svc, org=org)
    yield room
    for c in room.clients:
        await c.close()
