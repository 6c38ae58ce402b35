"""Room placement across nodes (`control.placement.Placement` in Redis).

Two kinds of keys:
- `classcast:node:<id>` = the node's URL, with a time to live of `lease_s`: the node's lease. A heartbeat task
  sets it again every `renew_s` (a second; a fifth of a shorter lease); a node that dies (SIGKILL, power, network)
  stops, and the key is gone at most `lease_s` later. A node that stops cleanly deletes it at once. A live node
  whose loop stalls keeps its lease as long as the stall is shorter than `lease_s - renew_s` (4 s by default).
- `classcast:room:<sid>` = the id of the node hosting the room. It carries no lease of its own: it is live only
  while its node's lease is, so one heartbeat renews every room of a node (O(1), not O(rooms)).

`place` is one Lua script: keep a live host, else take the room for this node; two nodes placing one room at once
get one answer. A host whose lease has missed renewals (older than `suspect_s`, 2.5 renewals) is probably dead:
a join then waits here until its lease either lapses (the room is placed on this node at once: the first join after
the death re-places it, not the first retry after it) or is renewed (a slow node keeps its room: no flapping), at
most a lease. Redirecting it instead would send the participant to a node that does not answer, and its next try
comes only after its backoff (up to 5 s).

Scripts compute key names from values, so this needs one Redis (or a Redis Cluster with all classcast keys in one
hash slot), which is what docs/operations.md describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from control.background import stop_tasks
from control.placement import Node

log = logging.getLogger("classcast.shared.placement")

NODE = "classcast:node:"
ROOM = "classcast:room:"
OVERFLOW = "classcast:overflow:"  # a set of node ids taking a room's students past its host's capacity
DRAINING = "classcast:draining:"  # + node id: the node drains (renewed with its lease, gone with it)
ROOM_KEEP_MS = 2 * 24 * 3600 * 1000  # a placement no node released (its node died, then nobody joined) goes

# KEYS[1] room key; ARGV this node's id, node key prefix, room keep ms. Returns {host id, host url, the host's lease
# left in ms (-1: this node, placed now or before)}.
_PLACE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local url = redis.call('GET', ARGV[2] .. cur)
  if url then return {cur, url, redis.call('PTTL', ARGV[2] .. cur)} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {ARGV[1], redis.call('GET', ARGV[2] .. ARGV[1]) or '', -1}
"""

# KEYS[1] room key; ARGV this node's id.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPlacement:
    def __init__(self, client: Any, node: Node, lease_s: float = 5.0) -> None:
        self.client = client
        self.node = node
        self.lease_ms = max(1000, int(lease_s * 1000))
        self.renew_ms = min(1000, self.lease_ms // 5)
        self.suspect_ms = self.renew_ms * 5 // 2  # a lease this old missed two renewals: its node is probably dead
        self.lapsed = 0  # times this node found its own lease had lapsed (it stalled longer than the lease allows)
        self.draining = False
        self._place = client.register_script(_PLACE)
        self._release = client.register_script(_RELEASE)
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._renew()  # placed rooms need this node's lease from the first join
        self._heartbeat = asyncio.create_task(self._beat())

    async def _renew(self) -> bool:
        """Sets the lease again; False when it had lapsed (this node's rooms may have been placed elsewhere)."""
        async with self.client.pipeline(transaction=True) as pipe:  # MULTI/EXEC: any Redis version
            pipe.exists(NODE + self.node.id)
            pipe.set(NODE + self.node.id, self.node.url, px=self.lease_ms)
            if self.draining:
                pipe.set(DRAINING + self.node.id, "1", px=self.lease_ms)
            existed, *_ = await pipe.execute()
        return bool(existed)

    async def set_draining(self) -> None:
        self.draining = True
        await self._renew()

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.renew_ms / 1000)
            if self._heartbeat is not asyncio.current_task():
                # Stopped or replaced, though not cancelled: a cancellation that lands inside the Redis client's
                # round trip can be lost there, and a beat that went on would keep a dead node's lease alive
                # (suspected in ci55: a lease of 1 s had not lapsed 5 s after stop_heartbeat).
                return
            try:
                if not await self._renew():
                    self.lapsed += 1
                    log.warning("placement: this node's lease had lapsed (no renewal for %.1f s, lease %.1f s): "
                                "a join elsewhere meanwhile may have placed its rooms on another node",
                                loop.time() - started, self.lease_ms / 1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: try again at the next beat, the lease has more in it
                log.warning("placement: node lease not renewed (%s)", exc)

    def stop_heartbeat(self) -> None:
        """The heartbeat stops and the lease is left to lapse, as when the node dies (tests use it)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def place(self, room_sid: str) -> Node:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease_ms / 1000 + 1
        while True:
            host, url, left = await self._place(keys=[ROOM + room_sid], args=[self.node.id, NODE, ROOM_KEEP_MS])
            host = _s(host)
            if host == self.node.id:
                return self.node
            left = int(left)
            if left < 0 or self.lease_ms - left < self.suspect_ms or loop.time() > deadline:
                return Node(host, _s(url))
            # Its host missed renewals: wait for its lease to lapse (then the room is placed here) or be renewed.
            await asyncio.sleep(min(0.1, left / 1000))

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

    async def nodes(self, fresh: bool = False) -> list[Node]:
        ids = [_s(k)[len(NODE):] async for k in self.client.scan_iter(match=NODE + "*", count=100)]
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.get(NODE + i)
                pipe.pttl(NODE + i)
                pipe.exists(DRAINING + i)
            values = await pipe.execute()
        return sorted((Node(i, _s(u)) for i, u, left, draining in zip(ids, values[0::3], values[1::3], values[2::3],
                                                                       strict=True)
                       if u is not None and not (fresh and (draining or (
                           left >= 0 and self.lease_ms - left >= self.suspect_ms)))),
                      key=lambda n: n.id)

    async def close(self) -> None:
        # Its end awaited: a beat that swallowed the cancel would renew the lease this close deletes next.
        beat, self._heartbeat = self._heartbeat, None
        await stop_tasks(beat)
        with contextlib.suppress(Exception):
            await self.client.delete(NODE + self.node.id, DRAINING + self.node.id)
