"""Recordings: start, stop (reference 2.6, 2.7), list (2.8), download links (2.9), bulk delete, and the file
download itself at /recordings/{fileId} (signed links, no VF-ORG-ID: the link is the credential).

The REST caller is the integrator's backend acting for the whole organization, so it is checked as the room's
ADMIN would be: the room's own `allowRecording: false` refuses it too (403). Participants' roles (MODERATOR may not
start) apply to the record button over signaling (control/signaling.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

from control import cluster
from control import validation as v
from control.api import models
from control.api.common import ok, org, room_id_param, services
from control.errors import ApiError, room_not_found
from control.recordings import Recordings, parse_options
from control.roles import Permission, Role, can
from control.store.records import Room

RECORDINGS = web.AppKey("recordings", Recordings)
FILE_ID_RE = re.compile(r"^RF_[A-Za-z0-9]{12}$")


async def _room(request: web.Request) -> Room:
    room = await services(request).store.get_room(org(request).id, room_id_param(request))
    if room is None:
        raise room_not_found()
    return room


def _org_may(room: Room, permission: Permission) -> None:
    if not can(Role.ADMIN, permission, room.customization):
        raise ApiError(403, "Recording is not allowed in this room (allowRecording is false)", "FORBIDDEN")


async def start_recording(request: web.Request) -> web.Response:
    body = await v.read_json(request, optional=True)
    v.ignore_unknown(body, ("options",))
    options = parse_options(body.get("options"))  # the RecordingStart model's options (control/api/models.py)
    room = await _room(request)
    _org_may(room, Permission.START_RECORDING)
    if (forwarded := await cluster.to_host(request, room.sid)) is not None:  # several nodes: the room's host records
        return forwarded
    data = await request.app[RECORDINGS].start(org(request), room, options)
    return ok(data, "Recording started")


async def stop_recording(request: web.Request) -> web.Response:
    body = await v.read_json(request, optional=True)
    v.ignore_unknown(body, ("egressId",))
    room = await _room(request)
    _org_may(room, Permission.STOP_RECORDING)
    if (forwarded := await cluster.to_host(request, room.sid)) is not None:
        return forwarded
    data = await request.app[RECORDINGS].stop(room)
    return ok(data, "Recording stopped")


async def list_recordings(request: web.Request) -> web.Response:
    room = await _room(request)
    return ok(await request.app[RECORDINGS].listing(room), "Recordings retrieved")


async def download_recordings(request: web.Request) -> web.Response:
    room = await _room(request)
    return ok(await request.app[RECORDINGS].downloads(room), "Recordings retrieved")


def _ids(body: dict[str, Any], required: bool) -> list[str] | None:
    if body.get("ids") is None and not required:
        return None
    return list(dict.fromkeys(v.parse(models.RecordingIds, body).ids))


async def delete_room_recordings(request: web.Request) -> web.Response:
    """DELETE /v1/room/:roomId/recordings with {"ids": [...]}, or no body for every finished recording."""
    body = await v.read_json(request, optional=True)
    v.ignore_unknown(body, ("ids",))
    ids = _ids(body, required=False)
    room = await _room(request)
    recs = await services(request).store.room_recordings(room.sid)
    if ids is None:
        ids = [r.id for r in recs if r.status in ("EGRESS_COMPLETE", "EGRESS_FAILED")]
    pairs = [(r, room) for r in recs if r.id in ids]
    return await _delete(request, ids, pairs)


async def delete_recordings(request: web.Request) -> web.Response:
    """DELETE /v1/recordings with {"ids": [...]}: bulk, across the organization's rooms."""
    body = await v.read_json(request)
    v.ignore_unknown(body, ("ids",))
    ids = _ids(body, required=True)
    assert ids is not None
    pairs = await services(request).store.org_recordings(org(request).id, ids)
    return await _delete(request, ids, pairs)


async def _delete(request: web.Request, ids: list[str], pairs: list[Any]) -> web.Response:
    deleted = await request.app[RECORDINGS].delete(pairs)
    return ok({"deleted": deleted, "notFound": [i for i in ids if i not in deleted]}, "Recordings deleted")


async def download_file(request: web.Request) -> web.StreamResponse:
    """The signed link: Range requests are served by FileResponse; video/mp4, or text/vtt for captions."""
    file_id = request.match_info.get("fileId", "")
    if not FILE_ID_RE.fullmatch(file_id):
        raise ApiError(404, "Recording not found or expired", "RECORDING_NOT_FOUND")
    path, filename = await request.app[RECORDINGS].file_for_download(
        file_id, request.query.get("expires", ""), request.query.get("sig", ""))
    response = web.FileResponse(path, headers={
        "Content-Type": "text/vtt; charset=utf-8" if filename.endswith(".vtt") else "video/mp4",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "private, max-age=3600"})
    if _stale_if_range(request, path):  # the whole file, as RFC 9110 13.1.5 says: never a range of another version
        whole = request.clone(headers={k: v for k, v in request.headers.items()
                                       if k.lower() not in ("range", "if-range")})
        await response.prepare(whole)
    return response


def _stale_if_range(request: web.Request, path: Path) -> bool:
    """A resumed download's If-Range names an entity tag that is not the file's now (the captions step rewrites the
    MP4 in place). aiohttp compares only If-Range's date form, and served the range of the new file."""
    value = request.headers.get("If-Range", "").strip()
    if not value or "Range" not in request.headers or not value.startswith(('"', "W/")):
        return False  # no range asked, or a date (aiohttp compares those)
    try:
        st = path.stat()
    except OSError:
        return False  # gone: FileResponse answers 404
    return value != f'"{st.st_mtime_ns:x}-{st.st_size:x}"'  # a weak tag never matches (strong comparison)


def setup(app: web.Application) -> None:
    from control.auth import token_secret
    from control.services import SERVICES
    from control.signaling import HUB

    async def start(app: web.Application) -> None:
        svc = app[SERVICES]
        recordings = Recordings(svc, app[HUB].sfu, token_secret(svc.config))
        app[RECORDINGS] = recordings
        app[HUB].recordings = recordings
        await recordings.start_service(app.get(BACKGROUND, True))

    async def stop(app: web.Application) -> None:
        await app[RECORDINGS].close()

    app.on_startup.append(start)
    app.on_shutdown.insert(0, stop)  # before the hub closes the SFU rooms: running jobs finish first
    r = app.router
    r.add_post("/v1/room/{roomId:[^/]*}/recording/start", start_recording)
    r.add_post("/v1/room/{roomId:[^/]*}/recording/stop", stop_recording)
    r.add_get("/v1/room/{roomId:[^/]*}/recordings", list_recordings)
    r.add_get("/v1/room/{roomId:[^/]*}/recordings/download", download_recordings)
    r.add_delete("/v1/room/{roomId:[^/]*}/recordings", delete_room_recordings)
    r.add_delete("/v1/recordings", delete_recordings)
    r.add_get("/recordings/{fileId}", download_file)


BACKGROUND = web.AppKey("recordings_background", bool)
