"""What a joiner is told about its class that other joins do not change: the topic, the recent chat and captions,
whether it is being recorded, whether it has polls.

Why it is kept: a class that joins at once (100 students in two seconds) read these five things from the database
100 times, about 6 ms of the control process's CPU per join, a third of what the control plane spends on a join
(issue 14, requirement 5). They change only when something happens in the class (a chat message, a caption, a
poll, a recording, a topic), and each of those is an event the signaling hub already receives, from this node or
another. So the hub keeps one brief per room and drops it at any event of the room except a join or a leave,
which change only the roster (read at every join). A change made without an event reaches joiners at most
`MAX_AGE_S` late.

A read that an event overtook is not kept (the generation check): the joiner it was read for is already in the
room's connections, so the event itself tells it what changed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from control.store.records import Room

MAX_AGE_S = 2.0
ROSTER_EVENTS = frozenset({"participant_joined", "participant_left"})  # they change no part of a brief
PRUNE_AT = 256  # rooms kept before expired briefs are swept


@dataclass(frozen=True)
class RoomBrief:
    topic: str | None
    chat: list[dict[str, Any]]
    captions: list[dict[str, Any]]
    recording: bool
    has_polls: bool  # polls are read per viewer (their own answers), and only when there are some


class RoomBriefs:
    """Briefs by room sid, read through `load` when missing, stale or dropped."""

    def __init__(self, load: Callable[[Room], Awaitable[RoomBrief]], clock: Callable[[], float] = time.monotonic,
                 max_age_s: float = MAX_AGE_S) -> None:
        self._load = load
        self._clock = clock
        self._max_age = max_age_s
        self._briefs: dict[str, tuple[float, RoomBrief]] = {}
        self._generation: dict[str, int] = {}  # events seen per room, while it has a brief or a read under way
        self._reading: dict[str, int] = {}

    async def get(self, room: Room) -> RoomBrief:
        sid = room.sid
        kept = self._briefs.get(sid)
        if kept is not None and self._clock() - kept[0] <= self._max_age:
            return kept[1]
        generation = self._generation.get(sid, 0)
        self._reading[sid] = self._reading.get(sid, 0) + 1
        try:
            brief = await self._load(room)
        finally:
            self._reading[sid] -= 1
            if not self._reading[sid]:
                del self._reading[sid]
        if self._generation.get(sid, 0) == generation:
            self._briefs[sid] = (self._clock(), brief)
            if len(self._briefs) > PRUNE_AT:
                self._prune()
        return brief

    def on_event(self, room_sid: str, kind: str) -> None:
        """Called for every event of a room, before it is fanned out."""
        if kind in ROSTER_EVENTS:
            return
        self._briefs.pop(room_sid, None)
        self._generation[room_sid] = self._generation.get(room_sid, 0) + 1
        if len(self._generation) > PRUNE_AT:
            self._prune()

    def __len__(self) -> int:
        return len(self._briefs)

    def _prune(self) -> None:
        """Expired briefs go, and the event counts of rooms with neither a brief nor a read under way (a read
        that starts later starts from a fresh count, which nothing in flight refers to)."""
        now = self._clock()
        for sid in [sid for sid, (at, _) in self._briefs.items() if now - at > self._max_age]:
            del self._briefs[sid]
        for sid in [sid for sid in self._generation if sid not in self._briefs and sid not in self._reading]:
            del self._generation[sid]
