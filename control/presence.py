"""Presence: which participant holds an open session in a room, through which connection, and since when a dropped
one is in its reconnect grace. One node keeps it in memory (`LocalPresence`); several nodes keep it in Redis
(`control.shared.presence.RedisPresence`), so a participant who drops on one node and comes back on another within
the grace keeps its session (control/wiring.py picks one; the signaling Hub sees only this interface).

An entry holds no connection object, only the connection's key and its node: the socket itself lives in one
node's Hub. The grace timer also lives in the node where the connection dropped; what makes it safe across nodes
is that expiry is a compare-and-delete (`expire` removes the entry only if it is still the same drop), so a timer
whose participant came back elsewhere finds nothing to close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    session_id: str
    node: str  # the node whose Hub holds (or last held) the connection
    conn: str | None  # the connection's key; None while in the reconnect grace
    dropped_at: int | None = None  # epoch ms the connection dropped (the session's end if the grace runs out)


class Presence(Protocol):
    async def take(self, room_sid: str, uid: str, node: str, conn: str) -> Entry | None:
        """A connection joins: if the uid has an entry (connected elsewhere, or in its grace) it becomes this
        connection's, atomically, and the entry as it was is returned (its session goes on); else None and the
        caller opens a session and `put`s it."""

    async def put(self, room_sid: str, uid: str, entry: Entry) -> None: ...

    async def drop(self, room_sid: str, uid: str, conn: str, at: int) -> bool:
        """The connection `conn` ended without leaving: its grace starts. False when the entry is no longer this
        connection's (replaced, removed): then there is no grace to run."""

    async def expire(self, room_sid: str, uid: str, dropped_at: int) -> Entry | None:
        """The grace of the drop at `dropped_at` ran out: the entry is removed and returned if it is still that
        drop (nobody came back), else None."""

    async def remove(self, room_sid: str, uid: str) -> Entry | None: ...

    async def remove_room(self, room_sid: str) -> None: ...

    async def room(self, room_sid: str) -> dict[str, Entry]:
        """Everyone with a session in the room, connected or in the grace, on any node."""

    async def close(self) -> None: ...


class LocalPresence:
    """One node's presence: a dict, with the same semantics as the Redis one."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Entry]] = {}

    async def take(self, room_sid: str, uid: str, node: str, conn: str) -> Entry | None:
        entries = self._rooms.get(room_sid, {})
        old = entries.get(uid)
        if old is not None:
            entries[uid] = Entry(old.session_id, node, conn)
        return old

    async def put(self, room_sid: str, uid: str, entry: Entry) -> None:
        self._rooms.setdefault(room_sid, {})[uid] = entry

    async def drop(self, room_sid: str, uid: str, conn: str, at: int) -> bool:
        entries = self._rooms.get(room_sid, {})
        old = entries.get(uid)
        if old is None or old.conn != conn:
            return False
        entries[uid] = Entry(old.session_id, old.node, None, at)
        return True

    async def expire(self, room_sid: str, uid: str, dropped_at: int) -> Entry | None:
        entries = self._rooms.get(room_sid, {})
        old = entries.get(uid)
        if old is None or old.conn is not None or old.dropped_at != dropped_at:
            return None
        return await self.remove(room_sid, uid)

    async def remove(self, room_sid: str, uid: str) -> Entry | None:
        entries = self._rooms.get(room_sid)
        if entries is None:
            return None
        old = entries.pop(uid, None)
        if not entries:
            self._rooms.pop(room_sid, None)
        return old

    async def remove_room(self, room_sid: str) -> None:
        self._rooms.pop(room_sid, None)

    async def room(self, room_sid: str) -> dict[str, Entry]:
        return dict(self._rooms.get(room_sid, {}))

    async def close(self) -> None:
        pass
