"""What a node that is gone leaves behind, cleaned up by the nodes that are not (issue 18, "A node dies").

A node proves it is alive twice: its lease in the placement (control/placement.py; Redis with several nodes) and
its heartbeat row in the database (`heartbeat_ms:<node>`, written every `interval_s` by `Failover.run`). A node is
gone when both lapsed: the lease alone could lapse while Redis is unreachable from a node that is still serving.
Every live node sweeps every `interval_s`, and a node sweeps once as it starts (`recover`, what a restart always
did): whichever gets there first does the work, and the work is written so that a second node doing it at the same
time changes nothing:

- Sessions: a gone node's participants were connected when it went, so each is treated like a connection that
  dropped. Its presence entry (control/presence.py) enters the reconnect grace when the node is found gone, which
  is when its rooms can be placed again (compare-and-set on the connection key); a participant who reconnects to a
  live node within the grace takes the entry and keeps its session (control/signaling.py moves it), exactly as
  after a drop on one node. When the grace has run out the entry is expired (compare-and-delete: one node wins it)
  and the session closes AT THE NODE'S LAST HEARTBEAT with reason `server_restart`, billed and announced once
  (`Classroom.close_lost` closes only what is still open, under the room's row lock). A session no presence entry
  can resume (one node's memory after a restart, a lost Redis) closes at once.
- Recordings: each live job names its node in `recording_node:<egress id>`; deleting that row is the claim (the
  DELETE's RETURNING tells one node it won), and the winner settles the job from its files as a restart does.
- Placement needs nothing: a room placed on a node whose lease lapsed is placed afresh by the next join
  (control/placement.py), which is how its participants reconnect (REDIRECT, then the SDK's own retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from control.classroom import HEARTBEAT_KEY, Classroom
from control.placement import Placement
from control.presence import Entry, Presence
from control.store.records import Session
from control.store.store import DATABASE_UNAVAILABLE

log = logging.getLogger("classcast.failover")

BEAT_PREFIX = f"{HEARTBEAT_KEY}:"
RECORDING_NODE = "recording_node:"  # + egress id = the node whose recorder makes it
LOST_REASON = "server_restart"  # what a session that ended with its node's process is closed as, one node or many

SettleLost = Callable[[str, str], Awaitable[bool]]  # (egress id, dead node) -> settled here


class Failover:
    def __init__(self, classroom: Classroom, presence: Presence, placement: Placement, *, grace_s: float,
                 lease_s: float, interval_s: float | None = None) -> None:
        self.classroom = classroom
        self.store = classroom.store
        self.clock = classroom.clock
        self.presence = presence
        self.placement = placement
        self.node_id = placement.node.id
        self.grace_ms = int(grace_s * 1000)
        self.lease_ms = int(lease_s * 1000)
        # The heartbeat's resolution is how exactly a dead node's sessions end; a sweep as often costs one indexed
        # read per node and second.
        self.interval_s = interval_s if interval_s is not None else max(0.2, min(1.0, lease_s / 3))
        self.settle_lost: SettleLost | None = None  # control/recordings.py, once the app has started it

    async def beat(self) -> None:
        await self.store.set_meta(BEAT_PREFIX + self.node_id, str(self.clock.now_ms()))

    async def recover(self) -> int:
        """At start: the open sessions of every node without a live lease (the previous run's, on one node)."""
        await self.beat()
        return await self.sweep(at_start=True)

    async def run(self) -> None:
        """Beat and sweep until cancelled (the app's background task)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.beat()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except DATABASE_UNAVAILABLE as exc:  # locked or unreachable: the next beat tries again (operations.md)
                log.warning("failover sweep waits for the database: %s", str(exc).splitlines()[0][:200])
            except Exception:
                log.exception("failover sweep failed")

    async def _alive(self) -> set[str]:
        return {n.id for n in await self.placement.nodes()} | {self.node_id}

    async def sweep(self, at_start: bool = False) -> int:
        """One pass; returns how many sessions this node closed. At start every node without a lease counts as gone
        (today's restart); later only one whose heartbeat is also older than a lease."""
        now = self.clock.now_ms()
        beats = {node: int(v) for node, v in (await self.store.meta_with_prefix(BEAT_PREFIX)).items()
                 if v.isdigit()}
        stale = {n for n, at in beats.items() if n != self.node_id and (at_start or now - at > self.lease_ms)}
        if not stale and not at_start:
            return 0  # every node beat lately: the leases need no look (a SCAN in Redis)
        alive = await self._alive()
        gone = stale - alive
        if at_start:
            sessions = [s for s in await self.store.open_sessions() if s.node not in alive]
        else:
            sessions = await self.store.open_sessions(sorted(gone)) if gone else []
        jobs = {rec: node for rec, node in (await self.store.meta_with_prefix(RECORDING_NODE)).items()
                if node in gone}
        closed = await self._sessions(sessions, beats, alive, now) if sessions else 0
        for rec_id, node in sorted(jobs.items()):
            await self._recording(rec_id, node)
        # A gone node with nothing left open is forgotten (its heartbeat row is what made it a candidate); one
        # with sessions in their grace is looked at again by the next sweep.
        done = sorted(BEAT_PREFIX + n for n in gone - {s.node for s in sessions} - set(jobs.values()))
        if done:
            await self.store.delete_meta(done)
        if closed:
            log.info("closed %d sessions of nodes that are gone (%s)", closed, ", ".join(sorted(gone)) or "-")
        return closed

    async def _sessions(self, sessions: list[Session], beats: dict[str, int], alive: set[str], now: int) -> int:
        legacy = await self.store.get_meta(HEARTBEAT_KEY)  # sessions of a version that named no node
        fallback = max(beats.values(), default=int(legacy) if legacy and legacy.isdigit() else None)
        closes: list[tuple[Session, int, str]] = []
        rooms: dict[str, dict[str, Entry]] = {}
        for s in sessions:
            beat = beats.get(s.node or "", fallback)
            last = min(beat, now) if beat is not None else now
            if s.room_sid not in rooms:
                rooms[s.room_sid] = await self.presence.room(s.room_sid)
            entry = rooms[s.room_sid].get(s.uid)
            if entry is None or entry.session_id != s.id:
                closes.append((s, last, LOST_REASON))  # nothing can resume it: it ends with its node
                continue
            if entry.node in alive:
                continue  # its participant came back on a live node, which holds it now
            dropped = entry.dropped_at
            if entry.conn is not None:
                # Connected when its node went. Its grace runs from now, when the room can be placed again (a
                # reconnect before now was redirected to the dead node): from the last heartbeat, a grace no
                # longer than the lease would be over before anyone could come back.
                if not await self.presence.drop(s.room_sid, s.uid, entry.conn, now):
                    continue  # taken meanwhile by a reconnect; the next sweep sees where it went
                dropped = now
            if dropped is None or now - dropped < self.grace_ms:
                continue  # its grace runs: a later sweep closes it if nobody comes back
            if await self.presence.expire(s.room_sid, s.uid, dropped) is not None:  # one node wins the entry
                # It ends when its connection was last known alive: its drop, or its node's last heartbeat.
                closes.append((s, min(dropped, last), LOST_REASON if dropped >= last else "disconnected"))
        return await self.classroom.close_lost(closes) if closes else 0

    async def _recording(self, rec_id: str, node: str) -> None:
        if self.settle_lost is None:
            return  # recordings not started yet on this node: the next sweep
        if await self.store.take_meta(RECORDING_NODE + rec_id) is None:
            return  # another node claimed it
        try:
            if await self.settle_lost(rec_id, node):
                log.info("recording %s of node %s settled here", rec_id, node)
        except Exception:  # its row stays live; a node's start (control/recordings.py recover) settles it
            log.exception("recording %s of node %s could not be settled", rec_id, node)
