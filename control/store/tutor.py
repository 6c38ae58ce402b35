"""The AI tutor's queries: topics, transcript segments, transcription switches, AI usage (tables of migration 3
and `ai_tutor_usage` of migration 1). Kept beside `store.py`, on the same engine, so the tutor owns its queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select

from control.ids import new_id
from control.store import schema as t
from control.store.store import Store, dialect_insert

# A join's `joined` message carries the topic: built once (see the note on control/store/store.py's statements).
_TOPIC = select(t.room_topics.c.topic).where(t.room_topics.c.room_sid == bindparam("sid"))


@dataclass(frozen=True)
class UsageRow:
    service: str  # aiTutor or aiAgent
    student_uid: str | None  # for aiAgent: the chatId
    input_tokens: int
    output_tokens: int
    question: str | None
    answer: str | None
    created_at: int


class TutorStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    # ---- topic ---------------------------------------------------------------------------------------------

    async def set_topic(self, room_sid: str, topic: str, uid: str | None, now: int) -> None:
        values = {"topic": topic, "set_by": uid, "updated_at": now}
        async with self.engine.begin() as conn:  # an upsert: two nodes setting it at once both succeed
            q = dialect_insert(conn, t.room_topics).values(room_sid=room_sid, **values)
            await conn.execute(q.on_conflict_do_update(index_elements=[t.room_topics.c.room_sid], set_=values))

    async def topic(self, room_sid: str) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(_TOPIC, {"sid": room_sid})).scalar()

    # ---- transcript ----------------------------------------------------------------------------------------

    async def add_segment(self, room_sid: str, uid: str, text: str, started_at: int, ended_at: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(t.transcript_segments).values(
                id=new_id("TS_"), room_sid=room_sid, uid=uid, text=text, started_at=started_at, ended_at=ended_at))

    async def segments(self, room_sid: str, since: int | None = None) -> list[dict[str, Any]]:
        c = t.transcript_segments.c
        q = select(c.uid, c.text, c.started_at, c.ended_at).where(c.room_sid == room_sid)
        if since is not None:
            q = q.where(c.ended_at >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(c.started_at, c.id))).all()
        return [dict(r._mapping) for r in rows]

    # ---- transcription switches ----------------------------------------------------------------------------

    async def set_transcription(self, org_id: str, room_id: str, enabled: bool, now: int) -> None:
        """room_id "" is the organization's default."""
        c = t.transcription_settings.c
        values = {"enabled": enabled, "updated_at": now}
        async with self.engine.begin() as conn:
            await conn.execute(dialect_insert(conn, t.transcription_settings).values(
                org_id=org_id, room_id=room_id, **values).on_conflict_do_update(
                index_elements=[c.org_id, c.room_id], set_=values))

    async def transcription(self, org_id: str, room_id: str) -> bool | None:
        """The room's own switch, else the organization's, else None (the server default applies)."""
        c = t.transcription_settings.c
        async with self.engine.connect() as conn:
            rows = dict((await conn.execute(select(c.room_id, c.enabled).where(
                c.org_id == org_id, c.room_id.in_([room_id, ""])))).all())
        if room_id in rows:
            return bool(rows[room_id])
        if "" in rows:
            return bool(rows[""])
        return None

    async def any_transcription(self) -> bool:
        """Whether any organization or room has turned transcription on (lets joins skip the check otherwise)."""
        c = t.transcription_settings.c
        async with self.engine.connect() as conn:
            return (await conn.execute(select(c.org_id).where(c.enabled.is_(True)).limit(1))).first() is not None

    # ---- usage ---------------------------------------------------------------------------------------------

    async def record_usage(self, *, org_id: str, room_sid: str | None, student_uid: str | None, service: str,
                           input_tokens: int, output_tokens: int, question: str | None, answer: str | None,
                           now: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(t.ai_tutor_usage).values(
                id=new_id("AU_"), org_id=org_id, room_sid=room_sid, student_uid=student_uid, service=service,
                input_tokens=input_tokens, output_tokens=output_tokens, question=question, answer=answer,
                created_at=now))

    async def room_requests(self, room_sid: str, student_uid: str | None = None) -> list[tuple[int, int]]:
        """(input tokens, output tokens) of each tutor request of the room, or of one student in it: each request
        is billed on its own (rounded up to a credit), so credits are summed per request, never over the total."""
        c = t.ai_tutor_usage.c
        q = select(c.input_tokens, c.output_tokens).where(c.room_sid == room_sid, c.service == "aiTutor")
        if student_uid is not None:
            q = q.where(c.student_uid == student_uid)
        async with self.engine.connect() as conn:
            return [(int(a), int(b)) for a, b in (await conn.execute(q)).all()]

    async def room_questions(self, room_sid: str) -> list[UsageRow]:
        c = t.ai_tutor_usage.c
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(c.service, c.student_uid, c.input_tokens, c.output_tokens, c.question, c.answer, c.created_at)
                .where(c.room_sid == room_sid, c.service == "aiTutor", c.question.is_not(None))
                .order_by(c.created_at, c.id))).all()
        return [UsageRow(*r) for r in rows]

    async def org_usage(self, org_id: str, start: int | None, end: int | None) -> list[UsageRow]:
        c = t.ai_tutor_usage.c
        q = select(c.service, c.student_uid, c.input_tokens, c.output_tokens, c.question, c.answer,
                   c.created_at).where(c.org_id == org_id)
        if start is not None:
            q = q.where(c.created_at >= start)
        if end is not None:
            q = q.where(c.created_at < end)
        async with self.engine.connect() as conn:
            return [UsageRow(*r) for r in (await conn.execute(q)).all()]
