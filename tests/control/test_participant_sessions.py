"""POST /v1/participant/sessions (reference 2.10): date rules, grouping, pagination, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from control.clock import iso
from tests.conftest import Api

pytestmark = pytest.mark.both_databases  # and the store under them: SQLite and PostgreSQL

DAY = 24 * 3600


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


async def _history(api: Api) -> None:
    """s1 attends algebra on Jan 15 (two sessions) and biology on Jan 16 (one, still live)."""
    api.clock.set(_ms("2024-01-15T09:00:00"))
    await api.create_room("algebra")
    await api.join("algebra", "s1", name="Ana Ruiz")
    algebra = await api.room("algebra")
    c = api.svc.classroom
    a = await c.open_session(algebra.sid, "s1", ip_address="203.0.113.7")
    api.clock.set(_ms("2024-01-15T09:10:30"))
    await c.close_session(a.id)
    api.clock.set(_ms("2024-01-15T09:20:00"))
    b = await c.open_session(algebra.sid, "s1")
    api.clock.set(_ms("2024-01-15T09:25:00"))
    await c.close_session(b.id)
    api.clock.set(_ms("2024-01-16T14:00:00"))
    await api.create_room("biology")
    await api.join("biology", "s1", name="Ana Ruiz")
    biology = await api.room("biology")
    await c.open_session(biology.sid, "s1")
    api.clock.set(_ms("2024-01-16T14:03:00"))


async def test_no_dates_means_today(api: Api) -> None:
    await _history(api)
    status, body = await api.post("/v1/participant/sessions", {"uid": "s1"})
    assert status == 200 and body["message"] == "Sessions retrieved successfully"
    data = body["data"]
    assert data["participant"] == {"uid": "s1", "name": "Ana Ruiz", "role": "STUDENT"}
    assert [g["roomId"] for g in data["roomGroups"]] == ["biology"]
    live = data["roomGroups"][0]["sessions"][0]
    assert live["isActive"] is True and live["leftAt"] is None and live["duration"] == 180
    assert live["credits"] == 3.0


async def test_start_date_only_is_that_day_and_sessions_are_grouped_by_room(api: Api) -> None:
    await _history(api)
    _status, body = await api.post("/v1/participant/sessions", {"uid": "s1", "startDate": "2024-01-15"})
    groups = body["data"]["roomGroups"]
    assert [(g["roomId"], g["roomTitle"]) for g in groups] == [("algebra", "Calculus I - Morning Session")]
    sessions = groups[0]["sessions"]
    assert [s["duration"] for s in sessions] == [300, 630]  # newest first
    first = sessions[1]
    assert first["joinedAt"] == "2024-01-15T09:00:00.000Z" and first["leftAt"] == "2024-01-15T09:10:30.000Z"
    assert first["credits"] == 10.5 and first["isActive"] is False and first["ipAddress"] == "203.0.113.7"
    assert body["data"]["totals"] == {"sessions": 2, "duration": 930, "credits": 16}


async def test_date_range_is_inclusive_and_room_filter_ungroups(api: Api) -> None:
    await _history(api)
    status, body = await api.post("/v1/participant/sessions",
                                  {"uid": "s1", "startDate": "2024-01-15", "endDate": "2024-01-16"})
    assert body["data"]["pagination"]["total"] == 3
    _status, body = await api.post("/v1/participant/sessions",
                                   {"uid": "s1", "roomId": "algebra", "startDate": "2024-01-15",
                                    "endDate": "2024-01-16"})
    data = body["data"]
    assert data["roomId"] == "algebra" and "roomGroups" not in data
    assert len(data["sessions"]) == 2 and all(s["roomId"] == "algebra" for s in data["sessions"])


async def test_pagination_caps_limit_at_10(api: Api) -> None:
    api.clock.set(_ms("2024-02-01T08:00:00"))
    await api.create_room("lab")
    await api.join("lab", "s1")
    room = await api.room("lab")
    for _ in range(12):
        s = await api.svc.classroom.open_session(room.sid, "s1")
        api.clock.advance(60)
        await api.svc.classroom.close_session(s.id)
    status, body = await api.post("/v1/participant/sessions", {"uid": "s1", "startDate": "2024-02-01", "page": 2})
    assert body["data"]["pagination"] == {"page": 2, "limit": 10, "total": 12, "totalPages": 2}
    assert len(body["data"]["roomGroups"][0]["sessions"]) == 2
    status, body = await api.post("/v1/participant/sessions", {"uid": "s1", "limit": 11})
    assert status == 400 and body["message"] == "Validation failed: limit must be between 1 and 10"


async def test_date_rule_errors(api: Api) -> None:
    await _history(api)
    for payload, field in (({"uid": "s1", "endDate": "2024-01-16"}, "endDate"),
                           ({"uid": "s1", "startDate": "2024-01-16", "endDate": "2024-01-15"}, "endDate"),
                           ({"uid": "s1", "startDate": "15/01/2024"}, "startDate"),
                           ({"uid": "s1", "export": "xml"}, "export"),
                           ({"startDate": "2024-01-15"}, "uid"),
                           ({"uid": "s1", "page": 0}, "page")):
        status, body = await api.post("/v1/participant/sessions", payload)
        assert status == 400, payload
        assert body["message"].startswith(f"Validation failed: {field}"), body
    status, body = await api.post("/v1/participant/sessions", {"uid": "nobody"})
    assert (status, body["message"]) == (404, "Participant not found")
    status, body = await api.post("/v1/participant/sessions", {"uid": "s1", "roomId": "nope"})
    assert (status, body["message"]) == (404, "Room not found")


async def test_csv_export_has_every_session_in_range(api: Api) -> None:
    await _history(api)
    resp = await api.client.post("/v1/participant/sessions", headers={"VF-ORG-ID": api.org.id},
                                 json={"uid": "s1", "startDate": "2024-01-15", "endDate": "2024-01-16",
                                       "export": "csv", "limit": 1})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert 'filename="sessions-s1-2024-01-15-2024-01-16.csv"' in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 3  # not paginated
    assert [r["roomId"] for r in rows] == ["biology", "algebra", "algebra"]
    assert rows[0]["isActive"] == "true" and rows[0]["leftAt"] == ""
    assert rows[2]["joinedAt"] == iso(_ms("2024-01-15T09:00:00")) and rows[2]["duration"] == "630"


async def test_csv_cells_cannot_become_formulas(api: Api) -> None:
    api.clock.set(_ms("2024-03-01T10:00:00"))
    await api.create_room("art")
    await api.join("art", "s9", name="=HYPERLINK(\"http://evil\")")
    room = await api.room("art")
    await api.svc.classroom.open_session(room.sid, "s9")
    resp = await api.client.post("/v1/participant/sessions", headers={"VF-ORG-ID": api.org.id},
                                 json={"uid": "s9", "export": "csv"})
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert rows[0]["name"].startswith("'=")
