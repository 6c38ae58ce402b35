"""Create, join, status, destroy, list: reference sections 2.1-2.4 and our room list."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt

from control.app import create_app
from control.clock import FakeClock, iso
from control.config import Config
from control.services import SERVICES
from tests.conftest import Api


async def test_create_returns_token_iframe_and_both_room_shapes(api: Api) -> None:
    data = await api.create_room("bio-204", settings={"maxParticipants": 50})
    assert data["iframeUrl"] == f"https://class.example.test/iframe/live?token={data['token']}"
    assert data["roomId"] == "bio-204"
    assert data["room"]["roomId"] == "bio-204"
    assert data["room"]["sid"].startswith("RM_")
    # Default lifetime is one hour, expressed as the seeds' timestamp form.
    assert data["expiresAt"] == iso(api.clock.now_ms() // 1000 * 1000 + 3600_000)
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(data["token"])["alg"] == "HS256"
    for key in ("org", "room", "uid", "name", "role", "photo", "iat", "exp", "jti"):
        assert key in claims, key
    assert (claims["org"], claims["room"], claims["uid"], claims["role"]) == (api.org.id, "bio-204", "teacher-1",
                                                                             "TEACHER")
    room = await api.room("bio-204")
    assert room.max_participants == 50 and room.empty_timeout == 300


async def test_create_accepts_concepts_seed_names(api: Api) -> None:
    status, body = await api.post("/v1/room/create", {
        "roomId": "math-101", "roomName": "Introduction to Algebra", "roomDescription": "Covering chapters 1-3",
        "participant": {"uid": "t", "name": "T", "role": "TEACHER", "photoUrl": "https://example.com/t.jpg"},
    })
    assert status == 200, body
    room = await api.room("math-101")
    assert (room.title, room.description) == ("Introduction to Algebra", "Covering chapters 1-3")
    participant = await api.svc.store.get_participant(room.sid, "t")
    assert participant is not None and participant.photo_url == "https://example.com/t.jpg"


async def test_settings_limits_are_enforced(api: Api) -> None:
    base = {"roomId": "r1", "title": "x", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}
    for settings, field in (({"maxParticipants": 5001}, "settings.maxParticipants"),
                            ({"emptyTimeout": 1801}, "settings.emptyTimeout"),
                            ({"maxParticipants": "ten"}, "settings.maxParticipants"),
                            ({"autoClose": "yes"}, "settings.autoClose")):
        status, body = await api.post("/v1/room/create", {**base, "settings": settings})
        assert status == 400, settings
        assert body["message"].startswith(f"Validation failed: {field}")
        assert body["errors"] == {field: body["message"].removeprefix(f"Validation failed: {field} ")}
    status, body = await api.post("/v1/room/create", {**base, "settings": {"maxParticipants": 5000,
                                                                            "emptyTimeout": 1800}})
    assert status == 200, body


async def test_room_id_is_never_reused_even_after_end(api: Api) -> None:
    await api.create_room("algebra-1")
    status, body = await api.post("/v1/room/create", {
        "roomId": "algebra-1", "title": "again", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    assert status == 409 and body["success"] is False and body["code"] == "ROOM_ALREADY_EXISTS"
    status, _ = await api.delete("/v1/room/algebra-1")
    assert status == 200
    status, body = await api.post("/v1/room/create", {
        "roomId": "algebra-1", "title": "again", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    assert status == 409


async def test_room_ids_are_per_organization(api: Api) -> None:
    await api.create_room("shared-name")
    other = await api.svc.store.create_org("Other", 500, api.clock.now_ms())
    status, body = await api.post("/v1/room/create", {
        "roomId": "shared-name", "title": "x", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}},
        headers={"VF-ORG-ID": other.id})
    assert status == 200, body
    status, body = await api.get("/v1/room/shared-name/summary", headers={"VF-ORG-ID": other.id})
    assert status == 200 and body["data"]["roomName"] == "x"
    status, body = await api.get("/v1/room/shared-name/summary")
    assert body["data"]["roomName"] == "Calculus I - Morning Session"


async def test_join_issues_token_with_requested_lifetime(api: Api) -> None:
    await api.create_room()
    status, body = await api.post("/v1/room/math-101/join", {
        "participant": {"uid": "student-456", "name": "Jane Smith", "role": "STUDENT",
                        "photoURL": "https://example.com/jane.jpg"},
        "expiresIn": 600})
    assert status == 200, body
    assert set(body["data"]) == {"token", "iframeUrl", "expiresAt"}
    claims = jwt.decode(body["data"]["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600
    assert claims["photo"] == "https://example.com/jane.jpg"
    status, body = await api.post("/v1/room/math-101/join", {
        "participant": {"uid": "s", "name": "S", "role": "STUDENT"}, "expiresIn": 24 * 3600 + 1})
    assert status == 400 and "expiresIn" in body["message"]


async def test_the_operators_cap_on_token_lifetimes(aiohttp_client: Any, config: Config, clock: FakeClock) -> None:
    """CLASSCAST_TOKEN_MAX_TTL: a join may ask up to the cap, not past it, and the default lifetime stays under it."""
    app = await create_app(Config.from_env({"CLASSCAST_TOKEN_MAX_TTL": "900",
                                            "CLASSCAST_DATA_DIR": str(config.data_dir)}), clock, background=False)
    client = await aiohttp_client(app)
    org = await app[SERVICES].store.create_org("Capped School", 10_000, clock.now_ms())
    api = Api(client=client, svc=app[SERVICES], org=org, clock=clock)
    data = await api.create_room()
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    for asked, status in ((900, 200), (901, 400)):
        got, body = await api.post("/v1/room/math-101/join", {
            "participant": {"uid": "s", "name": "S", "role": "STUDENT"}, "expiresIn": asked})
        assert got == status, body
    assert "must be between 60 and 900" in body["message"]


async def test_join_errors(api: Api) -> None:
    status, body = await api.post("/v1/room/nope/join", {"participant": {"uid": "s", "name": "S", "role": "STUDENT"}})
    assert (status, body["message"]) == (404, "Room not found")
    await api.create_room()
    status, body = await api.post("/v1/room/math-101/join", {"participant": {"uid": "s", "name": "S", "role": "GUEST"}})
    assert status == 400 and body["message"].startswith("Validation failed: participant.role")
    status, body = await api.post("/v1/room/math-101/join", {"participant": {"name": "S", "role": "STUDENT"}})
    assert (status, body["message"]) == (400, "Validation failed: participant.uid is required")
    status, body = await api.post("/v1/room/math-101/join", {"participant": {"uid": "s", "name": "x" * 100,
                                                                             "role": "STUDENT"}})
    assert status == 400 and "participant.name" in body["message"]
    await api.delete("/v1/room/math-101")
    status, body = await api.post("/v1/room/math-101/join", {"participant": {"uid": "s", "name": "S",
                                                                             "role": "STUDENT"}})
    assert (status, body["message"]) == (404, "Room not found")


async def test_max_participants_enforced_at_join(api: Api) -> None:
    await api.create_room(settings={"maxParticipants": 2})
    room = await api.room("math-101")
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    await api.join("math-101", "s1")
    await api.svc.classroom.open_session(room.sid, "s1")
    status, body = await api.post("/v1/room/math-101/join", {"participant": {"uid": "s2", "name": "S2",
                                                                             "role": "STUDENT"}})
    assert status == 403 and body["code"] == "ROOM_FULL"
    # someone already inside may get a fresh token (a reconnect), and a seat frees up when one leaves
    await api.join("math-101", "s1")
    sessions = await api.svc.store.room_sessions(room.sid, active_only=True)
    await api.svc.classroom.close_session(next(s.id for s in sessions if s.uid == "s1"))
    await api.join("math-101", "s2")


async def test_concurrent_session_opens_fill_the_room_exactly(api: Api) -> None:
    """A class joining at once: the capacity check and the session write share one transaction per join, so no
    more participants get in than maxParticipants, and one already in may open another session when it is full."""
    await api.create_room(settings={"maxParticipants": 4})
    room = await api.room("math-101")
    for i in range(8):
        await api.join("math-101", f"s{i}")  # tokens are handed out while the room is still empty
    api.events.clear()
    c = api.svc.classroom
    results = await asyncio.gather(*(c.open_session(room.sid, f"s{i}") for i in range(8)), return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(opened) == 4 and all(getattr(e, "code", None) == "ROOM_FULL" for e in refused)
    inside = sorted(s.uid for s in opened)
    assert sorted(p.uid for p in await api.svc.store.active_participants(room.sid)) == inside
    assert await api.svc.store.presence(room.sid, inside[0]) == (4, True)
    assert await api.svc.store.presence(room.sid, "nobody") == (4, False)
    assert sorted(e.data["participant"]["uid"] for e in api.events if e.type == "participant_joined") == inside
    again = await c.open_session(room.sid, inside[0])  # a second tab of someone inside: no new participant
    assert again.uid == inside[0]
    assert [e.type for e in api.events].count("participant_joined") == 4
    assert len(await api.svc.store.room_sessions(room.sid, active_only=True)) == 5


async def test_status_for_unknown_created_live_and_ended_room(api: Api) -> None:
    status, body = await api.get("/v1/room/ghost/status")
    assert status == 200
    assert body["message"] == "Room not found"
    assert body["data"] == {"exists": False, "isActive": False, "roomId": "ghost"}
    created_at = api.clock.now_ms()
    await api.create_room()
    status, body = await api.get("/v1/room/math-101/status")
    assert body["data"]["exists"] is True and body["data"]["isActive"] is False
    assert body["data"]["createdAt"] == iso(created_at) and body["data"]["startedAt"] is None
    status, body = await api.get("/v1/room/math-101/summary")
    assert body["data"]["status"] == "created", "never started: not live (its status says isActive: false)"

    room = await api.room("math-101")
    api.clock.advance(30)
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    await api.join("math-101", "s1")
    await api.svc.classroom.open_session(room.sid, "s1")
    status, body = await api.get("/v1/room/math-101/status")
    data = body["data"]
    assert body["message"] == "Room status retrieved"
    assert (data["isActive"], data["participantCount"], data["hasTeacher"], data["isRecording"]) == (
        True, 2, True, False)
    assert data["startedAt"] == iso(created_at + 30_000)
    assert body["isActive"] is True  # the SDK's top-level read
    status, body = await api.get("/v1/room/math-101/summary")
    assert body["data"]["status"] == "live"

    await api.delete("/v1/room/math-101")
    status, body = await api.get("/v1/room/math-101/status")
    assert body["data"]["exists"] is True and body["data"]["isActive"] is False
    assert body["data"]["participantCount"] == 0


async def test_destroy_disconnects_everyone_and_is_410_twice(api: Api) -> None:
    await api.create_room()
    room = await api.room("math-101")
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    for uid in ("s1", "s2"):
        await api.join("math-101", uid)
        await api.svc.classroom.open_session(room.sid, uid)
    api.clock.advance(60)
    status, body = await api.delete("/v1/room/math-101")
    assert status == 200 and body["message"] == "Room destroyed successfully"
    assert body["data"] == {"roomId": "math-101", "participantsDisconnected": 3, "wasRecording": False,
                            "endedAt": iso(api.clock.now_ms())}
    assert not await api.svc.store.room_sessions(room.sid, active_only=True)
    ended = [e for e in api.events if e.type == "class_ended"]
    assert len(ended) == 1 and ended[0].room_id == "math-101"
    status, body = await api.delete("/v1/room/math-101")
    assert (status, body["message"], body["status"]) == (410, "Room already ended", 410)
    status, body = await api.delete("/v1/room/unknown")
    assert (status, body["message"]) == (404, "Room not found")


async def test_destroy_stops_a_running_recording(api: Api) -> None:
    from sqlalchemy import insert

    from control.store import schema as t

    await api.create_room()
    room = await api.room("math-101")
    async with api.svc.store.engine.begin() as conn:
        await conn.execute(insert(t.recordings).values(id="EG_test", room_sid=room.sid, status="EGRESS_ACTIVE",
                                                       options="{}", started_at=api.clock.now_ms()))
    status, body = await api.get("/v1/room/math-101/status")
    assert body["data"]["isRecording"] is True
    _status, body = await api.delete("/v1/room/math-101")
    assert body["data"]["wasRecording"] is True
    assert not await api.svc.store.live_recordings(room.sid)


async def test_empty_room_finishes_after_empty_timeout(api: Api) -> None:
    await api.create_room(settings={"emptyTimeout": 120})
    room = await api.room("math-101")
    session = await api.svc.classroom.open_session(room.sid, "teacher-1")
    api.clock.advance(600)
    await api.svc.classroom.tick()
    assert not (await api.room("math-101")).ended  # occupied rooms never time out
    await api.svc.classroom.close_session(session.id)
    api.clock.advance(119)
    await api.svc.classroom.tick()
    assert not (await api.room("math-101")).ended
    # rejoining inside the window resets it
    session = await api.svc.classroom.open_session(room.sid, "teacher-1")
    api.clock.advance(10)
    await api.svc.classroom.close_session(session.id)
    api.clock.advance(119)
    await api.svc.classroom.tick()
    assert not (await api.room("math-101")).ended
    api.clock.advance(1)
    await api.svc.classroom.tick()
    ended = await api.room("math-101")
    assert ended.ended and ended.end_reason == "empty_timeout"
    _status, body = await api.get("/v1/room/math-101/summary")
    assert body["data"]["status"] == "finished"


async def test_list_rooms_filters_and_paginates(api: Api) -> None:
    for i in range(5):
        await api.create_room(f"room-{i}")
        api.clock.advance(1)
    await api.delete("/v1/room/room-0")
    status, body = await api.get("/v1/rooms", params={"limit": 2})
    assert status == 200
    assert [r["roomId"] for r in body["data"]["rooms"]] == ["room-4", "room-3"]
    assert body["data"]["pagination"] == {"page": 1, "limit": 2, "total": 5, "totalPages": 3}
    status, body = await api.get("/v1/rooms", params={"status": "finished"})
    assert [r["roomId"] for r in body["data"]["rooms"]] == ["room-0"]
    status, body = await api.get("/v1/rooms", params={"status": "created", "page": 2, "limit": 3})
    assert [r["roomId"] for r in body["data"]["rooms"]] == ["room-1"]
    assert {r["status"] for r in body["data"]["rooms"]} == {"created"}
    status, body = await api.get("/v1/rooms", params={"status": "live"})
    assert body["data"]["rooms"] == [], "nobody joined any of them: none is live"
    status, body = await api.get("/v1/rooms", params={"status": "sideways"})
    assert status == 400
    status, body = await api.get("/v1/rooms", params={"limit": 101})
    assert status == 400


async def test_customization_is_stored_and_merged_key_by_key(api: Api) -> None:
    from control.validation import effective_customization

    await api.create_room(customization={"needChat": False, "theme": "dark"})
    status, body = await api.post("/v1/room/math-101/join", {
        "participant": {"uid": "s", "name": "S", "role": "STUDENT"},
        "customization": {"theme": "light", "allowHandRaise": False}})
    assert status == 200
    room = await api.room("math-101")
    p = await api.svc.store.get_participant(room.sid, "s")
    assert p is not None
    merged = effective_customization(room.customization, p.customization)
    assert merged["needChat"] is False  # room level kept
    assert merged["theme"] == "light"  # participant overrides
    assert merged["allowHandRaise"] is False
    assert merged["showLobby"] is True  # default
    status, body = await api.post("/v1/room/math-101/join", {
        "participant": {"uid": "s", "name": "S", "role": "STUDENT"}, "customization": {"theme": "neon"}})
    assert status == 400
    assert body["message"] == "Validation failed: customization.theme must be one of system, light, dark"
