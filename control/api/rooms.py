"""Rooms: create, join, status, summary, destroy (reference 2.1-2.5, seed 001) and our list."""

from __future__ import annotations

from aiohttp import web

from control import validation as v
from control.api import models
from control.api.common import expires_in, ok, org, participant_spec, query_int, room_id_param, services
from control.classroom import RoomSpec
from control.errors import validation_error


async def _limit(request: web.Request, kind: str) -> None:
    svc = services(request)
    await svc.limits.check(kind, org(request).id, request.remote, svc.clock.now_ms() / 1000)


async def create_room(request: web.Request) -> web.Response:
    await _limit(request, "create")
    body = v.parse(models.CreateRoom, await v.read_json(request))
    # `title` is the API's name; the concepts page calls it roomName.
    title = body.title or body.roomName
    if not title:
        raise validation_error("title", "is required")
    settings = body.settings or models.Settings()
    spec = RoomSpec(
        room_id=body.roomId, title=title, description=body.roomDescription or body.description or None,
        customization=_customization(body.customization), max_participants=settings.maxParticipants,
        empty_timeout=settings.emptyTimeout, auto_close=settings.autoClose,
    )
    ttl = expires_in(request, body.expiresIn)
    data = await services(request).classroom.create_room(org(request), spec, participant_spec(body.participant), {},
                                                         ttl)
    return ok(data, "Room created successfully")


async def join_room(request: web.Request) -> web.Response:
    await _limit(request, "join")
    room_id = room_id_param(request)
    body = v.parse(models.JoinRoom, await v.read_json(request))
    ttl = expires_in(request, body.expiresIn)
    data = await services(request).classroom.join(org(request), room_id, participant_spec(body.participant),
                                                  _customization(body.customization), ttl)
    return ok(data)


def _customization(value: models.Customization | None) -> dict[str, object]:
    """Only the keys the client set: room and join values are merged key by key later."""
    return value.model_dump(exclude_none=True) if value is not None else {}


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
