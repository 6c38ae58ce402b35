"""The AI tutor service: answers with class context, bills tokens, summarizes, and runs live transcription.

One instance per server process (`Services.tutor`). The REST handlers (control/api/tutor.py) and signaling
(`set_topic`) call it; it owns the backend, the speech models and live transcription (`transcription.py`: the
transcriber process and the rooms it transcribes).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control.clock import Clock
from control.config import TutorConfig
from control.errors import ApiError, room_not_found
from control.events import Event, EventBus
from control.roles import Permission, Role, can
from control.store.records import Org, Room
from control.store.store import Store
from control.store.tutor import TutorStore
from control.tutor import answer as answering
from control.tutor import models, summarizing
from control.tutor.backends import (
    Backend,
    BackendError,
    BackendUnavailable,
    Confidence,
    EmbeddedBackend,
    FakeBackend,
    OpenAiBackend,
    Usage,
)
from control.tutor.captions import caption
from control.tutor.cas import Cas
from control.tutor.context import ClassContext, estimate_tokens
from control.tutor.embeddings import Embedder, group_questions
from control.tutor.grounding import Grounder
from control.tutor.speech import Speech
from control.tutor.transcription import TranscriberTap, Transcription

if TYPE_CHECKING:
    from control.workers import WorkerPool
    from sfu.router import Sfu

CAPTION_HISTORY_S = 300  # a late joiner's `joined` carries this much of the captions

log = logging.getLogger("classcast.tutor")

MAX_TOPIC = 300
SUMMARY_TOKENS = 200
TOP_QUERIES = 10


def make_backend(cfg: TutorConfig) -> Backend:
    if cfg.llm_backend == "fake":
        return FakeBackend(supports_images=cfg.llm_images)
    if cfg.llm_backend == "openai":
        return OpenAiBackend(cfg.llm_url, cfg.llm_model, cfg.llm_api_key, supports_images=cfg.llm_images,
                             timeout_s=cfg.llm_timeout_s)
    return EmbeddedBackend(threads=cfg.llm_threads)


def insufficient_ai_credits() -> ApiError:
    return ApiError(402, "Insufficient credits", "INSUFFICIENT_CREDITS")


def backend_failed(exc: Exception) -> ApiError:
    if isinstance(exc, BackendUnavailable | models.ModelMissing):
        return ai_unavailable(exc)
    log.error("AI backend failed: %s", exc)
    return ApiError(500, "Internal server error: the AI model did not answer", "AI_BACKEND_ERROR")


def ai_unavailable(exc: Exception) -> ApiError:
    """The server runs without the AI models (installed without the `ai` extra): a clear 503, logged once a call."""
    log.warning("AI tutor unavailable: %s", exc)
    return ApiError(503, "The AI tutor is not available on this server: its models are not installed",
                    "AI_UNAVAILABLE")


@dataclass
class Answer:
    """What one request produced, filled in as the stream runs: `text` is what the student got (verified
    results and notes included), `model_text` what the model generated (billed)."""

    text: str = ""
    model_text: str = ""
    usage: Usage | None = None


class Tutor:
    def __init__(self, cfg: TutorConfig, store: Store, bus: EventBus, clock: Clock, data_dir: Path,
                 backend: Backend | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.db = TutorStore(store)
        self.bus = bus
        self.clock = clock
        self.backend = backend or make_backend(cfg)
        self.speech = Speech(threads=cfg.speech_threads, whisper_dir=cfg.whisper_model or None)
        self._speech_missing: str | None = None  # why transcription cannot run, once looked at
        self.embedder = Embedder(threads=cfg.speech_threads)
        self.cas = Cas()  # its process starts with the server (`warm`) or the first computable question
        # Live transcription runs in its own process (transcriber/); its utterances come back as stored segments.
        self.transcription = Transcription(cfg, data_dir, clock, self._is_speaker, self._store_segment)
        # The (short) MiniLM embedding runs: light work, off the event loop.
        self._decode = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self.grounder = Grounder(self.embedder.embed, self._decode)
        self._tasks: set[asyncio.Task[None]] = set()  # held so that the loop cannot drop them half done
        # False once the database says transcription is on nowhere: joins then cost the tutor no query at all.
        self._enabled_somewhere: bool | None = True if cfg.transcription else None
        self._unsubscribe = bus.subscribe(self._on_event)

    @property
    def sfu(self) -> Sfu | WorkerPool | None:
        """Set when signaling starts: transcription needs the SFU's taps."""
        return self.transcription.sfu

    @sfu.setter
    def sfu(self, sfu: Sfu | WorkerPool | None) -> None:
        self.transcription.sfu = sfu

    @property
    def transcribers(self) -> dict[str, TranscriberTap]:
        """The rooms being transcribed (room sid -> their tap)."""
        return self.transcription.taps

    def warm(self) -> None:
        """Starts the computer algebra process in the background, so the first computable question does not wait
        for SymPy's import (about a second)."""
        task = asyncio.get_running_loop().create_task(self.cas.start())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- rooms and context --------------------------------------------------------------------------------------

    async def resolve_room(self, org: Org, room_id: str) -> Room:
        """The plain room id, or the seed's organization-prefixed form `<organizationId>_<roomId>`."""
        room = await self.store.get_room(org.id, room_id)
        prefix = f"{org.id}_"
        if room is None and room_id.startswith(prefix) and len(room_id) > len(prefix):
            room = await self.store.get_room(org.id, room_id[len(prefix):])
        if room is None:
            raise room_not_found()
        return room

    async def context(self, room: Room) -> ClassContext:
        since = self.clock.now_ms() - self.cfg.transcript_window_s * 1000
        segments = await self.db.segments(room.sid, since=since)
        asked = await self.db.room_questions(room.sid)
        return ClassContext(
            title=room.title, description=room.description, topic=await self.db.topic(room.sid),
            transcript=[s["text"] for s in segments], questions=[q.question or "" for q in asked],
        )

    async def set_topic(self, room: Room, topic: Any, uid: str | None) -> str:
        if not isinstance(topic, str) or not topic.strip():
            raise ApiError(400, "Validation failed: topic is required", "VALIDATION_ERROR", {"topic": "is required"})
        topic = topic.strip()
        if len(topic) > MAX_TOPIC:
            raise ApiError(400, f"Validation failed: topic must be at most {MAX_TOPIC} characters",
                           "VALIDATION_ERROR", {"topic": f"must be at most {MAX_TOPIC} characters"})
        await self.db.set_topic(room.sid, topic, uid, self.clock.now_ms())
        self.bus.publish(Event(type="topic_set", org_id=room.org_id, room_id=room.room_id, room_sid=room.sid,
                               data={"topic": topic, "uid": uid}))
        return topic

    # ---- answering ----------------------------------------------------------------------------------------------

    async def require_credits(self, org_id: str) -> None:
        """A 402 before any inference runs: checked on the current balance, not the request's snapshot."""
        org = await self.store.get_org(org_id)
        if org is None or org.credits <= 0:
            raise insufficient_ai_credits()

    def credits_for(self, usage: Usage) -> int:
        total = usage.input_tokens + usage.output_tokens
        return math.ceil(total / self.cfg.tokens_per_credit) if total > 0 else 0

    async def _bill(self, *, org_id: str, room_sid: str | None, uid: str | None, service: str, usage: Usage,
                    question: str | None, answer: str | None) -> None:
        now = self.clock.now_ms()
        await self.db.record_usage(org_id=org_id, room_sid=room_sid, student_uid=uid, service=service,
                                   input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                   question=question, answer=answer, now=now)
        credits = self.credits_for(usage)
        if credits:
            await self.store.add_credits(org_id, -credits, service, now, room_sid)

    @staticmethod
    def _usage_of(messages: list[dict[str, Any]], answer: Answer) -> Usage:
        """The backend's own count; an estimate when the stream was cut before the backend reported one."""
        if answer.usage is not None:
            return answer.usage
        prompt = " ".join(str(m["content"]) for m in messages)
        answer.usage = Usage(estimate_tokens(prompt), estimate_tokens(answer.model_text))
        return answer.usage

    def check_image(self, image: tuple[str, str] | None) -> None:
        if image is not None and not self.backend.supports_images:
            raise ApiError(400, f"The configured AI model ({self.backend.name}) cannot read images",
                           "IMAGE_NOT_SUPPORTED")

    async def _generate(self, messages: list[dict[str, Any]], max_tokens: int,
                        answer: Answer) -> AsyncIterator[str | Confidence]:
        try:
            async for item in self.backend.stream(messages, max_tokens):
                if isinstance(item, Usage):
                    answer.usage = item
                elif isinstance(item, Confidence):
                    yield item
                else:
                    answer.model_text += item
                    yield item
        except BackendError as exc:
            raise backend_failed(exc) from exc

    async def _answer(self, plan: answering.Plan, question: str, answer: Answer) -> AsyncIterator[str]:
        pieces = answering.speak(plan, question,
                                 lambda: self._generate(plan.messages, self.cfg.max_answer_tokens, answer))
        try:
            async for piece in pieces:
                answer.text += piece
                yield piece
        finally:
            await pieces.aclose()

    async def ask(self, room: Room, uid: str, question: str, answer: Answer) -> AsyncIterator[str]:
        """Streams the answer's text; usage is billed and the question stored once the stream completes."""
        await self.require_credits(room.org_id)
        plan = await answering.plan(await self.context(room), question, self.cfg.context_tokens, self.cas,
                                    self.grounder, confidence=self.backend.reports_confidence)
        try:
            async for piece in self._answer(plan, question, answer):
                yield piece
        finally:  # also when the client went away mid-stream (aclose): what was generated is billed
            if answer.usage is not None or answer.text:
                usage = self._usage_of(plan.messages, answer) if answer.model_text or answer.usage else Usage(0, 0)
                await self._bill(org_id=room.org_id, room_sid=room.sid, uid=uid, service="aiTutor",
                                 usage=usage, question=question, answer=answer.text.strip())

    async def ask_general(self, org_id: str, chat_id: str, question: str, image: tuple[str, str] | None,
                          answer: Answer) -> AsyncIterator[str]:
        """The general assistant (ai-agent): no class context (so no teacher to quote or send the student to),
        but the same computer algebra; billed as aiAgent under its chatId."""
        self.check_image(image)
        await self.require_credits(org_id)
        plan = await answering.plan(ClassContext(title=""), question, 10_000, self.cas, None, general=True,
                                    image=image)
        try:
            async for piece in self._answer(plan, question, answer):
                yield piece
        finally:
            if answer.usage is not None or answer.text:
                usage = self._usage_of(plan.messages, answer) if answer.model_text or answer.usage else Usage(0, 0)
                await self._bill(org_id=org_id, room_sid=None, uid=chat_id, service="aiAgent",
                                 usage=usage, question=question, answer=answer.text.strip())

    # ---- summary and usage --------------------------------------------------------------------------------------

    async def summary(self, room: Room) -> dict[str, Any]:
        asked = await self.db.room_questions(room.sid)
        questions = [q.question or "" for q in asked]
        answers = [q.answer or "" for q in asked]
        top: list[dict[str, Any]] = []
        if questions:
            vectors = await asyncio.get_running_loop().run_in_executor(self._decode, self.embedder.embed, questions)
            for g in group_questions(vectors, questions, answers)[:TOP_QUERIES]:
                top.append({"question": g.question, "answer": g.answer, "frequency": g.frequency})
        segments = await self.db.segments(room.sid)
        if not segments and not questions:
            return {"summary": summarizing.nothing_to_summarize(room.started_at is None), "topQueries": []}
        if not segments:
            return {"summary": summarizing.questions_only(top, len(questions)), "topQueries": top}
        await self.require_credits(room.org_id)
        transcript = [s["text"] for s in segments]
        asked_lines = [f"{q['question']} (asked {q['frequency']}x)" for q in top]
        messages = summarizing.summary_messages(transcript, asked_lines, self.cfg.context_tokens * 2)
        answer = Answer()
        async for _ in self._generate(messages, SUMMARY_TOKENS, answer):
            pass
        await self._bill(org_id=room.org_id, room_sid=room.sid, uid=None, service="aiTutor",
                         usage=self._usage_of(messages, answer), question=None, answer=None)
        text = summarizing.supported(answer.model_text, transcript + questions)
        return {"summary": text or summarizing.quoted(transcript, top), "topQueries": top}

    async def usage(self, room: Room, student_uid: str | None = None) -> dict[str, Any]:
        """Tokens and credits as billed: each request's credits were rounded up on their own (`_bill`)."""
        rows = await self.db.room_requests(room.sid)
        body: dict[str, Any] = {
            "usage": {"inputTokens": sum(r[0] for r in rows), "outputTokens": sum(r[1] for r in rows)},
            "requests": len(rows), "credits": sum(self.credits_for(Usage(*r)) for r in rows)}
        if student_uid is not None:
            mine = await self.db.room_requests(room.sid, student_uid)
            body["student"] = {"studentUid": student_uid, "inputTokens": sum(r[0] for r in mine),
                               "outputTokens": sum(r[1] for r in mine), "requests": len(mine),
                               "credits": sum(self.credits_for(Usage(*r)) for r in mine)}
        return body

    async def org_usage(self, org_id: str, start: int | None, end: int | None, credit_rate: float) -> dict[str, Any]:
        rows = await self.db.org_usage(org_id, start, end)

        def part(service: str) -> tuple[int, int, int, set[str | None], float]:
            mine = [r for r in rows if r.service == service]
            inp = sum(r.input_tokens for r in mine)
            out = sum(r.output_tokens for r in mine)
            cost = sum(self.credits_for(Usage(r.input_tokens, r.output_tokens)) for r in mine) * credit_rate
            return len(mine), inp, out, {r.student_uid for r in mine}, round(cost, 4)

        _, a_in, a_out, chats, a_cost = part("aiAgent")
        t_n, t_in, t_out, _, t_cost = part("aiTutor")
        return {
            "summary": {"totalSessions": len(chats) + t_n, "totalTokenCost": round(a_cost + t_cost, 4),
                        "totalInputTokens": a_in + t_in, "totalOutputTokens": a_out + t_out},
            "breakdown": {
                "aiAgent": {"sessions": len(chats), "inputTokens": a_in, "outputTokens": a_out, "cost": a_cost},
                "aiTutor": {"interactions": t_n, "inputTokens": t_in, "outputTokens": t_out, "cost": t_cost},
            },
        }

    # ---- live transcription -------------------------------------------------------------------------------------

    async def transcription_enabled(self, room: Room) -> bool:
        chosen = await self.db.transcription(room.org_id, room.room_id)
        return self.cfg.transcription if chosen is None else chosen

    async def set_transcription(self, org_id: str, room: Room | None, enabled: bool) -> None:
        await self.db.set_transcription(org_id, room.room_id if room else "", enabled, self.clock.now_ms())
        if enabled:
            self._enabled_somewhere = True
        rooms = [room] if room else [r for r in await self.store.unfinished_started_rooms() if r.org_id == org_id]
        for r in rooms:
            await self.sync_transcriber(r)

    def _can_transcribe(self) -> bool:
        """Whether the speech model is installed; without it no transcriber starts (said once in the log)."""
        if self._speech_missing is None:
            try:
                if importlib.util.find_spec("faster_whisper") is None:  # looked for, not loaded: it runs elsewhere
                    models.require("faster_whisper")  # raises ModelMissing with the install hint
                if not self.cfg.whisper_model:
                    models.check_whisper()
                self._speech_missing = ""
            except models.ModelMissing as exc:
                self._speech_missing = str(exc)
                log.warning("live transcription is off: %s", exc)
        return not self._speech_missing

    async def sync_transcriber(self, room: Room) -> None:
        """Runs the room's transcriber exactly while its class is live and transcription is on for it."""
        live = room.started_at is not None and not room.ended
        want = live and self.sfu is not None and await self.transcription_enabled(room) and self._can_transcribe()
        running = self.transcribers.get(room.sid)
        if want and running is None:
            try:
                await self.transcription.start(room.sid)
            except (OSError, TimeoutError):
                log.exception("the transcriber process could not start: room %s is not transcribed", room.sid)
                return
            log.info("transcribing room %s", room.sid)
        elif not want and running is not None:
            await self._stop_transcriber(room.sid)

    async def _stop_transcriber(self, room_sid: str) -> None:
        tap = await self.transcription.stop(room_sid)
        if tap is not None:
            said = tap.finished.result() if tap.finished.done() else {}
            log.info("stopped transcribing room %s (%d segments, %d packets dropped here, %d in the transcriber)",
                     room_sid, tap.segments, tap.dropped, int(said.get("dropped") or 0))

    async def _is_speaker(self, room_sid: str, uid: str) -> bool:
        """The teacher's audio (anyone who may publish and moderate: teacher, moderator, admin), not students'."""
        p = await self.store.get_participant(room_sid, uid)
        if p is None:
            return False
        try:
            return can(Role(p.role), Permission.SET_TOPIC)
        except ValueError:
            return False

    async def _store_segment(self, room_sid: str, uid: str, text: str, started: int, ended: int) -> None:
        """Stores the utterance, then sends it to the room as a caption (signaling fans `caption` events out)."""
        await self.db.add_segment(room_sid, uid, text, started, ended)
        room = await self.store.get_room_by_sid(room_sid)
        if room is None:
            return
        p = await self.store.get_participant(room_sid, uid)
        message = caption(uid, p.name if p else uid, text, started, ended, room.started_at)
        data = {k: v for k, v in message.items() if k != "type"}
        self.bus.publish(Event(type="caption", org_id=room.org_id, room_id=room.room_id, room_sid=room_sid, data=data))

    async def recent_captions(self, room: Room, window_s: int = CAPTION_HISTORY_S) -> list[dict[str, Any]]:
        """The captions of the last `window_s` seconds, oldest first: what a late joiner's `joined` carries."""
        segments = await self.db.segments(room.sid, since=self.clock.now_ms() - window_s * 1000)
        names: dict[str, str] = {}
        out = []
        for s in segments:
            uid = s["uid"]
            if uid not in names:
                p = await self.store.get_participant(room.sid, uid)
                names[uid] = p.name if p else uid
            out.append(caption(uid, names[uid], s["text"], s["started_at"], s["ended_at"], room.started_at))
        return out

    def _on_event(self, event: Event) -> None:
        wanted = (event.type == "participant_joined" and self._enabled_somewhere is not False) or (
            event.type == "class_ended" and event.room_sid in self.transcribers)
        if wanted:
            task = asyncio.get_running_loop().create_task(self._sync_by_sid(event.room_sid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sync_by_sid(self, room_sid: str) -> None:
        try:
            if self._enabled_somewhere is None:
                self._enabled_somewhere = await self.db.any_transcription()
                if not self._enabled_somewhere and room_sid not in self.transcribers:
                    return
            room = await self.store.get_room_by_sid(room_sid)
            if room is None or room.ended:
                await self._stop_transcriber(room_sid)
            else:
                await self.sync_transcriber(room)
        except Exception:
            log.exception("transcriber sync failed for %s", room_sid)

    async def transcript(self, room: Room) -> list[dict[str, Any]]:
        return await self.db.segments(room.sid)

    async def close(self) -> None:
        self._unsubscribe()
        for sid in list(self.transcribers):
            await self._stop_transcriber(sid)
        await self.transcription.close()
        await self.backend.close()
        await asyncio.get_running_loop().run_in_executor(None, self.cas.close)
        self.speech.close()
        self._decode.shutdown(wait=False, cancel_futures=True)
