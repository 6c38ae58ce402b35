"""Webhooks lose nothing (issue 17, requirement 3): a receiver that is down, then slow, then answering 500, then
fine, across a real `classcast serve` that is killed (SIGKILL) and started again on the same database.

Every event arrives, in order per room, each at least once under a stable `webhook-id`, and every signature
verifies with the `standardwebhooks` package.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from tests.control.serverproc import Receiver, Server, free_port

pytestmark = pytest.mark.both_databases  # the killed server's outbox and sessions on SQLite and PostgreSQL

ENV = {"CLASSCAST_WEBHOOK_RETRY_BASE": "0.2", "CLASSCAST_WEBHOOK_RETRY_MAX": "0.5",
       "CLASSCAST_WEBHOOK_TIMEOUT": "1", "CLASSCAST_LLM_BACKEND": "fake", "CLASSCAST_RECONNECT_GRACE": "0"}


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


async def _rest(session: aiohttp.ClientSession, server: Server, method: str, path: str, body: Any = None) -> Any:
    async with session.request(method, server.base + path, json=body, headers={"VF-ORG-ID": server.org}) as r:
        payload = await r.json()
        assert r.status in (200, 201), payload
        return payload["data"]


async def _joined(session: aiohttp.ClientSession, server: Server, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{server.base.replace('http', 'ws')}/v1/rtc?token={token}")
    await ws.send_json({"type": "join"})
    while True:
        msg = json.loads((await ws.receive(timeout=20)).data)
        if msg["type"] == "joined":
            return ws
        assert msg["type"] != "error", msg


async def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_receiver_down_slow_failing_then_fine_across_a_restart(tmp_path: Path, servers: list[Server],
                                                                    database_url: str) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    env = {**ENV, "CLASSCAST_DATABASE_URL": database_url}
    hook_port = free_port()  # nothing listens there during the first run: the receiver is down
    first = await asyncio.to_thread(Server, data_dir, log, env)
    servers.append(first)
    async with aiohttp.ClientSession() as session:
        endpoint = await _rest(session, first, "POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{hook_port}/hook"})
        secret = endpoint["secret"]
        teacher = await _rest(session, first, "POST", "/v1/room/create", {
            "roomId": "algebra", "title": "Algebra", "participant": {"uid": "t1", "name": "Ada", "role": "TEACHER"}})
        student = await _rest(session, first, "POST", "/v1/room/algebra/join",
                              {"participant": {"uid": "s1", "name": "Sam", "role": "STUDENT"}})
        biology = await _rest(session, first, "POST", "/v1/room/create", {
            "roomId": "biology", "title": "Biology", "participant": {"uid": "t2", "name": "Bo", "role": "TEACHER"}})
        ws_t1 = await _joined(session, first, teacher["token"])
        ws_s1 = await _joined(session, first, student["token"])
        ws_t2 = await _joined(session, first, biology["token"])
        await ws_s1.send_json({"type": "leave"})
        await ws_s1.close()

        async def pending() -> list[dict[str, Any]]:
            return (await _rest(session, first, "GET", f"/v1/webhooks/{endpoint['id']}/deliveries"))["deliveries"]

        deadline = time.monotonic() + 20
        while True:  # the receiver is down: the first attempts fail and are rescheduled
            rows = await pending()
            if len(rows) == 6 and any(r["attempts"] >= 2 for r in rows):
                break
            assert time.monotonic() < deadline, json.dumps(rows)
            await asyncio.sleep(0.2)
        assert all(r["status"] == "pending" for r in rows)
        assert {r["lastError"] for r in rows if r["attempts"]} and all(r["lastStatus"] is None for r in rows)
        first.proc.kill()  # a crash: nothing gets to finish cleanly
        first.proc.wait(10)
        for ws in (ws_t1, ws_t2):
            await ws.close()

    receiver = Receiver(hook_port, ["slow"] * 2 + ["500"] * 3)
    receiver.start()
    try:
        second = await asyncio.to_thread(Server, data_dir, log, env)
        servers.append(second)
        async with aiohttp.ClientSession() as session:
            ended = await _rest(session, second, "DELETE", "/v1/room/algebra")
            assert ended["roomId"] == "algebra"
            expected = {
                "algebra": [("room_started", None), ("participant_joined", "t1"), ("participant_joined", "s1"),
                            ("participant_left", "s1"), ("participant_left", "t1"), ("room_finished", None)],
                "biology": [("room_started", None), ("participant_joined", "t2"), ("participant_left", "t2")],
            }
            total = sum(len(v) for v in expected.values())
            await _wait_for(lambda: len({h["webhook-id"] for h, _ in receiver.accepted()}) >= total, 60,
                            f"not every event arrived: {[(m, b[:80]) for m, _, b in receiver.got]}")
        second.stop(signal.SIGINT)
    finally:
        receiver.stop()

    modes = [mode for mode, _, _ in receiver.got]
    assert modes[:5] == ["slow", "slow", "500", "500", "500"]  # it really was slow, then failing
    wh = Webhook(secret)
    bodies: dict[str, bytes] = {}
    for _mode, headers, body in receiver.got:
        wh.verify(body, headers)  # every attempt is signed, the failed ones too
        assert bodies.setdefault(headers["webhook-id"], body) == body  # a stable id names one event
    first_arrival: dict[str, list[tuple[str, str | None]]] = {}
    seen: set[str] = set()
    for headers, body in receiver.accepted():
        if headers["webhook-id"] in seen:
            continue
        seen.add(headers["webhook-id"])
        payload = json.loads(body)
        uid = (payload["data"].get("participant") or {}).get("uid")
        first_arrival.setdefault(payload["data"]["roomId"], []).append((payload["type"], uid))
    assert first_arrival == expected
    left = {json.loads(b)["data"]["participant"]["uid"]: json.loads(b)["data"]["reason"]
            for _, b in receiver.accepted() if json.loads(b)["type"] == "participant_left"}
    assert left == {"s1": "left", "t1": "server_restart", "t2": "server_restart"}
