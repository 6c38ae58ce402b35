"""Rooms: create, join, status, summary, destroy (reference 2.1-2.5, seed 001) and our list."""

from __future__ import annotations

from aiohttp import web

from control import validation as v
from control.api.common import expires_in, ok, org, participant_spec, query_int, room_id_param, services
from control.classroom import (
    DEFAULT_EMPTY_TIMEOUT_S,
    DEFAULT_MAX_PARTICIPANTS,
    MAX_EMPTY_TIMEOUT_S,
    MAX_MAX_PARTICIPANTS,
    RoomSpec,
)
from control.errors import validation_error
from control.ids import ROOM_ID_RE, ROOM_ID_RULE

CREATE_FIELDS = (
    "roomId", "title", "roomName", "roomDescription", "description", "participant", "customization", "settings",
    "expiresIn",
)
JOIN_FIELDS = ("participant", "customization", "expiresIn")
SETTINGS_FIELDS = ("maxParticipants", "emptyTimeout", "autoClose")


def _limit(request: web.Request, kind: str) -> None:
    svc = services(request)
    svc.limits.check(kind, org(request).id, request.remote, svc.clock.now_ms() / 1000)


async def create_room(request: web.Request) -> web.Response:
    _limit(request, "create")
    body = await v.read_json(request)
    v.ignore_unknown(body, CREATE_FIELDS)
    room_id = v.string(body, "roomId", required=True, max_len=128, pattern=ROOM_ID_RE, rule=ROOM_ID_RULE)
    # `title` is the API's name; the concepts page calls it roomName.
    title = v.string(body, "title", max_len=200) or v.string(body, "roomName", max_len=200)
    if not title:
        raise validation_error("title", "is required")
    description = v.string(body, "roomDescription", max_len=2000) or v.string(body, "description", max_len=2000)
    participant = participant_spec(body)
    customization = v.customization(body)
    settings = v.obj(body, "settings") or {}
    v.ignore_unknown(settings, SETTINGS_FIELDS, "settings.")
    max_participants = v.integer(
        settings, "maxParticipants", "settings.", minimum=1, maximum=MAX_MAX_PARTICIPANTS,
        default=DEFAULT_MAX_PARTICIPANTS,
    )
    empty_timeout = v.integer(
        settings, "emptyTimeout", "settings.", minimum=0, maximum=MAX_EMPTY_TIMEOUT_S,
        default=DEFAULT_EMPTY_TIMEOUT_S,
    )
    auto_close = v.boolean(settings, "autoClose", "settings.", default=False)
    ttl = expires_in(request, body)
    assert room_id is not None and max_participants is not None and empty_timeout is not None
    spec = RoomSpec(
        room_id=room_id, title=title, description=description or None, customization=customization,
        max_participants=max_participants, empty_timeout=empty_timeout, auto_close=bool(auto_close),
    )
    data = await services(request).classroom.create_room(org(request), spec, participant, {}, ttl)
    return ok(data, "Room created successfully")


async def join_room(request: web.Request) -> web.Response:
    _limit(request, "join")
    room_id = room_id_param(request)
    body = await v.read_json(request)
    v.ignore_unknown(body, JOIN_FIELDS)
    participant = participant_spec(body)
    customization = v.customization(body)
    ttl = expires_in(request, body)
    data = await services(request).classroom.join(org(request), room_id, participant, customization, ttl)
    return ok(data)


async def room_status(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    data = await services(request).classroom.status(org(request), room_id)
    message = "Room status retrieved" if data["exists"] else "Room not found"
    # The official SDK reads isActive at the top level (reference 2.3): send it there too.
    return ok(data, message, exists=data["exists"], isActive=data["isActive"])


async def room_summary(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    return ok(await services(request).classroom.summary(org(request), room_id))


async def destroy_room(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    classroom = services(request).classroom
    room = await classroom.get_room(org(request), room_id)
    data = await classroom.end_room(room, "destroyed")
    return ok(data, "Room destroyed successfully")


async def list_rooms(request: web.Request) -> web.Response:
    status = request.query.get("status", "all")
    if status not in ("all", "created", "live", "finished"):
        raise validation_error("status", "must be one of all, created, live, finished")
    page = query_int(request, "page", default=1, minimum=1, maximum=1_000_000)
    limit = query_int(request, "limit", default=20, minimum=1, maximum=100)
    return ok(await services(request).classroom.list_rooms(org(request), status, page, limit))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/room/create", create_room)
    r.add_post("/v1/room/{roomId:[^/]*}/join", join_room)
    r.add_get("/v1/room/{roomId:[^/]*}/status", room_status)
    r.add_get("/v1/room/{roomId:[^/]*}/summary", room_summary)
    r.add_delete("/v1/room/{roomId:[^/]*}", destroy_room)
    r.add_get("/v1/rooms", list_rooms)
