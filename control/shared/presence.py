"""Presence across nodes: `control.presence.Presence` kept in Redis, one hash per room (field = uid, value = the
entry as JSON), each change one Lua script so two nodes never both take or both expire one entry.

A room's hash expires `KEEP_MS` after its last change: entries of a class that ended while every node that could
clean it up was gone do not stay forever. Unlike the event bus and the rate limits, presence does not degrade to
"this node only" when Redis is away: a join then fails (the client retries) rather than opening a second session
another node would not know about.
"""

from __future__ import annotations

import json
from typing import Any

from control.presence import Entry

PREFIX = "classcast:presence"
KEEP_MS = 2 * 24 * 3600 * 1000

# KEYS[1] room hash; ARGV uid, node, conn, keep ms. The old entry (or nil); the entry becomes node/conn's.
_TAKE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local e = cjson.decode(raw)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({s = e.s, n = ARGV[2], c = ARGV[3]}))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return raw
"""

# KEYS[1] room hash; ARGV uid, conn, at, keep ms. 1 when the entry was conn's and is now in its grace.
_DROP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local e = cjson.decode(raw)
if e.c ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({s = e.s, n = e.n, d = tonumber(ARGV[3])}))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] room hash; ARGV uid, dropped_at. The entry, removed, when it is still that drop.
_EXPIRE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local e = cjson.decode(raw)
if e.c ~= nil or e.d ~= tonumber(ARGV[2]) then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return raw
"""


def _entry(raw: bytes | str | None) -> Entry | None:
    if raw is None:
        return None
    e = json.loads(raw)
    dropped = e.get("d")
    return Entry(e["s"], e["n"], e.get("c"), int(dropped) if dropped is not None else None)


class RedisPresence:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._take = client.register_script(_TAKE)
        self._drop = client.register_script(_DROP)
        self._expire = client.register_script(_EXPIRE)

    @staticmethod
    def _key(room_sid: str) -> str:
        return f"{PREFIX}:{room_sid}"

    async def take(self, room_sid: str, uid: str, node: str, conn: str) -> Entry | None:
        return _entry(await self._take(keys=[self._key(room_sid)], args=[uid, node, conn, KEEP_MS]))

    async def put(self, room_sid: str, uid: str, entry: Entry) -> None:
        value = {"s": entry.session_id, "n": entry.node, "c": entry.conn, "d": entry.dropped_at}
        key = self._key(room_sid)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, uid, json.dumps({k: v for k, v in value.items() if v is not None}))
            pipe.pexpire(key, KEEP_MS)
            await pipe.execute()

    async def drop(self, room_sid: str, uid: str, conn: str, at: int) -> bool:
        return bool(await self._drop(keys=[self._key(room_sid)], args=[uid, conn, at, KEEP_MS]))

    async def expire(self, room_sid: str, uid: str, dropped_at: int) -> Entry | None:
        return _entry(await self._expire(keys=[self._key(room_sid)], args=[uid, dropped_at]))

    async def remove(self, room_sid: str, uid: str) -> Entry | None:
        key = self._key(room_sid)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hget(key, uid)
            pipe.hdel(key, uid)
            raw, _ = await pipe.execute()
        return _entry(raw)

    async def remove_room(self, room_sid: str) -> None:
        await self.client.delete(self._key(room_sid))

    async def room(self, room_sid: str) -> dict[str, Entry]:
        raw = await self.client.hgetall(self._key(room_sid))
        out: dict[str, Entry] = {}
        for uid, value in raw.items():
            entry = _entry(value)
            if entry is not None:
                out[uid.decode() if isinstance(uid, bytes) else uid] = entry
        return out

    async def close(self) -> None:
        pass
