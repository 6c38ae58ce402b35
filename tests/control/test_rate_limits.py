"""REST rate limits on room creation and joins, per organization and per address (issue 13): 429 with
Retry-After, then success once the bucket refilled; nothing of a refused request is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from control.app import create_app
from control.clock import FakeClock
from control.config import Config
from control.ratelimit import Limiter, RateLimits
from control.services import SERVICES
from tests.conftest import Api

pytestmark = pytest.mark.both_live  # the buckets in this process, and in Redis (control/shared/limits.py)


async def _api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, limits: RateLimits, redis_url: str) -> Api:
    config = dataclasses.replace(Config(data_dir=tmp_path / "data", redis_url=redis_url), rate_limits=limits)
    app = await create_app(config, clock, background=False)
    client = await aiohttp_client(app)
    svc = app[SERVICES]
    org = await svc.store.create_org("Busy School", 1_000_000, clock.now_ms())
    return Api(client=client, svc=svc, org=org, clock=clock)


def _teacher(room_id: str) -> dict[str, Any]:
    return {"roomId": room_id, "title": "T", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}


async def test_room_creation_is_limited_per_organization(aiohttp_client: Any, tmp_path: Path, redis_url: str,
                                                         clock: FakeClock) -> None:
    api = await _api(aiohttp_client, tmp_path, clock, RateLimits(room_create_per_org=3, room_create_per_address=0),
                     redis_url)
    for i in range(3):
        status, _ = await api.post("/v1/room/create", _teacher(f"r{i}"))
        assert status == 200
    resp = await api.client.post("/v1/room/create", json=_teacher("r3"), headers={"VF-ORG-ID": api.org.id})
    body = await resp.json()
    assert resp.status == 429 and body["code"] == "RATE_LIMITED" and body["error"] == "RATE_LIMITED"
    assert body["success"] is False and "organization" in body["message"]
    assert resp.headers["Retry-After"] == "20"  # 3 a minute: one token every 20 s
    assert await api.svc.store.get_room(api.org.id, "r3") is None  # nothing half-written
    # Another organization is not held back by this one.
    other = await api.svc.store.create_org("Quiet School", 1_000_000, clock.now_ms())
    resp = await api.client.post("/v1/room/create", json=_teacher("q1"), headers={"VF-ORG-ID": other.id})
    assert resp.status == 200
    clock.advance(20)
    status, _ = await api.post("/v1/room/create", _teacher("r3"))
    assert status == 200


async def test_joins_are_limited_per_address(aiohttp_client: Any, tmp_path: Path, clock: FakeClock,
                                             redis_url: str) -> None:
    api = await _api(aiohttp_client, tmp_path, clock, RateLimits(join_per_org=0, join_per_address=2), redis_url)
    await api.create_room("class")
    await api.join("class", "s1")
    await api.join("class", "s2")
    resp = await api.client.post("/v1/room/class/join", json={"participant": {"uid": "s3", "name": "S",
                                                                              "role": "STUDENT"}},
                                 headers={"VF-ORG-ID": api.org.id})
    assert resp.status == 429 and "address" in (await resp.json())["message"]
    assert int(resp.headers["Retry-After"]) == 30
    room = await api.room("class")
    assert await api.svc.store.get_participant(room.sid, "s3") is None
    clock.advance(30)
    await api.join("class", "s3")


@pytest.mark.parametrize("name, value", [("CLASSCAST_RATE_ROOM_CREATE_ORG", "7"),
                                         ("CLASSCAST_RATE_JOIN_ADDRESS", "0")])
def test_limits_come_from_the_environment(name: str, value: str) -> None:
    limits = Config.from_env({name: value}).rate_limits
    field = {"CLASSCAST_RATE_ROOM_CREATE_ORG": "room_create_per_org",
             "CLASSCAST_RATE_JOIN_ADDRESS": "join_per_address"}[name]
    assert getattr(limits, field) == int(value)
    assert Config.from_env({}).rate_limits == RateLimits()


def test_the_bucket_table_is_bounded() -> None:
    limiter = Limiter(per_minute=10, max_keys=100)
    for i in range(10_000):
        assert limiter.take(f"198.18.{i // 256}.{i % 256}", now=i * 0.001) == 0
    assert len(limiter) <= 100
    # Buckets that refilled are forgotten as new requests come.
    limiter.take("a", 1000.0)
    limiter.take("b", 1000.0)
    assert len(limiter) < 100
