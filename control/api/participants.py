"""Participant sessions (reference 2.10) and our moderation endpoints (kick, mute, mute-all)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from control import credits as cr
from control import validation as v
from control.api import models
from control.api.common import ok, org, room_id_param, services, uid_param
from control.clock import day_start_ms, iso, utc_date
from control.errors import participant_not_found, room_not_found, validation_error
from control.store.records import Room, Session

CSV_COLUMNS = (
    "sessionId", "roomId", "roomTitle", "uid", "name", "role", "joinedAt", "leftAt", "duration", "credits",
    "isActive", "ipAddress",
)


def _date(raw: str | None, key: str) -> date | None:
    if not raw:
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
        else:
            moment = datetime.fromisoformat(raw)
            day = (moment.astimezone(UTC) if moment.tzinfo is not None else moment).date()  # days are UTC days
    except (ValueError, OverflowError):
        raise validation_error(key, "must be an ISO date such as 2024-01-15") from None
    if day >= date.max:  # its end, the next midnight, is past the calendar
        raise validation_error(key, f"must be before {date.max.isoformat()}")
    return day


def _session_json(s: Session, room: Room, now: int) -> dict[str, Any]:
    duration_ms = s.duration_ms(now)
    return {
        "sessionId": s.id,
        "roomId": room.room_id,
        "joinedAt": iso(s.joined_at),
        "leftAt": iso(s.left_at),
        "duration": duration_ms // 1000,
        "credits": cr.session_credits(duration_ms),
        "isActive": s.active,
        "ipAddress": s.ip_address,
        "leaveReason": s.leave_reason,
    }


def _csv_cell(value: Any) -> str:
    """Cells that a spreadsheet would run as a formula are quoted (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def participant_sessions(request: web.Request) -> web.StreamResponse:
    query = v.parse(models.SessionsQuery, await v.read_json(request))
    uid, room_id, page, limit, export = query.uid, query.roomId, query.page, query.limit, query.export
    start, end = _date(query.startDate, "startDate"), _date(query.endDate, "endDate")
    if end is not None and start is None:
        raise validation_error("endDate", "is only allowed together with startDate")

    svc = services(request)
    the_org = org(request)
    now = svc.clock.now_ms()
    if start is None:
        start = utc_date(now)  # no dates: today only
    if end is None:
        end = start  # only startDate: that single day
    if end < start:
        raise validation_error("endDate", "must not be before startDate")

    room_sid = None
    if room_id:
        room = await svc.store.get_room(the_org.id, room_id)
        if room is None:
            raise room_not_found()
        room_sid = room.sid
    person = await svc.store.latest_participant(the_org.id, uid)
    if person is None:
        raise participant_not_found()
    rows = await svc.store.uid_sessions(
        the_org.id, uid, room_sid, day_start_ms(start), day_start_ms(end + timedelta(days=1))
    )

    if export == "csv":
        return _csv_response(rows, person.name, person.role, uid, start, end, now)

    total_ms = sum(s.duration_ms(now) for s, _ in rows)
    page_rows = rows[(page - 1) * limit : page * limit]
    data: dict[str, Any] = {"participant": {"uid": uid, "name": person.name, "role": person.role}}
    if room_id:
        data["roomId"] = room_id
        data["roomTitle"] = rows[0][1].title if rows else None
        data["sessions"] = [_session_json(s, r, now) for s, r in page_rows]
    else:
        groups: dict[str, dict[str, Any]] = {}
        for s, r in page_rows:
            group = groups.setdefault(r.sid, {"roomId": r.room_id, "roomTitle": r.title, "sessions": []})
            group["sessions"].append(_session_json(s, r, now))
        data["roomGroups"] = list(groups.values())
    data["totals"] = {"sessions": len(rows), "duration": total_ms // 1000, "credits": cr.credits_for(total_ms)}
    data["dateRange"] = {"startDate": start.isoformat(), "endDate": end.isoformat()}
    data["pagination"] = {"page": page, "limit": limit, "total": len(rows), "totalPages": -(-len(rows) // limit)}
    return ok(data, "Sessions retrieved successfully")


def _csv_response(
    rows: list[tuple[Session, Room]], name: str, role: str, uid: str, start: date, end: date, now: int
) -> web.Response:
    """CSV export holds every session in the date range: pagination is for the JSON view."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for s, r in rows:
        j = _session_json(s, r, now)
        writer.writerow([_csv_cell(x) for x in (
            j["sessionId"], j["roomId"], r.title, uid, name, role, j["joinedAt"], j["leftAt"] or "",
            j["duration"], j["credits"], "true" if j["isActive"] else "false", j["ipAddress"] or "",
        )])
    return web.Response(
        text=buf.getvalue(), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="sessions-{uid}-{start}-{end}.csv"'},
    )


async def remove_participant(request: web.Request) -> web.Response:
    room_id, uid = room_id_param(request), uid_param(request)
    body = v.parse(models.RemoveParticipant, await v.read_json(request, optional=True))
    data = await services(request).classroom.remove_participant(org(request), room_id, uid, body.reason)
    return ok(data, "Participant removed")


async def _mute(request: web.Request, muted: bool) -> web.Response:
    room_id, uid = room_id_param(request), uid_param(request)
    v.ignore_unknown(await v.read_json(request, optional=True), ())
    data = await services(request).classroom.set_muted(org(request), room_id, uid, muted)
    return ok(data, "Participant muted" if muted else "Participant unmuted")


async def mute(request: web.Request) -> web.Response:
    return await _mute(request, True)


async def unmute(request: web.Request) -> web.Response:
    return await _mute(request, False)


async def mute_all(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    body = v.parse(models.MuteAll, await v.read_json(request, optional=True))
    data = await services(request).classroom.mute_all(org(request), room_id, set(body.exceptUids or ()))
    return ok(data, "Participants muted")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/participant/sessions", participant_sessions)
    r.add_post("/v1/room/{roomId:[^/]*}/participants/{uid}/remove", remove_participant)
    r.add_post("/v1/room/{roomId:[^/]*}/participants/{uid}/mute", mute)
    r.add_post("/v1/room/{roomId:[^/]*}/participants/{uid}/unmute", unmute)
    r.add_post("/v1/room/{roomId:[^/]*}/mute-all", mute_all)
