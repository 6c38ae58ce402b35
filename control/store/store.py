"""The one module that talks to the database, behind a small async interface.

SQLAlchemy Core on an async engine: SQLite through aiosqlite by default (WAL, foreign keys on), or PostgreSQL
through asyncpg when `CLASSCAST_DATABASE_URL=postgresql+asyncpg://...` (the `postgres` extra). The test suite runs
the store's users on both (tests/pg.py starts a real PostgreSQL). The two differ in three places, each handled
here and nowhere else:

- Conflicts: a unique violation aborts a whole PostgreSQL transaction, so inserts that may meet an existing row
  are `INSERT ... ON CONFLICT` (`dialect_insert`), never a caught IntegrityError inside `atomic`.
- Row locks: `lock_room` is `SELECT ... FOR NO KEY UPDATE` on PostgreSQL; SQLite has no row locks, so there it
  takes the database's write lock (a no-op UPDATE) at the start of the transaction.
- What a write changed comes back with `RETURNING` (both engines), not from a read before it that a concurrent
  transaction may have made stale.

Business rules live in `control/classroom.py`; this module only reads and writes, with each method one
transaction (or part of the caller's, see `atomic`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, delete, event, func, insert, make_url, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from control.ids import new_id, new_org_id
from control.store import schema as t
from control.store.migrations import MIGRATIONS
from control.store.records import Org, Participant, Recording, RecordingFile, Room, Session

log = logging.getLogger("classcast.store")

LIVE_RECORDING_STATES = ("EGRESS_STARTING", "EGRESS_ACTIVE")


# Participant.from_values reads a participants row by position.
assert [c.name for c in t.participants.c] == [f.name for f in dataclasses.fields(Participant)], \
    "participants columns and Participant fields must keep one order"

# The reads every join makes (token check, session open, the `joined` message), built once: constructing a
# statement and its cache key is a third of a small read's Python time, and a class joins at once.
_ROOM_BY_SID = select(t.rooms).where(t.rooms.c.sid == bindparam("sid"))
_PARTICIPANT = select(t.participants).where(t.participants.c.room_sid == bindparam("sid"),
                                            t.participants.c.uid == bindparam("uid"))
_ROOM_AND_PARTICIPANT = (
    select(t.rooms, t.participants)
    .select_from(t.rooms.outerjoin(t.participants, and_(t.participants.c.room_sid == t.rooms.c.sid,
                                                        t.participants.c.uid == bindparam("uid"))))
    .where(t.rooms.c.sid == bindparam("sid"))
)
_PRESENCE = select(
    func.count(func.distinct(t.sessions.c.participant_id)),
    func.coalesce(func.max(case((t.sessions.c.uid == bindparam("uid"), 1), else_=0)), 0),
).where(t.sessions.c.room_sid == bindparam("sid"), t.sessions.c.left_at.is_(None))
_OPEN_SESSIONS = and_(t.sessions.c.room_sid == bindparam("sid"), t.sessions.c.left_at.is_(None))
_JOIN_VIEW = _ROOM_AND_PARTICIPANT.add_columns(
    select(func.count(func.distinct(t.sessions.c.participant_id))).where(_OPEN_SESSIONS)
    .scalar_subquery().label("present_count"),
    select(func.count()).select_from(t.sessions).where(_OPEN_SESSIONS, t.sessions.c.uid == bindparam("uid"))
    .scalar_subquery().label("present_mine"),
)
_ACTIVE_PARTICIPANTS = (
    select(t.participants)
    .where(t.participants.c.id.in_(select(t.sessions.c.participant_id).where(
        t.sessions.c.room_sid == bindparam("sid"), t.sessions.c.left_at.is_(None))))
    .order_by(t.participants.c.created_at)
)
_LIVE_RECORDINGS = select(t.recordings).where(
    t.recordings.c.room_sid == bindparam("sid"), t.recordings.c.status.in_(LIVE_RECORDING_STATES))
_INSERT_SESSION = insert(t.sessions)
_ROOM_POLLS = select(t.polls).where(t.polls.c.room_sid == bindparam("sid")).order_by(t.polls.c.created_at)
# What a store call raises when the database is locked, down or out of connections (not a bug in the caller).
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
_LOCK_ROOM_PG = select(t.rooms.c.sid).where(t.rooms.c.sid == bindparam("room")).with_for_update(key_share=True)
_LOCK_ORG_PG = (select(t.organizations.c.id).where(t.organizations.c.id == bindparam("org"))
                .with_for_update(key_share=True))
# SQLite: an UPDATE that matches nothing still starts the write transaction (the database's lock) and writes no
# page; a room of its own would buy nothing, SQLite locks the whole database.
_LOCK_SQLITE = text("UPDATE rooms SET sid = sid WHERE 0 = 1")
_RECENT_CHAT = (select(t.chat_messages).where(t.chat_messages.c.room_sid == bindparam("sid"))
                .order_by(t.chat_messages.c.created_at.desc(), t.chat_messages.c.id.desc()).limit(bindparam("n")))


class RoomIdTaken(Exception):
    """The organization already used this roomId (live, ended or destroyed: ids are never reused)."""


class RecordingAlreadyLive(Exception):
    """The room already has a live recording (the unique index `recordings_one_live`, migration 7)."""


def dialect_insert(conn: AsyncConnection, table: Table) -> Any:
    """INSERT with the engine's ON CONFLICT clause (`on_conflict_do_nothing` / `on_conflict_do_update`, which
    SQLite and PostgreSQL spell the same)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# A balance moved: (org_id, balance before, balance after, reason, room_sid), awaited inside the move's transaction.
CreditsMoved = Callable[[str, int, int, str, str | None], Awaitable[None]]


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.credits_moved: CreditsMoved | None = None  # set by Classroom: the credits_low webhook
        # The connection of the transaction `atomic` opened in this task, if any: one variable per store, so a
        # process holding two (two databases, or the tests' several nodes) never runs one's call on the other's.
        self._atomic: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
            f"store_atomic_{id(self)}", default=None)

    # ---- transactions ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def atomic(self) -> AsyncIterator[AsyncConnection]:
        """One transaction around several store calls: every method called inside it (in this task) runs on its
        connection and commits with it, or none does. A webhook's outbox row is written this way, in the same
        transaction as the change it announces. Nested calls join the outer transaction. Inside it, call only
        methods that go through `_tx`/`_read`: one that opens its own connection to write would wait on this
        transaction's lock (SQLite) until its busy timeout."""
        outer = self._atomic.get()
        if outer is not None:
            yield outer
            return
        async with self.engine.begin() as conn:
            token = self._atomic.set(conn)
            try:
                yield conn
            finally:
                self._atomic.reset(token)

    def _tx(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction: the surrounding one, else a new one committed at the end (store calls made while
        it is open, by a hook for instance, join it)."""
        return self.atomic()

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """Reads inside `atomic` see its uncommitted writes; outside it, a plain connection."""
        outer = self._atomic.get()
        if outer is not None:
            yield outer
            return
        async with self.engine.connect() as conn:
            yield conn

    async def lock_room(self, room_sid: str) -> None:
        """Inside `atomic`: hold the room until the transaction ends, so a check-then-write on the room (a seat
        for a join, the roster a leave bills) cannot interleave with another node's. Every transaction that
        changes a room's sessions takes this first, which also gives them one lock order (room, then its rows).

        PostgreSQL: a row lock that leaves the row's key alone, so inserts that merely reference the room
        (chat, hands) do not wait. SQLite: the database's write lock, taken now rather than at the first write so
        the reads that follow are already serialized; every writer waits there (busy_timeout), in any process.
        On a room that does not exist it locks nothing (the caller's read then finds no room)."""
        await self._lock_row("lock_room", _LOCK_ROOM_PG, {"room": room_sid})

    async def lock_org(self, org_id: str) -> None:
        """Inside `atomic`: hold the organization until the transaction ends, for a check-then-write on what it
        owns (its webhook endpoints' count). The same kinds of lock as `lock_room`, on the organization's row."""
        await self._lock_row("lock_org", _LOCK_ORG_PG, {"org": org_id})

    async def _lock_row(self, name: str, postgres: Any, params: dict[str, str]) -> None:
        conn = self._atomic.get()
        if conn is None:
            raise RuntimeError(f"{name} outside Store.atomic: the lock would end with its own statement")
        if conn.dialect.name == "postgresql":
            await conn.execute(postgres, params)
        else:
            await conn.execute(_LOCK_SQLITE)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> Store:
        try:
            engine = create_async_engine(url, **_engine_options(url))
        except ModuleNotFoundError as exc:  # postgresql+asyncpg:// without the `postgres` extra
            raise SystemExit(f"CLASSCAST_DATABASE_URL needs the {exc.name} driver: pip install 'classcast[postgres]' "
                             "(make install does)") from None
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        elif engine.dialect.name == "postgresql":
            _unavailable_is_operational(engine)

        store = cls(engine)
        await store.migrate()
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    async def migrate(self) -> list[int]:
        """Apply the migrations this database has not seen; returns the versions applied now."""
        applied: list[int] = []
        async with self.engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "description TEXT NOT NULL, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")
            )
            done = {r[0] for r in await conn.execute(text("SELECT version FROM schema_migrations"))}
            for version, description, statements in MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    await conn.execute(text(stmt))
                await conn.execute(
                    text("INSERT INTO schema_migrations (version, description) VALUES (:v, :d)"),
                    {"v": version, "d": description},
                )
                applied.append(version)
                log.info("applied migration %d: %s", version, description)
        return applied

    async def schema_version(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text("SELECT MAX(version) FROM schema_migrations"))).scalar() or 0)

    # ---- meta ------------------------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self._read() as conn:
            return (await conn.execute(select(t.meta.c.value).where(t.meta.c.key == key))).scalar()

    async def delete_meta(self, keys: list[str]) -> None:
        async with self._tx() as conn:
            await conn.execute(delete(t.meta).where(t.meta.c.key.in_(keys)))

    async def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every meta row whose key starts with `prefix`, keyed by the rest of the key (one node's heartbeat, one
        recording's node: control/failover.py)."""
        async with self._read() as conn:
            rows = await conn.execute(select(t.meta.c.key, t.meta.c.value)
                                      .where(t.meta.c.key.startswith(prefix, autoescape=True)))
            return {k[len(prefix):]: v for k, v in rows}

    async def take_meta(self, key: str) -> str | None:
        """Deletes the row and returns its value, or None when it was gone: a claim only one caller wins, since
        the DELETE's RETURNING names the rows this statement removed (two nodes racing, one gets it)."""
        async with self._tx() as conn:
            return (await conn.execute(delete(t.meta).where(t.meta.c.key == key).returning(t.meta.c.value))).scalar()

    async def set_meta(self, key: str, value: str) -> None:
        async with self._tx() as conn:
            q = dialect_insert(conn, t.meta).values(key=key, value=value)
            await conn.execute(q.on_conflict_do_update(index_elements=[t.meta.c.key], set_={"value": value}))

    # ---- organizations ---------------------------------------------------------------------------------------

    async def create_org(self, name: str, credits: int, now: int) -> Org:
        org_id = new_org_id()
        async with self._tx() as conn:
            await conn.execute(
                insert(t.organizations).values(
                    id=org_id, name=name, credits=credits, billing_type="PREPAID", created_at=now
                )
            )
            if credits:
                await conn.execute(
                    insert(t.credit_ledger).values(
                        id=new_id("CL_"), org_id=org_id, delta=credits, balance_after=credits,
                        reason="initial", created_at=now,
                    )
                )
        org = await self.get_org(org_id)
        assert org is not None
        return org

    async def get_org(self, org_id: str) -> Org | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.organizations).where(t.organizations.c.id == org_id))).first()
            if row is None:
                return None
            domains = await self._domains(conn, org_id)
        return Org.from_row(row, domains)

    async def list_orgs(self) -> list[Org]:
        async with self._read() as conn:
            rows = (await conn.execute(select(t.organizations).order_by(t.organizations.c.created_at))).all()
            return [Org.from_row(r, await self._domains(conn, r.id)) for r in rows]

    async def _domains(self, conn: AsyncConnection, org_id: str) -> list[str]:
        q = select(t.org_domains.c.domain).where(t.org_domains.c.org_id == org_id).order_by(t.org_domains.c.domain)
        return list((await conn.execute(q)).scalars())

    async def add_domain(self, org_id: str, domain: str, now: int) -> None:
        async with self._tx() as conn:
            await conn.execute(dialect_insert(conn, t.org_domains).values(org_id=org_id, domain=domain, created_at=now)
                               .on_conflict_do_nothing())

    async def remove_domain(self, org_id: str, domain: str) -> bool:
        async with self._tx() as conn:
            res = await conn.execute(
                delete(t.org_domains).where(t.org_domains.c.org_id == org_id, t.org_domains.c.domain == domain)
            )
            return res.rowcount > 0

    async def set_branding(self, org_id: str, **fields: str | None) -> None:
        allowed = {"logo_url", "primary_color", "accent_color", "slogan", "name"}
        values = {k: v for k, v in fields.items() if k in allowed}
        if values:
            async with self._tx() as conn:
                await conn.execute(update(t.organizations).where(t.organizations.c.id == org_id).values(**values))

    async def add_credits(self, org_id: str, delta: int, reason: str, now: int, room_sid: str | None = None) -> int:
        """Moves the balance by `delta` (negative debits) and writes the ledger line; returns the new balance."""
        async with self._tx() as conn:
            return await self._move_credits(conn, org_id, delta, reason, now, room_sid)

    async def _move_credits(
        self, conn: AsyncConnection, org_id: str, delta: int, reason: str, now: int, room_sid: str | None
    ) -> int:
        balance = int((await conn.execute(
            update(t.organizations).where(t.organizations.c.id == org_id)
            .values(credits=t.organizations.c.credits + delta).returning(t.organizations.c.credits)
        )).scalar_one())
        await conn.execute(
            insert(t.credit_ledger).values(
                id=new_id("CL_"), org_id=org_id, delta=delta, balance_after=balance, reason=reason,
                room_sid=room_sid, created_at=now,
            )
        )
        if self.credits_moved is not None and delta:
            await self.credits_moved(org_id, balance - delta, balance, reason, room_sid)
        return balance

    async def ledger(self, org_id: str) -> list[dict[str, Any]]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.credit_ledger)
                .where(t.credit_ledger.c.org_id == org_id)
                .order_by(t.credit_ledger.c.created_at, t.credit_ledger.c.balance_after.desc())
            )
            return [dict(r._mapping) for r in rows]

    async def bill_room(self, room: Room, target_credits: int, now: int) -> int:
        """Raise the room's debited credits to `target_credits`, debiting the organization the difference.

        Guarded by a compare-and-set on `credits_debited`, so two concurrent callers never debit twice.
        Returns the credits debited by this call.
        """
        async with self._tx() as conn:
            current = (
                await conn.execute(select(t.rooms.c.credits_debited).where(t.rooms.c.sid == room.sid))
            ).scalar_one()
            delta = target_credits - int(current)
            if delta <= 0:
                return 0
            res = await conn.execute(
                update(t.rooms)
                .where(t.rooms.c.sid == room.sid, t.rooms.c.credits_debited == current)
                .values(credits_debited=target_credits)
            )
            if res.rowcount != 1:
                return 0
            await self._move_credits(conn, room.org_id, -delta, "room_usage", now, room.sid)
        room.credits_debited = target_credits
        return delta

    # ---- rooms -----------------------------------------------------------------------------------------------

    async def insert_room(self, room: Room) -> None:
        async with self._tx() as conn:
            res = await conn.execute(dialect_insert(conn, t.rooms).values(**room.to_row()).on_conflict_do_nothing(
                index_elements=[t.rooms.c.org_id, t.rooms.c.room_id]))
            if res.rowcount != 1:
                raise RoomIdTaken(room.room_id)

    async def get_room(self, org_id: str, room_id: str) -> Room | None:
        async with self._read() as conn:
            row = (
                await conn.execute(select(t.rooms).where(t.rooms.c.org_id == org_id, t.rooms.c.room_id == room_id))
            ).first()
        return Room.from_row(row) if row else None

    async def get_room_by_sid(self, sid: str) -> Room | None:
        async with self._read() as conn:
            row = (await conn.execute(_ROOM_BY_SID, {"sid": sid})).first()
        return Room.from_row(row) if row else None

    async def list_rooms(self, org_id: str, status: str, offset: int, limit: int) -> tuple[list[Room], int]:
        cond = [t.rooms.c.org_id == org_id]
        if status == "live":
            cond += [t.rooms.c.ended_at.is_(None), t.rooms.c.started_at.is_not(None)]
        elif status == "created":
            cond += [t.rooms.c.ended_at.is_(None), t.rooms.c.started_at.is_(None)]
        elif status == "finished":
            cond.append(t.rooms.c.ended_at.is_not(None))
        async with self._read() as conn:
            total = (await conn.execute(select(func.count()).select_from(t.rooms).where(*cond))).scalar_one()
            rows = await conn.execute(
                select(t.rooms).where(*cond).order_by(t.rooms.c.created_at.desc(), t.rooms.c.sid)
                .offset(offset).limit(limit)
            )
            return [Room.from_row(r) for r in rows], int(total)

    async def unfinished_started_rooms(self) -> list[Room]:
        """Rooms a class is running in (or ran in and is waiting out its empty timeout)."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.rooms).where(t.rooms.c.ended_at.is_(None), t.rooms.c.started_at.is_not(None))
            )
            return [Room.from_row(r) for r in rows]

    async def update_room(self, sid: str, **values: Any) -> None:
        async with self._tx() as conn:
            await conn.execute(update(t.rooms).where(t.rooms.c.sid == sid).values(**values))

    async def finish_room(self, sid: str, now: int, reason: str) -> bool:
        """Marks the room ended unless it already is; returns whether this call ended it."""
        async with self._tx() as conn:
            res = await conn.execute(
                update(t.rooms)
                .where(t.rooms.c.sid == sid, t.rooms.c.ended_at.is_(None))
                .values(ended_at=now, end_reason=reason)
            )
            return res.rowcount == 1

    # ---- participants ----------------------------------------------------------------------------------------

    async def upsert_participant(
        self, room_sid: str, uid: str, name: str, role: str, photo_url: str | None,
        customization: dict[str, Any], metadata: Any, now: int,
    ) -> Participant:
        values = {
            "name": name, "role": role, "photo_url": photo_url, "customization": json.dumps(customization),
            "metadata": json.dumps(metadata) if metadata is not None else None, "updated_at": now,
        }
        async with self._tx() as conn:
            # One statement: two nodes registering the same uid at once both succeed, on one row.
            q = dialect_insert(conn, t.participants).values(
                id=new_id("PA_"), room_sid=room_sid, uid=uid, muted=False, created_at=now, **values)
            row = (await conn.execute(q.on_conflict_do_update(
                index_elements=[t.participants.c.room_sid, t.participants.c.uid], set_=values,
            ).returning(*t.participants.c))).one()
        return Participant.from_values(row)

    async def get_participant(self, room_sid: str, uid: str) -> Participant | None:
        async with self._read() as conn:
            row = (await conn.execute(_PARTICIPANT, {"sid": room_sid, "uid": uid})).first()
        return Participant.from_values(row) if row else None

    async def room_and_participant(self, room_sid: str, uid: str) -> tuple[Room | None, Participant | None]:
        """The room and its participant `uid` in one query (a session's open reads both)."""
        async with self._read() as conn:
            row = (await conn.execute(_ROOM_AND_PARTICIPANT, {"sid": room_sid, "uid": uid})).first()
        return _room_and_participant(row)

    async def join_view(self, room_sid: str, uid: str) -> tuple[Room | None, Participant | None, int, bool]:
        """`room_and_participant` and `presence` in one query: everything a session's open reads before it writes,
        in its transaction."""
        async with self._read() as conn:
            row = (await conn.execute(_JOIN_VIEW, {"sid": room_sid, "uid": uid})).first()
        room, participant = _room_and_participant(row)
        if row is None:
            return room, participant, 0, False
        return room, participant, int(row.present_count), bool(row.present_mine)

    async def get_participant_by_id(self, pid: str) -> Participant | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.participants).where(t.participants.c.id == pid))).first()
        return Participant.from_row(row) if row else None

    async def list_participants(self, room_sid: str) -> list[Participant]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.participants)
                .where(t.participants.c.room_sid == room_sid)
                .order_by(t.participants.c.created_at)
            )
            return [Participant.from_row(r) for r in rows]

    async def latest_participant(self, org_id: str, uid: str) -> Participant | None:
        """The most recent record of this uid across the organization's rooms (name and role for reports)."""
        q = (
            select(t.participants)
            .join(t.rooms, t.rooms.c.sid == t.participants.c.room_sid)
            .where(t.rooms.c.org_id == org_id, t.participants.c.uid == uid)
            .order_by(t.participants.c.updated_at.desc())
            .limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(q)).first()
        return Participant.from_row(row) if row else None

    async def update_participant(self, pid: str, **values: Any) -> None:
        async with self._tx() as conn:
            await conn.execute(update(t.participants).where(t.participants.c.id == pid).values(**values))

    # ---- sessions --------------------------------------------------------------------------------------------

    async def insert_session(self, session: Session) -> None:
        async with self._tx() as conn:
            await conn.execute(_INSERT_SESSION, {
                "id": session.id, "participant_id": session.participant_id, "room_sid": session.room_sid,
                "org_id": session.org_id, "uid": session.uid, "joined_at": session.joined_at,
                "left_at": session.left_at, "leave_reason": session.leave_reason, "ip_address": session.ip_address,
                "node": session.node,
            })

    async def move_session(self, session_id: str, node: str) -> None:
        """The session is held by `node` now (its participant came back there)."""
        async with self._tx() as conn:
            await conn.execute(update(t.sessions).where(t.sessions.c.id == session_id).values(node=node))

    async def get_session(self, session_id: str) -> Session | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.sessions).where(t.sessions.c.id == session_id))).first()
        return Session.from_row(row) if row else None

    async def close_sessions(
        self, now: int, reason: str, *, session_id: str | None = None, room_sid: str | None = None,
        participant_id: str | None = None, session_ids: list[str] | None = None,
    ) -> list[Session]:
        """Closes the matching open sessions at `now`; returns those this call closed."""
        cond = [t.sessions.c.left_at.is_(None)]
        if session_id is not None:
            cond.append(t.sessions.c.id == session_id)
        if session_ids is not None:
            cond.append(t.sessions.c.id.in_(session_ids))
        if room_sid is not None:
            cond.append(t.sessions.c.room_sid == room_sid)
        if participant_id is not None:
            cond.append(t.sessions.c.participant_id == participant_id)
        async with self._tx() as conn:
            # RETURNING: exactly the rows this statement closed, not those a read before it saw open.
            rows = (await conn.execute(update(t.sessions).where(*cond).values(left_at=now, leave_reason=reason)
                                       .returning(*t.sessions.c))).all()
        return sorted((Session.from_row(r) for r in rows), key=lambda s: (s.joined_at, s.id))

    async def open_sessions(self, nodes: Sequence[str] | None = None) -> list[Session]:
        """Every open session, or those held by `nodes` (a dead node's, control/failover.py)."""
        cond = [t.sessions.c.left_at.is_(None)]
        if nodes is not None:
            cond.append(t.sessions.c.node.in_(list(nodes)))
        async with self._read() as conn:
            rows = await conn.execute(select(t.sessions).where(*cond))
            return [Session.from_row(r) for r in rows]

    async def room_sessions(self, room_sid: str, active_only: bool = False) -> list[Session]:
        cond = [t.sessions.c.room_sid == room_sid]
        if active_only:
            cond.append(t.sessions.c.left_at.is_(None))
        async with self._read() as conn:
            rows = await conn.execute(select(t.sessions).where(*cond).order_by(t.sessions.c.joined_at))
            return [Session.from_row(r) for r in rows]

    async def active_participants(self, room_sid: str) -> list[Participant]:
        """Participants with at least one open session: the room's current roster."""
        async with self._read() as conn:
            rows = await conn.execute(_ACTIVE_PARTICIPANTS, {"sid": room_sid})
            return [Participant.from_values(r) for r in rows]

    async def presence(self, room_sid: str, uid: str) -> tuple[int, bool]:
        """How many participants have an open session in the room, and whether `uid` is one of them: the two
        facts a join's capacity check and its participant_joined need, in one aggregate over the open-session
        index instead of building the whole roster (O(room) rows, so O(room^2) for a class joining at once).
        Counts the same set as `active_participants` (sessions reference their participant; a room's uid names
        one participant)."""
        async with self._read() as conn:
            count, mine = (await conn.execute(_PRESENCE, {"sid": room_sid, "uid": uid})).one()
        return int(count), bool(mine)

    async def uid_sessions(
        self, org_id: str, uid: str, room_sid: str | None, from_ms: int, to_ms: int
    ) -> list[tuple[Session, Room]]:
        """A participant's sessions that started in [from_ms, to_ms), newest first, with their rooms."""
        cond = [
            t.sessions.c.org_id == org_id, t.sessions.c.uid == uid,
            t.sessions.c.joined_at >= from_ms, t.sessions.c.joined_at < to_ms,
        ]
        if room_sid is not None:
            cond.append(t.sessions.c.room_sid == room_sid)
        q = (
            select(t.sessions, t.rooms)
            .join(t.rooms, t.rooms.c.sid == t.sessions.c.room_sid)
            .where(and_(*cond))
            .order_by(t.sessions.c.joined_at.desc(), t.sessions.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
        out = []
        for r in rows:
            m = r._mapping
            s = Session(
                id=m[t.sessions.c.id], participant_id=m["participant_id"], room_sid=m["room_sid"],
                org_id=m[t.sessions.c.org_id], uid=m["uid"], joined_at=int(m["joined_at"]), left_at=m["left_at"],
                leave_reason=m["leave_reason"], ip_address=m["ip_address"],
            )
            room_row = {c.name: m[c] for c in t.rooms.c}
            out.append((s, Room.from_row(_Row(room_row))))
        return out

    # ---- recordings ------------------------------------------------------------------------------------------

    async def live_recordings(self, room_sid: str) -> list[Recording]:
        async with self._read() as conn:
            rows = await conn.execute(_LIVE_RECORDINGS, {"sid": room_sid})
            return [Recording.from_row(r) for r in rows]

    async def set_recording_status(self, rec_ids: Sequence[str], status: str, now: int | None = None) -> None:
        values: dict[str, Any] = {"status": status}
        if now is not None:
            values["ended_at"] = now
        async with self._tx() as conn:
            await conn.execute(update(t.recordings).where(t.recordings.c.id.in_(list(rec_ids))).values(**values))

    async def insert_recording(self, rec: Recording) -> None:
        """Raises RecordingAlreadyLive when `rec` is live and the room has a live recording already: the database
        decides (unique index), so two nodes starting one at once make one recording."""
        async with self._tx() as conn:
            res = await conn.execute(dialect_insert(conn, t.recordings).values(
                id=rec.id, room_sid=rec.room_sid, status=rec.status, options=json.dumps(rec.options),
                started_at=rec.started_at,
            ).on_conflict_do_nothing(index_elements=[t.recordings.c.room_sid],
                                     index_where=t.recordings.c.status.in_(LIVE_RECORDING_STATES)))
            if res.rowcount != 1:
                raise RecordingAlreadyLive(rec.room_sid)

    async def get_recording(self, rec_id: str) -> Recording | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.recordings).where(t.recordings.c.id == rec_id))).first()
            return Recording.from_row(row) if row else None

    async def room_recordings(self, room_sid: str) -> list[Recording]:
        async with self._read() as conn:
            rows = await conn.execute(select(t.recordings).where(t.recordings.c.room_sid == room_sid)
                                      .order_by(t.recordings.c.started_at, t.recordings.c.id))
            return [Recording.from_row(r) for r in rows]

    async def org_recordings(self, org_id: str, rec_ids: Sequence[str]) -> list[tuple[Recording, Room]]:
        """The recordings among `rec_ids` that belong to rooms of the organization, with their room."""
        if not rec_ids:
            return []
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.recordings, t.rooms).join(t.rooms, t.rooms.c.sid == t.recordings.c.room_sid)
                .where(t.rooms.c.org_id == org_id, t.recordings.c.id.in_(list(rec_ids))))
            out = []
            for r in rows:
                m = r._mapping
                rec = Recording.from_row(_Row({c.name: m[c] for c in t.recordings.c}))
                out.append((rec, Room.from_row(_Row({c.name: m[c] for c in t.rooms.c}))))
            return out

    async def recordings_in_states(self, states: Sequence[str]) -> list[Recording]:
        async with self._read() as conn:
            rows = await conn.execute(select(t.recordings).where(t.recordings.c.status.in_(list(states))))
            return [Recording.from_row(r) for r in rows]

    async def update_recording(self, rec_id: str, **values: Any) -> None:
        async with self._tx() as conn:
            await conn.execute(update(t.recordings).where(t.recordings.c.id == rec_id).values(**values))

    async def delete_recording(self, rec_id: str) -> None:
        async with self._tx() as conn:
            await conn.execute(delete(t.recording_files).where(t.recording_files.c.recording_id == rec_id))
            await conn.execute(delete(t.recordings).where(t.recordings.c.id == rec_id))

    async def add_recording_file(self, f: RecordingFile) -> None:
        async with self._tx() as conn:
            await conn.execute(insert(t.recording_files).values(
                id=f.id, recording_id=f.recording_id, path=f.path, label=f.label, size=f.size,
                duration=f.duration, created_at=f.created_at))

    async def delete_recording_file(self, file_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.recording_files).where(t.recording_files.c.id == file_id))

    async def update_recording_file(self, file_id: str, **values: Any) -> None:
        async with self._tx() as conn:
            await conn.execute(update(t.recording_files).where(t.recording_files.c.id == file_id).values(**values))

    async def recording_files(self, rec_ids: Sequence[str]) -> list[RecordingFile]:
        if not rec_ids:
            return []
        async with self._read() as conn:
            rows = await conn.execute(select(t.recording_files)
                                      .where(t.recording_files.c.recording_id.in_(list(rec_ids)))
                                      .order_by(t.recording_files.c.created_at, t.recording_files.c.id))
            return [RecordingFile.from_row(r) for r in rows]

    async def get_recording_file(self, file_id: str) -> RecordingFile | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.recording_files).where(t.recording_files.c.id == file_id))).first()
            return RecordingFile.from_row(row) if row else None

    async def expired_recordings(self, ended_before: int, states: Sequence[str]) -> list[Recording]:
        """Finished, not yet deleted recordings of rooms that ended before `ended_before` (the janitor's work)."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.recordings).join(t.rooms, t.rooms.c.sid == t.recordings.c.room_sid).where(
                    t.rooms.c.ended_at.is_not(None), t.rooms.c.ended_at <= ended_before,
                    t.recordings.c.deleted_at.is_(None), t.recordings.c.status.in_(list(states))))
            return [Recording.from_row(r) for r in rows]

    # ---- classroom interaction -------------------------------------------------------------------------------

    async def raise_hand(self, room_sid: str, uid: str, now: int) -> bool:
        """Returns False when the hand was already up (its place in the queue is kept)."""
        async with self._tx() as conn:
            res = await conn.execute(dialect_insert(conn, t.hands).values(room_sid=room_sid, uid=uid, raised_at=now)
                                     .on_conflict_do_nothing())
            return res.rowcount == 1

    async def lower_hand(self, room_sid: str, uid: str) -> bool:
        async with self._tx() as conn:
            res = await conn.execute(delete(t.hands).where(t.hands.c.room_sid == room_sid, t.hands.c.uid == uid))
            return res.rowcount > 0

    async def hands(self, room_sid: str) -> list[tuple[str, int]]:
        """The raised-hands queue, first raised first."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.hands.c.uid, t.hands.c.raised_at)
                .where(t.hands.c.room_sid == room_sid)
                .order_by(t.hands.c.raised_at, t.hands.c.uid)
            )
            return [(r.uid, int(r.raised_at)) for r in rows]

    async def create_poll(self, poll_id: str, room_sid: str, question: str, options: list[str], created_by: str,
                          now: int) -> None:
        async with self._tx() as conn:
            await conn.execute(insert(t.polls).values(
                id=poll_id, room_sid=room_sid, question=question, options=json.dumps(options),
                created_by=created_by, created_at=now))

    async def get_poll(self, poll_id: str) -> dict[str, Any] | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.polls).where(t.polls.c.id == poll_id))).first()
        if row is None:
            return None
        m = dict(row._mapping)
        m["options"] = json.loads(m["options"])
        return m

    async def room_polls(self, room_sid: str) -> list[dict[str, Any]]:
        async with self._read() as conn:
            rows = await conn.execute(_ROOM_POLLS, {"sid": room_sid})
            out = []
            for row in rows:
                m = dict(row._mapping)
                m["options"] = json.loads(m["options"])
                out.append(m)
            return out

    async def answer_poll(self, poll_id: str, uid: str, option: int, now: int) -> bool:
        """Returns False when this uid already answered (one answer each)."""
        async with self._tx() as conn:
            res = await conn.execute(dialect_insert(conn, t.poll_answers).values(
                poll_id=poll_id, uid=uid, option_index=option, answered_at=now).on_conflict_do_nothing())
            return res.rowcount == 1

    async def poll_answers(self, poll_id: str) -> dict[str, int]:
        async with self._read() as conn:
            rows = await conn.execute(select(t.poll_answers.c.uid, t.poll_answers.c.option_index)
                                      .where(t.poll_answers.c.poll_id == poll_id))
            return {r.uid: int(r.option_index) for r in rows}

    async def close_poll(self, poll_id: str, now: int) -> bool:
        async with self._tx() as conn:
            res = await conn.execute(update(t.polls).where(t.polls.c.id == poll_id, t.polls.c.closed_at.is_(None))
                                     .values(closed_at=now))
            return res.rowcount == 1

    async def add_chat(self, message: dict[str, Any]) -> None:
        async with self._tx() as conn:
            await conn.execute(insert(t.chat_messages).values(**message))

    async def recent_chat(self, room_sid: str, limit: int) -> list[dict[str, Any]]:
        async with self._read() as conn:
            rows = await conn.execute(_RECENT_CHAT, {"sid": room_sid, "n": limit})
            return [dict(r._mapping) for r in rows][::-1]


def _room_and_participant(row: Any) -> tuple[Room | None, Participant | None]:
    """Splits a rooms LEFT JOIN participants row."""
    if row is None:
        return None, None
    m = row._mapping
    room = Room.from_row(_Row({c.name: m[c] for c in t.rooms.c}))
    if m[t.participants.c.id] is None:
        return room, None
    return room, Participant.from_row(_Row({c.name: m[c] for c in t.participants.c}))


# How long a PostgreSQL statement waits for a row lock (another node's `lock_room`) before giving up: SQLite's
# busy_timeout, so both engines turn a stuck neighbour into a 503 after the same 5 s, not a request hung forever.
PG_LOCK_TIMEOUT_MS = 5000
# SQLSTATEs that mean "the database cannot serve now", not "this statement is wrong": lock wait timed out, the
# server shutting down, crashed or starting, too many connections (and class 08, connection exceptions).
_PG_UNAVAILABLE = {"55P03", "57P01", "57P02", "57P03", "53300"}


def _engine_options(url: str) -> dict[str, Any]:
    if make_url(url).get_backend_name() != "postgresql":
        return {}
    return {"connect_args": {"server_settings": {"lock_timeout": str(PG_LOCK_TIMEOUT_MS)}}}


def _unavailable_is_operational(engine: AsyncEngine) -> None:
    """PostgreSQL away (stopped, restarting, out of connections) or a lock held past PG_LOCK_TIMEOUT_MS raises
    what a locked SQLite raises, OperationalError, which the REST middleware answers with 503
    DATABASE_UNAVAILABLE + Retry-After: asyncpg's failed connects are plain OSErrors or its own errors, and a
    connection cut under a statement or a lock timeout is a generic DBAPIError. SQLAlchemy still invalidates the
    pool on a disconnect, so the next call reconnects."""
    import asyncpg

    unreachable = (OSError, asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.CannotConnectNowError,
                   asyncpg.exceptions.TooManyConnectionsError)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except unreachable as exc:
            raise dialect.loaded_dbapi.OperationalError(f"cannot connect to PostgreSQL: {exc}") from exc

    @event.listens_for(engine.sync_engine, "handle_error")
    def _disconnected(context: Any) -> None:
        state = str(getattr(context.original_exception, "sqlstate", None) or "")
        unavailable = context.is_disconnect or state in _PG_UNAVAILABLE or state.startswith("08")
        if unavailable and not isinstance(context.sqlalchemy_exception, OperationalError):
            raise OperationalError(context.statement, context.parameters, context.original_exception,
                                   connection_invalidated=True) from context.original_exception


class _Row:
    """Adapter so `Room.from_row` can read a joined row's room columns."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping
