"""What several nodes share through Redis (issue 18 requirement 2): the event bus and the rate limits, against a
real redis-server the tests start (tests/redis_server.py), and control/wiring.py choosing them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from control.app import create_app
from control.clock import FakeClock
from control.config import Config
from control.events import Event, EventBus
from control.services import SERVICES
from control.shared.bus import RedisEventBus
from control.shared.limits import RedisLimiter
from control.signaling import HUB
from control.wiring import build_live
from tests.conftest import Api
from tests.pg import PostgresCluster
from tests.redis_server import RedisServer


def _event(type_: str, n: int = 0) -> Event:
    return Event(type=type_, org_id="org", room_id="r1", room_sid="RM_1", data={"n": n, "text": "é ✓"})


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), what


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    c = aioredis.Redis.from_url(redis_server.url)
    await c.flushall()
    yield c
    await c.aclose()


async def test_an_event_reaches_every_node_once_and_local_only_subscribers_only_their_own(client: Any) -> None:
    a, b = RedisEventBus(client, "node-a"), RedisEventBus(client, "node-b")
    await a.start()
    await b.start()
    try:
        on_a: list[Event] = []
        on_b: list[Event] = []
        counted_on_b: list[Event] = []  # a metrics-like subscriber: what node b itself did
        a.subscribe(on_a.append)
        b.subscribe(on_b.append)
        b.subscribe(counted_on_b.append, local_only=True)
        a.publish(_event("participant_removed", 1))
        assert on_a == [_event("participant_removed", 1)]  # delivered on its own node at once, synchronously
        await _until(lambda: len(on_b) == 1, "node b never heard node a")
        assert on_b == [_event("participant_removed", 1)]  # equal after JSON: data survives the trip
        assert counted_on_b == []
        b.publish(_event("class_ended", 2))
        assert counted_on_b == [_event("class_ended", 2)]
        # Node a hears b's event after its own (one channel, one order): its own never came back to it.
        await _until(lambda: len(on_a) == 2, "node a never heard node b")
        assert [e.type for e in on_a] == ["participant_removed", "class_ended"]
        assert on_b == [_event("participant_removed", 1), _event("class_ended", 2)]
        assert (a.received, b.received, a.dropped, b.dropped) == (1, 1, 0, 0)
        # A node that stops right after publishing (a drain's last class_ended) sends it before it goes.
        for n in range(3, 53):
            a.publish(_event("class_ended", n))
        await a.close()
        await _until(lambda: len(on_b) == 52, "what a published as it stopped never left it")
        assert [e.data["n"] for e in on_b[2:]] == list(range(3, 53))
    finally:
        await a.close()
        await b.close()


async def test_redis_away_keeps_this_node_working_and_the_bus_comes_back_by_itself() -> None:
    """A node's own subscribers never wait on Redis; while it is away other nodes miss events (at most once,
    counted), and once it is back the bus carries events again without a restart of classcast."""
    server = RedisServer()  # this test stops it: not the session's
    server.start()
    c1, c2 = aioredis.Redis.from_url(server.url), aioredis.Redis.from_url(server.url)
    a, b = RedisEventBus(c1, "node-a"), RedisEventBus(c2, "node-b")
    try:
        await a.start()
        await b.start()
        on_a: list[Event] = []
        on_b: list[Event] = []
        a.subscribe(on_a.append)
        b.subscribe(on_b.append)
        server.stop_server()
        a.publish(_event("chat", 1))
        assert [e.data["n"] for e in on_a] == [1]
        server.start()
        # Node b listens again within its backoff; until then what a publishes reaches a only.
        for n in range(2, 200):
            a.publish(_event("chat", n))
            await asyncio.sleep(0.1)
            if on_b:
                break
        assert on_b, "the bus did not come back"
        last = n
        a.publish(_event("chat", last + 1))
        await _until(lambda: on_b[-1].data["n"] == last + 1, "an event after the return was lost")
        assert [e.data["n"] for e in on_a] == list(range(1, last + 2))
        heard = [e.data["n"] for e in on_b]
        assert heard == sorted(set(heard)) and heard[-2:] == [last, last + 1]  # in order, never twice
    finally:
        await a.close()
        await b.close()
        await c1.aclose()
        await c2.aclose()
        server.stop()


async def test_one_bucket_across_nodes_and_no_token_given_twice(client: Any) -> None:
    """Three nodes take from one organization's bucket of 10 a minute, 30 requests at once: exactly 10 pass, and
    the refused ones learn when the next token comes; 6 s later exactly one more passes, on any node."""
    nodes = [RedisLimiter(client, "join_org", 10) for _ in range(3)]
    now = 1_000_000.0
    waits = await asyncio.gather(*(nodes[i % 3].acquire("org-1", now) for i in range(30)))
    assert sum(1 for w in waits if w == 0) == 10
    assert all(abs(w - 6.0) < 1e-6 for w in waits if w)  # 10 a minute: one every 6 s
    assert await nodes[1].acquire("org-2", now) == 0  # another key has its own bucket
    assert await nodes[2].acquire("org-1", now + 6) == 0
    assert await nodes[0].acquire("org-1", now + 6) > 0
    assert await nodes[0].acquire("org-1", now + 3) > 0  # a node whose clock is behind refills nothing
    ttl = await client.pttl("classcast:rate:join_org:org-1")
    assert 0 < ttl <= 60_000 + 1  # a bucket is gone once it would be full again: Redis keeps no idle clients


async def test_wiring_picks_memory_without_redis_and_redis_with_it(tmp_path: Path, redis_server: RedisServer) -> None:
    live = await build_live(Config(data_dir=tmp_path))
    assert type(live.bus) is EventBus and live.redis is None
    await live.close()
    live = await build_live(Config(data_dir=tmp_path, redis_url=redis_server.url))
    try:
        assert isinstance(live.bus, RedisEventBus)
        assert isinstance(live.limits.join_org, RedisLimiter)
    finally:
        await live.close()
    with pytest.raises(SystemExit, match="cannot reach Redis"):
        await build_live(Config(data_dir=tmp_path, redis_url=f"unix://{tmp_path}/nothing.sock"))


async def _ws_join(session: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{base.replace('http', 'ws')}/v1/rtc?token={token}")
    await ws.send_json({"type": "join"})
    while True:
        msg = json.loads((await ws.receive(timeout=20)).data)
        assert msg["type"] != "error", msg
        if msg["type"] == "joined":
            return ws


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket closed before {kind}"
        data = json.loads(msg.data)
        if data["type"] == kind:
            return data


async def test_a_kick_and_an_end_on_one_node_reach_sockets_on_another(
        aiohttp_server: Any, tmp_path: Path, postgres_cluster: PostgresCluster, redis_server: RedisServer) -> None:
    """Two classcast nodes on one PostgreSQL and one Redis. The class's sockets are on node B; the integrator's
    REST calls land on node A: the kick reaches the student on B (who is disconnected), the end of class reaches
    the teacher on B. Node A's metrics count what A did, node B's what B did."""
    name = await postgres_cluster.create_database()
    config = Config(data_dir=tmp_path / "data", database_url=postgres_cluster.url(name), redis_url=redis_server.url)
    clock = FakeClock()
    apps = [await create_app(config, clock, background=False) for _ in range(2)]  # same data dir: one secret
    servers = [await aiohttp_server(app, host="127.0.0.1") for app in apps]
    base_a, base_b = (str(s.make_url("")).rstrip("/") for s in servers)
    org = await apps[0][SERVICES].store.create_org("District", 10_000, clock.now_ms())
    headers = {"VF-ORG-ID": org.id}
    try:
        async with aiohttp.ClientSession() as http:
            async def rest(base: str, path: str, body: Any = None, method: str = "POST") -> Any:
                async with http.request(method, base + path, json=body, headers=headers) as r:
                    payload = await r.json()
                    assert r.status == 200, payload
                    return payload["data"]

            room = await rest(base_a, "/v1/room/create", {
                "roomId": "geo", "title": "Geography", "participant": {"uid": "t1", "name": "T", "role": "TEACHER"}})
            student = await rest(base_a, "/v1/room/geo/join", {"participant": {"uid": "s1", "name": "S",
                                                                               "role": "STUDENT"}})
            teacher_ws = await _ws_join(http, base_b, room["token"])
            student_ws = await _ws_join(http, base_b, student["token"])

            await rest(base_a, "/v1/room/geo/participants/s1/remove", {"reason": "off topic"})
            kicked = await _next(student_ws, "participant_removed")
            assert kicked["self"] is True and kicked["participant"]["uid"] == "s1"
            assert (await student_ws.receive(timeout=10)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            seen = await _next(teacher_ws, "participant_removed")
            assert seen["self"] is False

            await rest(base_a, "/v1/room/geo", method="DELETE")
            ended = await _next(teacher_ws, "class_ended")
            assert ended["reason"] == "destroyed"
    finally:
        for server in servers:
            await server.close()
        await postgres_cluster.drop_database(name)


async def test_a_stop_whose_cancel_a_redis_command_swallowed_still_ends(api: Api) -> None:
    """redis-py can swallow a cancellation that lands inside a command (control/shared/bus.py guards the bus's own
    loops). When that happened in the hub's event handler (presence and placement are Redis commands on a shared
    node), the dispatch loop went back to waiting for the next event, and the node's stop waited for it forever (a
    hang seen in the suite). A handler that swallows its cancel as redis-py does: the stop ends all the same."""
    hub = api.client.app[HUB]
    inside = asyncio.Event()
    handled: list[str] = []

    async def on_event(event: Event) -> None:
        inside.set()
        try:
            await asyncio.sleep(30)  # a Redis command in flight
        except asyncio.CancelledError:
            pass  # swallowed, as redis-py may
        handled.append(event.type)

    hub._on_event = on_event  # type: ignore[method-assign]
    api.svc.bus.publish(Event("room_started", "org", "room", "room-sid"))
    await asyncio.wait_for(inside.wait(), 5)
    stopping = asyncio.ensure_future(hub.stop())
    await asyncio.wait({stopping}, timeout=10)  # not wait_for: its own cancel would end the wait it measures
    if not stopping.done():
        stopping.cancel()
    assert stopping.done() and not stopping.cancelled(), "the stop waited for an event that never came"
    assert handled == ["room_started"]
    assert hub._dispatcher is not None and hub._dispatcher.done()


async def test_a_cancel_count_a_library_left_behind_does_not_end_the_nodes_events(api: Api) -> None:
    """aiohttp's request timeout cancels its task and undoes that only if a CancelledError comes back out; when the
    cancel became another error on its way (a connection error, a wrapped exception), the task's cancel count stays
    up. An event handler where that happened (under any aiohttp call) must not end the hub's event loop: the next
    event is still dispatched, and the stop still ends it."""
    hub = api.client.app[HUB]
    handled: list[str] = []

    async def on_event(event: Event) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not handled:
            task.cancel()  # a timeout's cancel ...
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass  # ... that came back out as something else: nobody called uncancel()
            assert task.cancelling() == 1
        handled.append(event.type)

    hub._on_event = on_event  # type: ignore[method-assign]
    api.svc.bus.publish(Event("room_started", "org", "room", "room-sid"))
    api.svc.bus.publish(Event("room_ended", "org", "room", "room-sid"))
    for _ in range(50):
        if len(handled) == 2:
            break
        await asyncio.sleep(0.05)
    assert handled == ["room_started", "room_ended"]
    assert hub._dispatcher is not None and not hub._dispatcher.done()
    stopping = asyncio.ensure_future(hub.stop())
    await asyncio.wait({stopping}, timeout=10)
    assert stopping.done() and not stopping.cancelled()
    assert hub._dispatcher.done()
