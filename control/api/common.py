"""Helpers shared by the REST handlers: the success envelope, path parameters, the authenticated org."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from control import strictjson
from control import validation as v
from control.auth import Grant
from control.classroom import ParticipantSpec
from control.errors import ApiError, validation_error
from control.ids import ROOM_ID_RE, ROOM_ID_RULE, UID_RE, UID_RULE
from control.roles import Role, parse_role
from control.services import SERVICES, Services
from control.store.records import Org

ORG = web.RequestKey("org", Org)
# Set when a browser called with its participant token instead of VF-ORG-ID (the AI tutor endpoints).
GRANT = web.RequestKey("grant", Grant)
PARTICIPANT_FIELDS = ("uid", "name", "role", "photoURL", "photoUrl", "metadata")
MAX_METADATA_BYTES = 4096


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


def participant_spec(body: dict[str, Any]) -> ParticipantSpec:
    p = v.obj(body, "participant", required=True)
    assert p is not None
    v.ignore_unknown(p, PARTICIPANT_FIELDS, "participant.")
    uid = v.string(p, "uid", "participant.", required=True, max_len=128, pattern=UID_RE, rule=UID_RULE)
    name = v.string(p, "name", "participant.", required=True, max_len=99)
    if "role" not in p or p["role"] is None:
        raise validation_error("participant.role", "is required")
    role = parse_role(p["role"])
    if role is None:
        raise validation_error("participant.role", f"must be one of {', '.join(r.value for r in Role)}")
    photo = v.url(p, "photoURL", "participant.") or v.url(p, "photoUrl", "participant.")
    metadata = p.get("metadata")
    if metadata is not None:
        if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise validation_error("participant.metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    assert uid is not None and name is not None
    return ParticipantSpec(uid=uid, name=name, role=role.value, photo_url=photo, metadata=metadata)


def expires_in(request: web.Request, body: dict[str, Any]) -> int:
    cfg = services(request).config
    value = v.integer(body, "expiresIn", minimum=60, maximum=cfg.token_max_ttl_s, default=cfg.token_ttl_s)
    assert value is not None
    return value


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(name, "must be an integer") from None
    if not minimum <= value <= maximum:
        raise validation_error(name, f"must be between {minimum} and {maximum}")
    return value
