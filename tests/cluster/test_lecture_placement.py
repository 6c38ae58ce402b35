"""Where a lecture's overflow students go is part of the placement (issue 18 req 4): the nodes taking a room's
students past its host, in memory for one node and in Redis for several, gone with the room's release by its host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from control.placement import LocalPlacement, Node
from control.shared.placement import RedisPlacement
from tests.redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def placements(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    a_node, b_node = Node("node-a", "http://127.0.0.1:1001"), Node("node-b", "http://127.0.0.1:1002")
    if request.param == "memory":
        yield LocalPlacement(a_node), LocalPlacement(b_node)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    c1, c2 = aioredis.Redis.from_url(server.url), aioredis.Redis.from_url(server.url)
    await c1.flushall()
    a, b = RedisPlacement(c1, a_node, lease_s=5), RedisPlacement(c2, b_node, lease_s=5)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()
    await c1.aclose()
    await c2.aclose()


async def test_overflow_nodes_are_shared_and_end_with_the_hosts_release(placements: tuple[Any, Any]) -> None:
    a, b = placements
    assert (await a.place("RM_1")).id == "node-a"
    assert await a.overflow("RM_1") == set()
    await a.add_overflow("RM_1", "node-b")
    await a.add_overflow("RM_1", "node-b")
    await a.add_overflow("RM_1", "node-c")
    await a.add_overflow("RM_2", "node-c")
    if isinstance(a, RedisPlacement):  # another node sees it
        assert await b.overflow("RM_1") == {"node-b", "node-c"}
        await b.release("RM_1")  # not the host: nothing changes
        assert await b.overflow("RM_1") == {"node-b", "node-c"}
    assert await a.overflow("RM_1") == {"node-b", "node-c"}
    await a.release("RM_1")
    assert await a.overflow("RM_1") == set()
    assert await a.overflow("RM_2") == {"node-c"}


async def test_students_go_only_to_nodes_that_renewed_lately_and_do_not_drain(placements: tuple[Any, Any]) -> None:
    """Where a host may send a lecture's students (`nodes(fresh=True)`): not to a node that drains (it would refuse a
    new student), nor to one whose lease missed two renewals (probably dead); both still count as live."""
    a, b = placements
    if isinstance(a, LocalPlacement):
        await a.set_draining()  # one node: nobody to tell, nowhere else to send students
        assert await a.nodes(fresh=True) == [a.node]
        return
    assert await a.nodes(fresh=True) == [a.node, b.node]
    await b.set_draining()
    assert await a.nodes(fresh=True) == [a.node]
    assert await a.nodes() == [a.node, b.node]
    b.stop_heartbeat()  # it keeps draining while its lease lives, then is gone with it
    a.stop_heartbeat()
    await a._renew()
    await asyncio.sleep(2.6)  # two renewals (1 s each at a 5 s lease) and a half missed
    assert await b.nodes(fresh=True) == []
    assert [n.id for n in await b.nodes()] == ["node-a", "node-b"]
