"""Helpers shared by the REST handlers: the success envelope, path parameters, the authenticated org."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control import strictjson
from control import validation as v
from control.api import models
from control.auth import Grant
from control.classroom import ParticipantSpec
from control.errors import ApiError, validation_error
from control.ids import ROOM_ID_RE, ROOM_ID_RULE, UID_RE, UID_RULE
from control.services import SERVICES, Services
from control.store.records import Org

ORG = web.RequestKey("org", Org)
# Set when a browser called with its participant token instead of VF-ORG-ID (the AI tutor endpoints).
GRANT = web.RequestKey("grant", Grant)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def org(request: web.Request) -> Org:
    return request[ORG]


def ok(data: Any = None, message: str | None = None, status: int = 200, **top: Any) -> web.Response:
    body: dict[str, Any] = {"success": True}
    if message is not None:
        body["message"] = message
    body.update(top)
    if data is not None:
        body["data"] = data
    warnings = v.take_warnings()  # known fields we accepted without acting on them (control/validation.py)
    if warnings:
        body["warnings"] = warnings
    return web.json_response(body, status=status, dumps=strictjson.dumps)


def room_id_param(request: web.Request) -> str:
    room_id = request.match_info.get("roomId", "")
    if not room_id:
        raise ApiError(400, "Missing roomId", "MISSING_ROOM_ID")
    if not ROOM_ID_RE.fullmatch(room_id):
        raise validation_error("roomId", ROOM_ID_RULE)
    return room_id


def uid_param(request: web.Request) -> str:
    uid = request.match_info.get("uid", "")
    if not UID_RE.fullmatch(uid):
        raise validation_error("uid", UID_RULE)
    return uid


def participant_spec(p: models.Participant) -> ParticipantSpec:
    return ParticipantSpec(uid=p.uid, name=p.name, role=p.role, photo_url=p.photoURL or p.photoUrl,
                           metadata=p.metadata)


def expires_in(request: web.Request, value: int | None) -> int:
    """The model allows up to a day; the operator's CLASSCAST_TOKEN_MAX_TTL may allow less."""
    cfg = services(request).config
    if value is None:
        return cfg.token_ttl_s
    if value > cfg.token_max_ttl_s:
        raise validation_error("expiresIn", f"must be between 60 and {cfg.token_max_ttl_s}")
    return value


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    digits = raw[1:] if raw[:1] == "-" else raw
    if not (digits.isascii() and digits.isdigit()):  # int() would take " 1", "1_0" and Arabic-Indic digits
        raise validation_error(name, "must be an integer")
    if len(digits) > 18:  # and refuse 4300 digits and more with a ValueError of its own
        raise validation_error(name, f"must be between {minimum} and {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise validation_error(name, f"must be between {minimum} and {maximum}")
    return value
