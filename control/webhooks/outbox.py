"""Writing an event to the outbox: call `record` inside the `Store.atomic` block of the change it announces."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from control.clock import Clock, iso
from control.ids import new_id
from control.store.webhooks import WebhookStore

COMMIT_WAIT_S = 0.05


class Outbox:
    def __init__(self, db: WebhookStore, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.wake = asyncio.Event()  # set when an event is written: the dispatcher sends without waiting a poll
        self._last_seq = 0

    def _next_seq(self, now_ms: int) -> int:
        """Increasing in this process and across restarts (milliseconds x 1000), so a room's order survives both."""
        self._last_seq = max(self._last_seq + 1, now_ms * 1000)
        return self._last_seq

    async def record(self, type_: str, org_id: str, data: dict[str, Any], room_sid: str | None = None) -> str | None:
        """Returns the event id, or None when no endpoint of the organization wants this type."""
        now = self.clock.now_ms()
        event_id = new_id("msg_")
        body = json.dumps({"type": type_, "timestamp": iso(now), "data": data}, separators=(",", ":"))
        n = await self.db.record_event(event_id, self._next_seq(now), org_id, type_, room_sid, body, now)
        if not n:
            return None
        # The row commits with the caller's transaction, a moment from now: wake the dispatcher then too.
        self.wake.set()
        asyncio.get_running_loop().call_later(COMMIT_WAIT_S, self.wake.set)
        return event_id
