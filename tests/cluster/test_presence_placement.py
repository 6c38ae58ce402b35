"""Presence with its reconnect grace, and room placement with its node lease (issue 18 requirement 2): the
in-process implementations and the Redis ones against a real redis-server (tests/redis_server.py), then two
classcast nodes in this process on one PostgreSQL and one Redis, where a participant dropped on one node comes
back on the other within the grace and keeps its session."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from control.app import create_app
from control.clock import FakeClock
from control.config import Config
from control.placement import LocalPlacement, Node
from control.presence import Entry, LocalPresence
from control.services import SERVICES
from control.shared.placement import NODE, RedisPlacement
from control.shared.presence import RedisPresence
from control.signaling import HUB
from control.wiring import build_live
from tests.control.serverproc import free_port
from tests.pg import PostgresCluster
from tests.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    c = aioredis.Redis.from_url(redis_server.url)
    await c.flushall()
    yield c
    await c.aclose()


@pytest.fixture(params=["memory", "redis"])
async def presences(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    """Two nodes' views of presence: one shared dict in memory, or two Redis clients on one server."""
    if request.param == "memory":
        shared = LocalPresence()
        yield shared, shared
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    c1, c2 = aioredis.Redis.from_url(server.url), aioredis.Redis.from_url(server.url)
    await c1.flushall()
    yield RedisPresence(c1), RedisPresence(c2)
    await c1.aclose()
    await c2.aclose()


async def test_presence_keeps_the_session_through_a_reconnect_and_expires_only_the_same_drop(
        presences: tuple[Any, Any]) -> None:
    a, b = presences
    assert await a.take("RM_1", "s1", "node-a", "C_1") is None  # a first join: the caller opens a session
    await a.put("RM_1", "s1", Entry("SE_1", "node-a", "C_1"))
    await a.put("RM_1", "t1", Entry("SE_2", "node-a", "C_2"))
    # Seen from the other node: who is in the room, on which node.
    assert await b.room("RM_1") == {"s1": Entry("SE_1", "node-a", "C_1"), "t1": Entry("SE_2", "node-a", "C_2")}
    assert await b.room("RM_other") == {}

    assert not await a.drop("RM_1", "s1", "C_9", 1000)  # not that entry's connection: no grace
    assert await a.drop("RM_1", "s1", "C_1", 1000)
    assert (await b.room("RM_1"))["s1"] == Entry("SE_1", "node-a", None, 1000)
    # The participant comes back on node b within the grace: same session, now b's connection.
    assert await b.take("RM_1", "s1", "node-b", "C_3") == Entry("SE_1", "node-a", None, 1000)
    assert (await a.room("RM_1"))["s1"] == Entry("SE_1", "node-b", "C_3")
    assert await a.expire("RM_1", "s1", 1000) is None  # node a's timer finds nothing to close
    assert not await a.drop("RM_1", "s1", "C_1", 2000)  # nor may a's old connection start a grace again
    # A drop whose grace runs out is removed once, and only that drop.
    assert await b.drop("RM_1", "s1", "C_3", 5000)
    assert await b.expire("RM_1", "s1", 4999) is None
    assert await b.expire("RM_1", "s1", 5000) == Entry("SE_1", "node-b", None, 5000)
    assert await a.expire("RM_1", "s1", 5000) is None
    assert "s1" not in await a.room("RM_1")
    assert await a.remove("RM_1", "t1") == Entry("SE_2", "node-a", "C_2")
    await a.put("RM_1", "t1", Entry("SE_4", "node-a", "C_4"))
    await b.remove_room("RM_1")
    assert await a.room("RM_1") == {}


async def test_presence_take_is_atomic_across_nodes(client: Any, redis_server: RedisServer) -> None:
    """Ten nodes take one entry at once: each gets the entry as the one before it left it, so exactly one saw
    the dropped state and the chain of connections has no gap and no repeat."""
    nodes = [RedisPresence(aioredis.Redis.from_url(redis_server.url)) for _ in range(10)]
    try:
        await nodes[0].put("RM_1", "s1", Entry("SE_1", "n0", None, 7))
        olds = await asyncio.gather(*(n.take("RM_1", "s1", f"n{i}", f"C_{i}") for i, n in enumerate(nodes)))
        assert sum(1 for e in olds if e.conn is None) == 1
        assert {e.session_id for e in olds} == {"SE_1"}
        final = (await nodes[0].room("RM_1"))["s1"]
        previous = {e.conn for e in olds} | {final.conn}
        assert previous == {None} | {f"C_{i}" for i in range(10)}
    finally:
        for n in nodes:
            await n.client.aclose()


async def test_a_stopped_heartbeat_renews_no_more_even_if_its_cancellation_was_lost(client: Any) -> None:
    """stop_heartbeat cancels the beat; a cancellation lost inside the Redis client's round trip must not leave it
    renewing a dead node's lease (ci55: a 1 s lease had not lapsed 5 s after the stop). Here the task is let go
    without being cancelled at all, the worst case."""
    a = RedisPlacement(client, Node("node-a", "http://127.0.0.1:1001"), lease_s=1)
    await a.start()
    beat = a._heartbeat
    assert beat is not None
    a._heartbeat = None  # what stop_heartbeat leaves behind, minus the cancellation
    await asyncio.sleep(1.6)  # the lease (1 s) plus a renewal period (0.2 s) and some
    assert beat.done(), "the beat went on"
    assert await client.get(NODE + "node-a") is None, "the lease was renewed after the stop"


async def test_a_room_stays_on_its_node_until_that_nodes_lease_lapses(client: Any, redis_server: RedisServer) -> None:
    a = RedisPlacement(client, Node("node-a", "http://127.0.0.1:1001"), lease_s=1.5)
    other = aioredis.Redis.from_url(redis_server.url)
    b = RedisPlacement(other, Node("node-b", "http://127.0.0.1:1002"), lease_s=1.5)
    await a.start()
    await b.start()
    try:
        # Both place one room at once: one answer.
        hosts = await asyncio.gather(a.place("RM_1"), b.place("RM_1"), a.place("RM_1"), b.place("RM_1"))
        assert len({h.id for h in hosts}) == 1
        winner, loser = (a, b) if hosts[0].id == "node-a" else (b, a)
        assert await a.nodes() == [a.node, b.node]
        assert await loser.place("RM_1") == winner.node  # with its URL, for the redirect
        assert await loser.host("RM_1") == winner.node
        assert await loser.host("RM_none") is None
        # The heartbeat keeps it past several leases.
        await asyncio.sleep(3.5)
        assert await loser.place("RM_1") == winner.node
        # The winner dies (no clean stop: its heartbeat just ends). Within the lease the room is still its own...
        winner.stop_heartbeat()
        died = time.monotonic()
        assert await loser.place("RM_1") == winner.node
        # ...then it lapses, and the next join places it on the node that receives it.
        while (await loser.place("RM_1")).id != loser.node.id:
            assert time.monotonic() - died < 1.5 + 1.0, "a dead node's lease did not lapse"
            await asyncio.sleep(0.05)
        assert time.monotonic() - died > 1.5 / 3  # not before its last renewal could have lapsed
        assert await winner.nodes() == [loser.node]
        assert await winner.host("RM_1") == loser.node
        # The room's end: only its host's release removes the placement.
        await winner.release("RM_1")
        assert await loser.host("RM_1") == loser.node
        await loser.release("RM_1")
        assert await loser.host("RM_1") is None
        # A node that stops cleanly gives its rooms up at once.
        assert await loser.place("RM_2") == loser.node
        await winner.start()
        await loser.close()
        assert await winner.place("RM_2") == winner.node
    finally:
        await a.close()
        await b.close()
        await other.aclose()


async def test_a_join_waits_out_a_host_that_missed_renewals_and_never_takes_a_slow_nodes_room(
        client: Any, redis_server: RedisServer) -> None:
    """A host that missed two renewals is probably dead: a join elsewhere waits until its lease lapses and then
    places the room on its own node at once (not at the participant's next retry). A host that is merely slow (its
    loop stalled for longer than two renewals but less than the lease) renews meanwhile and keeps its room."""
    a = RedisPlacement(client, Node("node-a", "http://127.0.0.1:1001"), lease_s=2)  # renewed every 0.4 s
    other = aioredis.Redis.from_url(redis_server.url)
    b = RedisPlacement(other, Node("node-b", "http://127.0.0.1:1002"), lease_s=2)
    await a.start()
    await b.start()
    try:
        assert await a.place("RM_1") == a.node
        assert await b.place("RM_1") == a.node  # a live host: redirected at once
        # A stalls for 1.5 s (three renewals missed, within its 2 s lease): a join on B meanwhile waits, and gets A.
        a.stop_heartbeat()
        await asyncio.sleep(1.1)
        stalled = time.monotonic()
        join = asyncio.create_task(b.place("RM_1"))
        await asyncio.sleep(0.4)
        assert not join.done()  # held, not sent to a node that may be dead
        assert await a._renew()  # A's loop runs again, within its lease
        await a.start()
        assert await asyncio.wait_for(join, 2) == a.node
        assert time.monotonic() - stalled < 1.0
        assert a.lapsed == 0
        # A dies: a join on B waits for the lapse and takes the room then, within the lease.
        a.stop_heartbeat()
        died = time.monotonic()
        await asyncio.sleep(1.2)
        assert await b.place("RM_1") == b.node
        assert 1.5 < time.monotonic() - died < 2.5
        assert not await a._renew()  # had A merely stalled this long, it would know its lease had lapsed
    finally:
        await a.close()
        await b.close()
        await other.aclose()


async def test_wiring_picks_presence_and_placement(tmp_path: Path, redis_server: RedisServer) -> None:
    live = await build_live(Config(data_dir=tmp_path, port=8123))
    assert isinstance(live.presence, LocalPresence) and isinstance(live.placement, LocalPlacement)
    assert await live.placement.place("RM_1") == Node(live.node_id, "http://127.0.0.1:8123")
    await live.close()
    live = await build_live(Config(data_dir=tmp_path, redis_url=redis_server.url, node_url="https://n1.example/"))
    try:
        assert isinstance(live.presence, RedisPresence) and isinstance(live.placement, RedisPlacement)
        assert await live.placement.place("RM_1") == Node(live.node_id, "https://n1.example")
    finally:
        await live.close()


# ---- two nodes in this process ---------------------------------------------------------------------------------


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _two_nodes(aiohttp_server: Any, tmp_path: Path, postgres_cluster: PostgresCluster,
                     redis_server: RedisServer, **settings: Any) -> AsyncIterator[tuple[list[Any], list[Any], Any]]:
    """Two apps with their own data folders on one fresh PostgreSQL database and the session's Redis, one secret:
    (apps, servers, org)."""
    name = await postgres_cluster.create_database()
    base = Config(database_url=postgres_cluster.url(name), redis_url=redis_server.url, secret="s" * 40, **settings)
    clock = FakeClock()
    apps, servers = [], []
    try:
        for i in range(2):
            port = free_port()
            app = await create_app(dataclasses.replace(base, data_dir=tmp_path / f"data{i}", port=port), clock,
                                   background=False)
            apps.append(app)
            servers.append(await aiohttp_server(app, host="127.0.0.1", port=port))
        org = await apps[0][SERVICES].store.create_org("District", 10_000, clock.now_ms())
        yield apps, servers, org
    finally:
        for server in servers:
            await server.close()
        await postgres_cluster.drop_database(name)


async def _join(http: aiohttp.ClientSession, base: str, token: str) -> tuple[aiohttp.ClientWebSocketResponse,
                                                                              dict[str, Any]]:
    ws = await http.ws_connect(f"{base.replace('http', 'ws')}/v1/rtc?token={token}")
    await ws.send_json({"type": "join"})
    while True:
        msg = await ws.receive(timeout=20)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        if data["type"] in ("joined", "error"):
            return ws, data


async def test_a_participant_dropped_on_a_dead_node_keeps_its_session_on_another(
        aiohttp_server: Any, tmp_path: Path, postgres_cluster: PostgresCluster, redis_server: RedisServer) -> None:
    """Nodes A and B on one PostgreSQL and Redis. The class is placed on A; a join that reaches B is answered
    REDIRECT with A's URL, and presence shows the class on A from both nodes. A stops renewing its lease (it is
    dying) and the student's socket drops; once A's lease lapses the student joins on B within the grace: the same
    session goes on (one session, still open after A's grace timer ran out), and B hosts the class."""
    grace = 4.0
    async with _two_nodes(aiohttp_server, tmp_path, postgres_cluster, redis_server, reconnect_grace_s=grace,
                          node_lease_s=1.0) as (apps, servers, org), aiohttp.ClientSession() as http:
        base_a, base_b = (f"http://127.0.0.1:{s.port}" for s in servers)
        svc_a, svc_b = (app[SERVICES] for app in apps)
        headers = {"VF-ORG-ID": org.id}

        async def rest(base: str, path: str, body: Any) -> Any:
            async with http.post(base + path, json=body, headers=headers) as r:
                payload = await r.json()
                assert r.status == 200, payload
                return payload["data"]

        room = await rest(base_a, "/v1/room/create", {
            "roomId": "bio", "title": "Biology", "participant": {"uid": "t1", "name": "T", "role": "TEACHER"}})
        student = await rest(base_b, "/v1/room/bio/join", {"participant": {"uid": "s1", "name": "S",
                                                                           "role": "STUDENT"}})
        teacher_ws, joined = await _join(http, base_a, room["token"])
        assert joined["type"] == "joined"
        redirected_ws, reply = await _join(http, base_b, student["token"])
        assert reply["code"] == "REDIRECT" and reply["url"] == f"ws://127.0.0.1:{servers[0].port}/v1/rtc"
        assert (await redirected_ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE,
                                                                 aiohttp.WSMsgType.CLOSED)
        student_ws, joined = await _join(http, reply["url"].replace("ws", "http", 1).removesuffix("/v1/rtc"),
                                         student["token"])
        assert joined["type"] == "joined"
        sid = (await svc_a.store.get_room(org.id, "bio")).sid
        for hub in (apps[0][HUB], apps[1][HUB]):  # presence seen from both nodes
            seen = await hub.presence.room(sid)
            assert {uid: (e.node, e.conn is not None) for uid, e in seen.items()} == {
                "t1": (svc_a.live.node_id, True), "s1": (svc_a.live.node_id, True)}
        open_sessions = await svc_b.store.room_sessions(sid, active_only=True)
        student_session = next(s.id for s in open_sessions if s.uid == "s1")

        svc_a.live.placement.stop_heartbeat()  # node A is dying
        await student_ws.close()
        await _until(lambda: apps[0][HUB].owned.get((sid, "s1")) is None, "node A never saw the drop")
        await _until(lambda: _lapsed(svc_b, sid), "node A's lease did not lapse", timeout=5)
        back_ws, joined = await _join(http, base_b, student["token"])
        assert joined["type"] == "joined", joined
        assert (await svc_b.live.placement.host(sid)).id == svc_b.live.node_id
        assert apps[1][HUB].owned[(sid, "s1")] is not None
        await asyncio.sleep(grace + 1)  # node A's grace timer for the drop has run out
        sessions = [s for s in await svc_b.store.room_sessions(sid) if s.uid == "s1"]
        assert [(s.id, s.active) for s in sessions] == [(student_session, True)]
        assert (await svc_b.store.get_room_by_sid(sid)).emptied_at is None
        # A leave on B ends it, as on one node.
        await back_ws.send_json({"type": "leave"})
        await _until(lambda: _session_closed(svc_b, student_session), "a leave on node B did not end it")
        # The teacher's socket is still open on A (A is alive after all, only its lease lapsed): the teacher joins
        # on B, and A's socket is told REPLACED through the bus and closed; the session goes on.
        teacher_session = next(x.id for x in open_sessions if x.uid == "t1")
        teacher_b, joined = await _join(http, base_b, room["token"])
        assert joined["type"] == "joined"
        while True:
            msg = await teacher_ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, "A's socket closed without REPLACED"
            if json.loads(msg.data).get("code") == "REPLACED":
                break
        while (await teacher_ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
            pass  # the media side's last words, then the close
        assert teacher_ws.closed
        teachers = [x for x in await svc_b.store.room_sessions(sid) if x.uid == "t1"]
        assert [(x.id, x.active, x.node) for x in teachers] == [(teacher_session, True, svc_b.live.node_id)]
        await teacher_b.close()


async def _lapsed(svc: Any, sid: str) -> bool:
    host = await svc.live.placement.host(sid)
    return host is None


async def _session_closed(svc: Any, session_id: str) -> bool:
    s = await svc.store.get_session(session_id)
    return s is not None and not s.active and s.leave_reason == "left"


async def test_a_draining_node_takes_no_new_class_but_sends_joins_to_the_host(
        aiohttp_server: Any, tmp_path: Path, postgres_cluster: PostgresCluster, redis_server: RedisServer) -> None:
    async with _two_nodes(aiohttp_server, tmp_path, postgres_cluster, redis_server) as (apps, servers, org), \
            aiohttp.ClientSession() as http:
        base_a, base_b = (f"http://127.0.0.1:{s.port}" for s in servers)
        svc_a = apps[0][SERVICES]
        async with http.post(base_a + "/v1/room/create", headers={"VF-ORG-ID": org.id}, json={
                "roomId": "chem", "title": "Chemistry",
                "participant": {"uid": "t1", "name": "T", "role": "TEACHER"}}) as r:
            token = (await r.json())["data"]["token"]
        sid = (await svc_a.store.get_room(org.id, "chem")).sid
        apps[1][HUB].draining = lambda: True  # node B drains (SIGTERM)
        ws, reply = await _join(http, base_b, token)
        assert reply["code"] == "SERVER_DRAINING"
        await ws.close()
        assert await svc_a.live.placement.host(sid) is None  # B did not take the class
        ws_a, joined = await _join(http, base_a, token)
        assert joined["type"] == "joined"
        ws, reply = await _join(http, base_b, token)  # B drains but knows the host: a redirect, not a refusal
        assert (reply["code"], reply["url"]) == ("REDIRECT", f"ws://127.0.0.1:{servers[0].port}/v1/rtc")
        await ws.close()
        await ws_a.close()
