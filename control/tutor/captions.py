"""The `caption` message: one finished utterance of the live transcript, as participants and recordings see it."""

from __future__ import annotations

from typing import Any


def caption(uid: str, name: str, text: str, started_ms: int, ended_ms: int, class_started_ms: int | None,
            ) -> dict[str, Any]:
    """The `caption` message (docs/signaling.md): one finished utterance. `start`/`end` are seconds on the class
    clock (since the class started), `startedAt`/`endedAt` wall-clock milliseconds, so a recording can place it."""
    origin = class_started_ms if class_started_ms is not None else started_ms
    return {"type": "caption", "uid": uid, "name": name, "text": text,
            "start": round(max(0, started_ms - origin) / 1000, 3), "end": round(max(0, ended_ms - origin) / 1000, 3),
            "startedAt": started_ms, "endedAt": ended_ms, "final": True}
