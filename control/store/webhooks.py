"""The webhook tables (migration 5): endpoints, the outbox of events, and their deliveries.

Beside `store.py` and on its transactions: `record_event` called inside `Store.atomic` commits with the change the
event announces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, update

from control.ids import new_id
from control.store import schema as t
from control.store.store import Store

# Every announced change reads its organization's endpoints (a join's participant_joined too): built once.
_ORG_ENDPOINTS = select(t.webhook_endpoints.c.id, t.webhook_endpoints.c.events).where(
    t.webhook_endpoints.c.org_id == bindparam("org"))


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    org_id: str
    url: str
    secret: str
    events: tuple[str, ...]
    description: str | None
    created_at: int

    @classmethod
    def from_row(cls, row: Any) -> Endpoint:
        m = row._mapping
        return cls(id=m["id"], org_id=m["org_id"], url=m["url"], secret=m["secret"],
                   events=tuple(json.loads(m["events"])), description=m["description"],
                   created_at=int(m["created_at"]))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery due now, with what sending it needs."""

    id: str
    event_id: str
    endpoint_id: str
    url: str
    secret: str
    payload: str
    attempts: int
    created_at: int
    next_attempt_at: int


class WebhookStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- endpoints -------------------------------------------------------------------------------------------

    async def create_endpoint(self, org_id: str, url: str, secret: str, events: list[str], description: str | None,
                              now: int, limit: int | None = None) -> Endpoint | None:
        """The new endpoint, or None when the organization has `limit` already: counted and inserted under the
        organization's lock, so that concurrent creates cannot all pass the count."""
        ep = Endpoint(id=new_id("WH_"), org_id=org_id, url=url, secret=secret, events=tuple(events),
                      description=description, created_at=now)
        async with self.store._tx() as conn:
            if limit is not None:
                await self.store.lock_org(org_id)
                count = (await conn.execute(select(func.count()).select_from(t.webhook_endpoints).where(
                    t.webhook_endpoints.c.org_id == org_id))).scalar_one()
                if count >= limit:
                    return None
            await conn.execute(insert(t.webhook_endpoints).values(
                id=ep.id, org_id=org_id, url=url, secret=secret, events=json.dumps(events), description=description,
                created_at=now))
        return ep

    async def endpoints(self, org_id: str) -> list[Endpoint]:
        async with self.store._read() as conn:
            rows = await conn.execute(select(t.webhook_endpoints).where(t.webhook_endpoints.c.org_id == org_id)
                                      .order_by(t.webhook_endpoints.c.created_at, t.webhook_endpoints.c.id))
            return [Endpoint.from_row(r) for r in rows]

    async def get_endpoint(self, org_id: str, endpoint_id: str) -> Endpoint | None:
        async with self.store._read() as conn:
            row = (await conn.execute(select(t.webhook_endpoints).where(
                t.webhook_endpoints.c.org_id == org_id, t.webhook_endpoints.c.id == endpoint_id))).first()
        return Endpoint.from_row(row) if row else None

    async def delete_endpoint(self, org_id: str, endpoint_id: str) -> bool:
        """Its pending deliveries go with it (nobody would receive them)."""
        async with self.store._tx() as conn:
            await conn.execute(delete(t.webhook_deliveries).where(t.webhook_deliveries.c.endpoint_id == endpoint_id))
            res = await conn.execute(delete(t.webhook_endpoints).where(
                t.webhook_endpoints.c.org_id == org_id, t.webhook_endpoints.c.id == endpoint_id))
            return res.rowcount > 0

    # ---- the outbox ------------------------------------------------------------------------------------------

    async def record_event(self, event_id: str, seq: int, org_id: str, type_: str, room_sid: str | None,
                           payload: str, now: int) -> int:
        """The event and one pending delivery per endpoint of the organization that wants it; returns how many.

        Inside `Store.atomic` this commits (or not) with the caller's change."""
        async with self.store._tx() as conn:
            targets = [r.id for r in await conn.execute(_ORG_ENDPOINTS, {"org": org_id})
                       if type_ in json.loads(r.events)]
            if not targets:
                return 0
            await conn.execute(insert(t.webhook_events).values(
                id=event_id, seq=seq, org_id=org_id, type=type_, room_sid=room_sid, payload=payload, created_at=now))
            await conn.execute(insert(t.webhook_deliveries), [
                {"id": new_id("WD_"), "event_id": event_id, "endpoint_id": ep, "seq": seq,
                 "order_key": room_sid or "", "status": "pending", "attempts": 0, "next_attempt_at": now,
                 "created_at": now}
                for ep in targets])
            return len(targets)

    @staticmethod
    def _heads() -> Any:
        """Each (endpoint, room) queue's first pending delivery. Only a queue's head may be sent: a later event of
        the same room waits until the earlier one is delivered or given up, which keeps a room's order."""
        d = t.webhook_deliveries
        return (select(d.c.endpoint_id, d.c.order_key, func.min(d.c.seq).label("seq"))
                .where(d.c.status == "pending").group_by(d.c.endpoint_id, d.c.order_key).subquery())

    async def due(self, now: int, limit: int = 500) -> list[Delivery]:
        """The queue heads whose next attempt is due."""
        d, e, ep = t.webhook_deliveries, t.webhook_events, t.webhook_endpoints
        heads = self._heads()
        q = (select(d.c.id, d.c.event_id, d.c.endpoint_id, d.c.attempts, d.c.created_at, d.c.next_attempt_at,
                    ep.c.url, ep.c.secret, e.c.payload)
             .join(heads, and_(heads.c.endpoint_id == d.c.endpoint_id, heads.c.order_key == d.c.order_key,
                               heads.c.seq == d.c.seq))
             .join(e, e.c.id == d.c.event_id).join(ep, ep.c.id == d.c.endpoint_id)
             .where(d.c.status == "pending", d.c.next_attempt_at <= now).order_by(d.c.seq).limit(limit))
        async with self.store._read() as conn:
            return [Delivery(id=r.id, event_id=r.event_id, endpoint_id=r.endpoint_id, url=r.url, secret=r.secret,
                             payload=r.payload, attempts=int(r.attempts), created_at=int(r.created_at),
                             next_attempt_at=int(r.next_attempt_at))
                    for r in await conn.execute(q)]

    async def claim(self, delivery: Delivery, until: int) -> bool:
        """Takes the attempt: moves its next attempt to `until` unless another dispatcher (another node on the same
        database) took it first. A dispatcher that dies mid-attempt leaves it due again at `until`."""
        d = t.webhook_deliveries
        async with self.store._tx() as conn:
            res = await conn.execute(update(d).where(
                d.c.id == delivery.id, d.c.status == "pending", d.c.next_attempt_at == delivery.next_attempt_at,
            ).values(next_attempt_at=until))
            return res.rowcount == 1

    async def next_due_at(self) -> int | None:
        """When the next queue head is due (None: nothing pending)."""
        d, heads = t.webhook_deliveries, self._heads()
        q = (select(func.min(d.c.next_attempt_at))
             .join(heads, and_(heads.c.endpoint_id == d.c.endpoint_id, heads.c.order_key == d.c.order_key,
                               heads.c.seq == d.c.seq)).where(d.c.status == "pending"))
        async with self.store._read() as conn:
            value = (await conn.execute(q)).scalar()
        return int(value) if value is not None else None

    async def finish_attempt(self, delivery_id: str, *, status: str, attempts: int, next_attempt_at: int,
                             http_status: int | None, error: str | None, now: int) -> None:
        values: dict[str, Any] = {"status": status, "attempts": attempts, "next_attempt_at": next_attempt_at,
                                  "last_status": http_status, "last_error": error}
        if status == "delivered":
            values["delivered_at"] = now
        async with self.store._tx() as conn:
            await conn.execute(update(t.webhook_deliveries).where(t.webhook_deliveries.c.id == delivery_id)
                               .values(**values))

    async def deliveries(self, org_id: str, endpoint_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent deliveries with their event type, newest first (the REST listing and `webhooks list`).

        A pending delivery queued behind an earlier one of its room (`_heads`) names it in `waiting_for`, and its
        `next_attempt_at` is not before the head's: its own is the time it was queued, long past while the head
        retries, and said "due now" of a delivery that cannot go."""
        d, e = t.webhook_deliveries, t.webhook_events
        q = (select(d.c.id, d.c.event_id, d.c.endpoint_id, d.c.order_key, d.c.seq, d.c.status, d.c.attempts,
                    d.c.next_attempt_at, d.c.last_status, d.c.last_error, d.c.delivered_at, d.c.created_at, e.c.type)
             .join(e, e.c.id == d.c.event_id).where(e.c.org_id == org_id).order_by(d.c.seq.desc()).limit(limit))
        if endpoint_id is not None:
            q = q.where(d.c.endpoint_id == endpoint_id)
        heads = self._heads()
        hq = (select(d.c.id, d.c.endpoint_id, d.c.order_key, d.c.seq, d.c.next_attempt_at)
              .join(heads, and_(heads.c.endpoint_id == d.c.endpoint_id, heads.c.order_key == d.c.order_key,
                                heads.c.seq == d.c.seq)).where(d.c.status == "pending"))
        async with self.store._read() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            pending = {(r["endpoint_id"], r["order_key"]) for r in rows if r["status"] == "pending"}
            head: dict[tuple[str, str], Any] = {}
            if pending:
                endpoints = sorted({ep for ep, _ in pending})
                head = {(h.endpoint_id, h.order_key): h for h in await conn.execute(
                    hq.where(d.c.endpoint_id.in_(endpoints)))}
        for r in rows:
            # only a head strictly before it: two nodes may give two rows one seq (both are heads to `due`), and the
            # head read after the rows may be a later row once the earlier one settled in between
            first = head.get((r["endpoint_id"], r["order_key"])) if r["status"] == "pending" else None
            behind = first is not None and int(first.seq) < int(r["seq"])
            r["waiting_for"] = first.id if behind else None
            if behind:
                r["next_attempt_at"] = max(int(r["next_attempt_at"]), int(first.next_attempt_at))
            del r["order_key"], r["seq"]
        return rows

    async def prune(self, before: int) -> int:
        """Deletes settled deliveries (delivered or failed) created before `before`, then events none refers to."""
        d, e = t.webhook_deliveries, t.webhook_events
        async with self.store._tx() as conn:
            res = await conn.execute(delete(d).where(d.c.status != "pending", d.c.created_at < before))
            await conn.execute(delete(e).where(e.c.created_at < before,
                                               ~select(d.c.id).where(d.c.event_id == e.c.id).exists()))
            return int(res.rowcount or 0)

    async def counts(self) -> dict[str, int]:
        """Deliveries by status (the metrics' outbox gauge)."""
        async with self.store._read() as conn:
            rows = await conn.execute(select(t.webhook_deliveries.c.status, func.count())
                                      .group_by(t.webhook_deliveries.c.status))
            return {r[0]: int(r[1]) for r in rows}
