"""Several nodes on one database (issue 18): the check-then-write operations hold when nodes race.

Each "node" here is its own Store (own engine and connection pool) and its own Classroom (own in-process locks),
all on one database, exactly as separate `classcast serve` processes would be. What must hold is what the
database enforces: a row lock on the room (`Store.lock_room`) and unique indexes, not an asyncio lock that only
one process sees. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from control.auth import Auth, load_or_create_secret
from control.classroom import Classroom
from control.clock import FakeClock
from control.config import Config
from control.credits import credits_for
from control.errors import ApiError
from control.events import EventBus
from control.store.records import Recording
from control.store.store import RecordingAlreadyLive, Store
from tests.conftest import Api

pytestmark = pytest.mark.both_databases

NODES = 4


@dataclass
class Node:
    store: Store
    classroom: Classroom


@pytest.fixture
async def nodes(api: Api, config: Config, clock: FakeClock) -> AsyncIterator[list[Node]]:
    """The `api` app is node 0; three more nodes open the same database (no start-up recovery: they join a running
    cluster)."""
    out = [Node(api.svc.store, api.svc.classroom)]
    for _ in range(NODES - 1):
        store = await Store.open(config.db_url)
        auth = Auth(load_or_create_secret(config.data_dir), clock, store)
        out.append(Node(store, Classroom(config, store, auth, EventBus(), clock)))
    yield out
    for node in out[1:]:
        await node.store.close()


async def _room(api: Api, room_id: str, seats: int, students: int) -> str:
    await api.create_room(room_id, settings={"maxParticipants": seats})
    room = await api.room(room_id)
    assert room.max_participants == seats
    for i in range(students):
        await api.svc.store.upsert_participant(room.sid, f"s{i}", f"Student {i}", "STUDENT", None, {}, None,
                                               api.clock.now_ms())
    return room.sid


async def test_the_last_seats_go_to_exactly_as_many_joins_as_there_are_seats(api: Api, nodes: list[Node]) -> None:
    """12 students connect at once through 4 nodes to a room of 3 seats: 3 sessions open, 9 joins get ROOM_FULL.
    Without the database's lock, nodes reading the roster at the same moment all see a free seat."""
    sid = await _room(api, "small-room", seats=3, students=12)
    results = await asyncio.gather(*(nodes[i % NODES].classroom.open_session(sid, f"s{i}") for i in range(12)),
                                   return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, ApiError) and r.code == "ROOM_FULL" for r in refused), refused
    assert len(opened) == 3
    assert len(await api.svc.store.room_sessions(sid, active_only=True)) == 3
    assert len(await api.svc.store.active_participants(sid)) == 3


async def test_one_participant_registered_by_several_nodes_at_once_is_one_row(api: Api, nodes: list[Node]) -> None:
    """Join calls for one uid reaching four nodes at once all succeed and name one participant (an upsert, not a
    read-then-insert that three of them would lose with a unique violation)."""
    await api.create_room("algebra")
    sid = (await api.room("algebra")).sid
    results = await asyncio.gather(*(
        node.store.upsert_participant(sid, "ana", f"Ana {i}", "STUDENT", None, {}, None, api.clock.now_ms())
        for i, node in enumerate(nodes)))
    assert len({p.id for p in results}) == 1
    assert [p.uid for p in await api.svc.store.list_participants(sid)].count("ana") == 1


async def test_one_live_recording_per_room_when_nodes_start_it_at_once(api: Api, nodes: list[Node]) -> None:
    """Four nodes insert a live recording for one room, each in its own transaction: one commits, three are told
    the room already records, and their transactions roll back cleanly (what they wrote with it is gone)."""
    await api.create_room("physics")
    room = await api.room("physics")

    async def start(i: int, node: Node) -> str:
        rec = Recording(id=f"EG_race{i}", room_sid=room.sid, status="EGRESS_STARTING", options={},
                        started_at=api.clock.now_ms(), ended_at=None, file_path=None, size=None, duration=None,
                        error=None)
        async with node.store.atomic():
            await node.store.set_meta(f"started-{i}", "yes")  # stands for the outbox row written with it
            await node.store.insert_recording(rec)
        return rec.id

    results = await asyncio.gather(*(start(i, n) for i, n in enumerate(nodes)), return_exceptions=True)
    won = [r for r in results if isinstance(r, str)]
    assert len(won) == 1, results
    assert all(isinstance(r, RecordingAlreadyLive) for r in results if not isinstance(r, str)), results
    assert [r.id for r in await api.svc.store.live_recordings(room.sid)] == won
    kept = [i for i in range(NODES) if await api.svc.store.get_meta(f"started-{i}") == "yes"]
    assert [f"EG_race{i}" for i in kept] == won


async def test_ending_a_room_while_nodes_join_and_leave_it_neither_deadlocks_nor_misbills(
        api: Api, nodes: list[Node]) -> None:
    """One node ends the class while the others close and open sessions of it. Every transaction takes the room
    first, so none deadlocks; afterwards no session is open and the room's debit is its summary's credits."""
    sid = await _room(api, "busy", seats=50, students=16)
    c0 = nodes[0].classroom
    sessions = [await nodes[i % NODES].classroom.open_session(sid, f"s{i}") for i in range(8)]
    api.clock.advance(100)
    room = await api.room("busy")

    async def leave(i: int) -> None:
        await nodes[1 + i % (NODES - 1)].classroom.close_session(sessions[i].id)

    async def join(i: int) -> None:
        try:
            await nodes[1 + i % (NODES - 1)].classroom.open_session(sid, f"s{i}")
        except ApiError as exc:
            assert exc.code == "ROOM_ENDED", exc  # came after the end

    await asyncio.gather(c0.end_room(room, "ended_by_api"), *(leave(i) for i in range(8)),
                         *(join(i) for i in range(8, 16)))
    store = api.svc.store
    assert await store.room_sessions(sid, active_only=True) == []
    room = await api.room("busy")
    assert room.ended
    now = api.clock.now_ms()
    total_ms = sum(s.duration_ms(now) for s in await store.room_sessions(sid))
    assert total_ms >= 8 * 100_000
    assert room.credits_debited == credits_for(total_ms)
    usage = [e["delta"] for e in await store.ledger(api.org.id) if e["room_sid"] == sid]
    assert -sum(usage) == room.credits_debited


async def test_a_recording_another_node_started_after_this_ones_check_is_a_409(
        api: Api, nodes: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """The REST start reads 'no live recording', then another node commits one before this node inserts: the
    unique index refuses the insert and the caller gets the same 409 as a sequential second start, with no
    recording_started announced for it."""
    await api.create_room("chemistry")
    room = await api.room("chemistry")
    await nodes[1].store.insert_recording(Recording(
        id="EG_other", room_sid=room.sid, status="EGRESS_STARTING", options={}, started_at=api.clock.now_ms(),
        ended_at=None, file_path=None, size=None, duration=None, error=None))

    async def checked_before_the_other_node_committed(_sid: str) -> list[Recording]:
        return []

    monkeypatch.setattr(api.svc.store, "live_recordings", checked_before_the_other_node_committed)
    status, body = await api.post("/v1/room/chemistry/recording/start")
    assert (status, body["error"]) == (409, "RECORDING_ALREADY_STARTED"), body
    assert [r.id for r in await nodes[2].store.room_recordings(room.sid)] == ["EG_other"]
    assert not [e for e in api.events if e.type == "recording_started"]
