"""Kick, mute, unmute, mute-all: state changes and events for signaling (our additions)."""

from __future__ import annotations

import pytest

from control.errors import ApiError
from tests.conftest import Api


async def test_kick_closes_sessions_blocks_rejoin_and_emits(api: Api) -> None:
    await api.create_room()
    await api.join("math-101", "s1")
    room = await api.room("math-101")
    await api.svc.classroom.open_session(room.sid, "s1")
    api.events.clear()
    status, body = await api.post("/v1/room/math-101/participants/s1/remove", {"reason": "disruptive"})
    assert status == 200
    assert body["data"] == {"roomId": "math-101", "uid": "s1", "removed": True, "sessionsClosed": 1}
    removed = [e for e in api.events if e.type == "participant_removed"]
    assert len(removed) == 1
    assert removed[0].data["participant"]["uid"] == "s1" and removed[0].data["reason"] == "disruptive"
    assert not await api.svc.store.room_sessions(room.sid, active_only=True)
    # The uid cannot come back, neither with a new token nor through signaling.
    status, body = await api.post("/v1/room/math-101/join", {"participant": {"uid": "s1", "name": "S",
                                                                             "role": "STUDENT"}})
    assert (status, body["code"]) == (403, "PARTICIPANT_REMOVED")
    with pytest.raises(ApiError) as err:
        await api.svc.classroom.open_session(room.sid, "s1")
    assert err.value.code == "PARTICIPANT_REMOVED"
    api.events.clear()  # nor muted: a mute would announce a change to a participant nobody sees
    for action in ("mute", "unmute"):
        status, body = await api.post(f"/v1/room/math-101/participants/s1/{action}")
        assert (status, body["code"]) == (403, "PARTICIPANT_REMOVED"), body
    assert not api.events


async def test_mute_unmute_and_mute_all(api: Api) -> None:
    await api.create_room()
    for uid in ("s1", "s2", "s3"):
        await api.join("math-101", uid)
    api.events.clear()
    status, body = await api.post("/v1/room/math-101/participants/s1/mute")
    assert status == 200 and body["data"] == {"roomId": "math-101", "uid": "s1", "muted": True}
    room = await api.room("math-101")
    assert (await api.svc.store.get_participant(room.sid, "s1")).muted is True  # type: ignore[union-attr]
    status, body = await api.post("/v1/room/math-101/participants/s1/unmute")
    assert body["data"]["muted"] is False
    assert [e.type for e in api.events] == ["participant_muted", "participant_unmuted"]

    api.events.clear()
    status, body = await api.post("/v1/room/math-101/mute-all", {"exceptUids": ["teacher-1"]})
    assert status == 200 and body["data"]["mutedCount"] == 3
    assert sorted(body["data"]["muted"]) == ["s1", "s2", "s3"]
    assert [e.type for e in api.events] == ["participant_muted"] * 3
    participants = {p.uid: p.muted for p in await api.svc.store.list_participants(room.sid)}
    assert participants == {"teacher-1": False, "s1": True, "s2": True, "s3": True}


async def test_moderation_errors(api: Api) -> None:
    await api.create_room()
    status, body = await api.post("/v1/room/math-101/participants/ghost/mute")
    assert (status, body["message"]) == (404, "Participant not found")
    status, body = await api.post("/v1/room/nope/participants/s1/remove")
    assert (status, body["message"]) == (404, "Room not found")
    status, body = await api.post("/v1/room/math-101/participants/bad%20uid/mute")
    assert status == 400 and body["message"].startswith("Validation failed: uid")
    status, body = await api.post("/v1/room/math-101/mute-all", {"exceptUids": "teacher-1"})
    assert status == 400
    status, body = await api.post("/v1/room/math-101/participants/teacher-1/remove", {"reason": 5})
    assert (status, body["message"]) == (400, "Validation failed: reason must be a string")
    await api.delete("/v1/room/math-101")
    status, body = await api.post("/v1/room/math-101/participants/teacher-1/mute")
    assert (status, body["message"]) == (410, "Room already ended")


async def test_session_events_for_signaling(api: Api) -> None:
    await api.create_room()
    await api.join("math-101", "s1")
    room = await api.room("math-101")
    c = api.svc.classroom
    api.events.clear()
    first = await c.open_session(room.sid, "s1")
    second = await c.open_session(room.sid, "s1")  # a second tab: still one participant
    await c.close_session(first.id)
    assert [e.type for e in api.events] == ["participant_joined"]
    await c.close_session(second.id)
    assert [e.type for e in api.events] == ["participant_joined", "participant_left"]
    assert api.events[1].data["participant"]["uid"] == "s1"
    assert await c.close_session(second.id) is None  # idempotent
