"""Room placement across nodes (`control.placement.Placement` in Redis).

Two kinds of keys:
- `classcast:node:<id>` = the node's URL, with a time to live of `lease_s`: the node's lease. A heartbeat task
  sets it again every `lease_s / 3`; a node that dies (SIGKILL, power, network) stops, and the key is gone at most
  `lease_s` later. A node that stops cleanly deletes it at once.
- `classcast:room:<sid>` = the id of the node hosting the room. It carries no lease of its own: it is live only
  while its node's lease is, so one heartbeat renews every room of a node (O(1), not O(rooms)).

`place` is one Lua script: keep a live host, else take the room for this node; two nodes placing one room at once
get one answer. Scripts compute key names from values, so this needs one Redis (or a Redis Cluster with all
classcast keys in one hash slot), which is what docs/operations.md describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from control.placement import Node

log = logging.getLogger("classcast.shared.placement")

NODE = "classcast:node:"
ROOM = "classcast:room:"
OVERFLOW = "classcast:overflow:"  # a set of node ids taking a room's students past its host's capacity
ROOM_KEEP_MS = 2 * 24 * 3600 * 1000  # a placement no node released (its node died, then nobody joined) goes

# KEYS[1] room key; ARGV this node's id, node key prefix, room keep ms. Returns {host id, host url}.
_PLACE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local url = redis.call('GET', ARGV[2] .. cur)
  if url then return {cur, url} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {ARGV[1], redis.call('GET', ARGV[2] .. ARGV[1]) or ''}
"""

# KEYS[1] room key; ARGV this node's id.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPlacement:
    def __init__(self, client: Any, node: Node, lease_s: float = 10.0) -> None:
        self.client = client
        self.node = node
        self.lease_ms = max(1000, int(lease_s * 1000))
        self._place = client.register_script(_PLACE)
        self._release = client.register_script(_RELEASE)
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._renew()  # placed rooms need this node's lease from the first join
        self._heartbeat = asyncio.create_task(self._beat())

    async def _renew(self) -> None:
        await self.client.set(NODE + self.node.id, self.node.url, px=self.lease_ms)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: try again at the next beat, the lease has two more in it
                log.warning("placement: node lease not renewed (%s)", exc)

    def stop_heartbeat(self) -> None:
        """The heartbeat stops and the lease is left to lapse, as when the node dies (tests use it)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def place(self, room_sid: str) -> Node:
        host, url = await self._place(keys=[ROOM + room_sid], args=[self.node.id, NODE, ROOM_KEEP_MS])
        host = _s(host)
        return self.node if host == self.node.id else Node(host, _s(url))

    async def host(self, room_sid: str) -> Node | None:
        host = await self.client.get(ROOM + room_sid)
        if host is None:
            return None
        host = _s(host)
        if host == self.node.id:
            return self.node
        url = await self.client.get(NODE + host)
        return Node(host, _s(url)) if url is not None else None

    async def release(self, room_sid: str) -> None:
        if await self._release(keys=[ROOM + room_sid], args=[self.node.id]):
            await self.client.delete(OVERFLOW + room_sid)

    async def add_overflow(self, room_sid: str, node_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(OVERFLOW + room_sid, node_id)
            pipe.pexpire(OVERFLOW + room_sid, ROOM_KEEP_MS)
            await pipe.execute()

    async def overflow(self, room_sid: str) -> set[str]:
        return {_s(m) for m in await self.client.smembers(OVERFLOW + room_sid)}

    async def nodes(self) -> list[Node]:
        ids = [_s(k)[len(NODE):] async for k in self.client.scan_iter(match=NODE + "*", count=100)]
        urls = await self.client.mget([NODE + i for i in ids]) if ids else []
        return sorted((Node(i, _s(u)) for i, u in zip(ids, urls, strict=True) if u is not None), key=lambda n: n.id)

    async def close(self) -> None:
        self.stop_heartbeat()
        with contextlib.suppress(Exception):
            await self.client.delete(NODE + self.node.id)
