"""Shared fixtures: a real app on a real SQLite file, a fake clock, and an org with credits."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path / "data", public_url="https://class.example.test")


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
