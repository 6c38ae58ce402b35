"""control/room_brief.py: a room's brief is read once while nothing happens in the room, read again after any
event but a join or a leave, and after MAX_AGE_S; a read that an event overtook is not kept."""

from __future__ import annotations

import asyncio

from control.room_brief import MAX_AGE_S, PRUNE_AT, RoomBrief, RoomBriefs
from control.store.records import Room


class _Room:  # RoomBriefs reads only the sid
    def __init__(self, sid: str) -> None:
        self.sid = sid


def _briefs(now: list[float]) -> tuple[RoomBriefs, list[str]]:
    loads: list[str] = []

    async def load(room: Room) -> RoomBrief:
        loads.append(room.sid)
        return RoomBrief(topic=f"topic {len(loads)}", chat=[], captions=[], recording=False, has_polls=False)

    return RoomBriefs(load, clock=lambda: now[0]), loads


async def test_joins_share_one_read_until_something_happens_in_the_room() -> None:
    now = [100.0]
    briefs, loads = _briefs(now)
    a, b = _Room("RM_a"), _Room("RM_b")
    assert [(await briefs.get(a)).topic for _ in range(5)] == ["topic 1"] * 5
    briefs.on_event("RM_a", "participant_joined")  # joins and leaves change only the roster
    briefs.on_event("RM_a", "participant_left")
    assert (await briefs.get(a)).topic == "topic 1"
    briefs.on_event("RM_b", "chat")  # another room's event
    assert (await briefs.get(a)).topic == "topic 1"
    briefs.on_event("RM_a", "chat")
    assert (await briefs.get(a)).topic == "topic 2"
    await briefs.get(b)
    assert loads == ["RM_a", "RM_a", "RM_b"]


async def test_a_brief_is_read_again_after_its_age() -> None:
    now = [100.0]
    briefs, loads = _briefs(now)
    room = _Room("RM_a")
    await briefs.get(room)
    now[0] += MAX_AGE_S
    await briefs.get(room)
    assert len(loads) == 1
    now[0] += 0.01
    assert (await briefs.get(room)).topic == "topic 2"


async def test_a_read_overtaken_by_an_event_is_not_kept() -> None:
    now = [100.0]
    release = asyncio.Event()
    loads = 0

    async def load(room: Room) -> RoomBrief:
        nonlocal loads
        loads += 1
        if loads == 1:
            await release.wait()
        return RoomBrief(topic=f"read {loads}", chat=[], captions=[], recording=False, has_polls=False)

    briefs = RoomBriefs(load, clock=lambda: now[0])
    room = _Room("RM_a")
    first = asyncio.create_task(briefs.get(room))
    await asyncio.sleep(0)
    briefs.on_event("RM_a", "recording_started")  # committed after the read began: the read may have missed it
    release.set()
    assert (await first).topic == "read 1"  # its joiner gets the event itself
    assert (await briefs.get(room)).topic == "read 2"
    assert (await briefs.get(room)).topic == "read 2"


async def test_many_rooms_leave_no_more_than_their_live_briefs() -> None:
    now = [100.0]
    briefs, _ = _briefs(now)
    for i in range(1000):
        await briefs.get(_Room(f"RM_{i}"))
        briefs.on_event(f"RM_old_{i}", "chat")
        now[0] += 0.01
    assert len(briefs) <= PRUNE_AT + 1  # 1,000 rooms read, one every 10 ms: only the last ones are kept
    assert len(briefs._generation) <= PRUNE_AT + 1
