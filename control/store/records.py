"""Plain records the store hands out: the rest of the server never sees SQLAlchemy rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def _json(value: str | None) -> dict[str, Any]:
    return json.loads(value) if value else {}


@dataclass(slots=True)
class Org:
    id: str
    name: str
    credits: int
    billing_type: str
    logo_url: str | None
    primary_color: str | None
    accent_color: str | None
    slogan: str | None
    created_at: int
    domains: list[str] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: Any, domains: list[str] | None = None) -> Org:
        m = row._mapping
        return cls(
            id=m["id"], name=m["name"], credits=int(m["credits"]), billing_type=m["billing_type"],
            logo_url=m["logo_url"], primary_color=m["primary_color"], accent_color=m["accent_color"],
            slogan=m["slogan"], created_at=int(m["created_at"]), domains=domains or [],
        )


@dataclass(slots=True)
class Room:
    sid: str
    org_id: str
    room_id: str
    title: str
    description: str | None
    customization: dict[str, Any]
    max_participants: int
    empty_timeout: int
    auto_close: bool
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    end_reason: str | None = None
    emptied_at: int | None = None
    credits_debited: int = 0

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @classmethod
    def from_row(cls, row: Any) -> Room:
        m = row._mapping
        return cls(
            sid=m["sid"], org_id=m["org_id"], room_id=m["room_id"], title=m["title"],
            description=m["description"], customization=_json(m["customization"]),
            max_participants=int(m["max_participants"]), empty_timeout=int(m["empty_timeout"]),
            auto_close=bool(m["auto_close"]), created_at=int(m["created_at"]), started_at=m["started_at"],
            ended_at=m["ended_at"], end_reason=m["end_reason"], emptied_at=m["emptied_at"],
            credits_debited=int(m["credits_debited"]),
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "sid": self.sid, "org_id": self.org_id, "room_id": self.room_id, "title": self.title,
            "description": self.description, "customization": json.dumps(self.customization),
            "max_participants": self.max_participants, "empty_timeout": self.empty_timeout,
            "auto_close": self.auto_close, "created_at": self.created_at, "started_at": self.started_at,
            "ended_at": self.ended_at, "end_reason": self.end_reason, "emptied_at": self.emptied_at,
            "credits_debited": self.credits_debited,
        }


@dataclass(slots=True)
class Participant:
    id: str
    room_sid: str
    uid: str
    name: str
    role: str
    photo_url: str | None
    customization: dict[str, Any]
    metadata: Any
    muted: bool
    removed_at: int | None
    created_at: int
    updated_at: int

    @property
    def removed(self) -> bool:
        return self.removed_at is not None

    @classmethod
    def from_values(cls, values: Any) -> Participant:
        """From a row of `select(participants)` by position (columns in this class's field order, checked where the
        store builds its statements): a roster is read on every join, and by-name access was most of its cost."""
        (pid, room_sid, uid, name, role, photo_url, customization, metadata, muted, removed_at, created_at,
         updated_at) = values
        return cls(
            id=pid, room_sid=room_sid, uid=uid, name=name, role=role, photo_url=photo_url,
            customization=_json(customization), metadata=json.loads(metadata) if metadata else None,
            muted=bool(muted), removed_at=removed_at, created_at=int(created_at), updated_at=int(updated_at),
        )

    @classmethod
    def from_row(cls, row: Any) -> Participant:
        m = row._mapping
        return cls(
            id=m["id"], room_sid=m["room_sid"], uid=m["uid"], name=m["name"], role=m["role"],
            photo_url=m["photo_url"], customization=_json(m["customization"]),
            metadata=json.loads(m["metadata"]) if m["metadata"] else None, muted=bool(m["muted"]),
            removed_at=m["removed_at"], created_at=int(m["created_at"]), updated_at=int(m["updated_at"]),
        )


@dataclass(slots=True)
class Session:
    id: str
    participant_id: str
    room_sid: str
    org_id: str
    uid: str
    joined_at: int
    left_at: int | None
    leave_reason: str | None
    ip_address: str | None
    node: str | None = None  # the node holding it (control/wiring.py's node id)

    @property
    def active(self) -> bool:
        return self.left_at is None

    def duration_ms(self, now_ms: int) -> int:
        end = self.left_at if self.left_at is not None else now_ms
        return max(0, end - self.joined_at)

    @classmethod
    def from_row(cls, row: Any) -> Session:
        m = row._mapping
        return cls(
            id=m["id"], participant_id=m["participant_id"], room_sid=m["room_sid"], org_id=m["org_id"],
            uid=m["uid"], joined_at=int(m["joined_at"]), left_at=m["left_at"], leave_reason=m["leave_reason"],
            ip_address=m["ip_address"], node=m["node"],
        )


@dataclass(slots=True)
class Recording:
    id: str
    room_sid: str
    status: str
    options: dict[str, Any]
    started_at: int
    ended_at: int | None
    file_path: str | None
    size: int | None
    duration: float | None
    error: str | None
    deleted_at: int | None = None
    # Spans without media for a reason the server knows (an SFU worker died): [{started_at, ended_at, reason}],
    # epoch ms, ended_at None while the gap is open
    gaps: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: Any) -> Recording:
        m = row._mapping
        return cls(
            id=m["id"], room_sid=m["room_sid"], status=m["status"], options=_json(m["options"]),
            started_at=int(m["started_at"]), ended_at=m["ended_at"], file_path=m["file_path"],
            size=m["size"], duration=m["duration"], error=m["error"], deleted_at=m["deleted_at"],
            gaps=json.loads(m["gaps"]) if m["gaps"] else [],
        )


@dataclass(slots=True)
class RecordingFile:
    """One MP4 of a recording job (composite: one; track mode: one per published track)."""

    id: str
    recording_id: str
    path: str  # relative to the recordings folder
    label: str
    size: int | None
    duration: float | None
    created_at: int

    @classmethod
    def from_row(cls, row: Any) -> RecordingFile:
        m = row._mapping
        return cls(id=m["id"], recording_id=m["recording_id"], path=m["path"], label=m["label"], size=m["size"],
                   duration=m["duration"], created_at=int(m["created_at"]))
