"""AI tutor and AI agent endpoints (seed 003, reference 2.12-2.17), the teacher's topic and the live transcript.

Backends call these with VF-ORG-ID and name the student in the body; browsers call the /v1/ai-tutor endpoints with
their participant token (`Authorization: Bearer`) and the student is then the token's participant.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from control import validation as v
from control.api import models
from control.api.common import GRANT, ok, org, room_id_param, services
from control.auth import Grant
from control.clock import iso
from control.errors import ApiError, room_ended, unauthorized, validation_error
from control.services import SERVICES
from control.store.records import Room
from control.tutor.backends import Usage
from control.tutor.models import ModelMissing
from control.tutor.service import Answer, Tutor, ai_unavailable
from control.tutor.speech import BadAudio, decode_base64

log = logging.getLogger("classcast.tutor")

MAX_IMAGE_BYTES = 4 * 1024 * 1024
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Connection": "keep-alive"}


def tutor(request: web.Request) -> Tutor:
    t = services(request).tutor
    assert t is not None
    return t


def grant(request: web.Request) -> Grant | None:
    return request.get(GRANT)


def require_org_caller(request: web.Request) -> None:
    """Settings are the integrator's: a participant token may not change them."""
    if grant(request) is not None:
        raise ApiError(403, "This endpoint needs VF-ORG-ID, not a participant token", "FORBIDDEN")


async def read_body(request: web.Request) -> dict[str, Any]:
    """JSON with the tutor's own size limit: base64 audio and images do not fit the API's default."""
    return await v.read_json(request, limit=services(request).config.tutor.max_body_bytes)


async def _speak(t: Tutor, text: str) -> str:
    """The answer spoken, as base64 WAV; a server without the speech models answers 503, not 500."""
    try:
        return base64.b64encode(await t.speech.synthesize(text)).decode()
    except ModelMissing as exc:
        raise ai_unavailable(exc) from None


async def _hear(t: Tutor, audio: bytes) -> str:
    try:
        return await t.speech.transcribe(audio)
    except ModelMissing as exc:
        raise ai_unavailable(exc) from None


def _missing(field: str) -> ApiError:
    return ApiError(400, f"Bad request: {field} is required", "VALIDATION_ERROR", {field: "is required"})


async def _room_for(request: web.Request, room_id: str) -> Room:
    g = grant(request)
    room = await tutor(request).resolve_room(org(request), room_id)
    if g is not None and room.sid != g.room.sid:
        raise ApiError(403, "Your token is for another room", "FORBIDDEN")
    return room


async def _question(request: web.Request, text: str | None, audio: str | None,
                    text_key: str) -> tuple[str, str, str | None]:
    """(question, requestModality, what was heard): text, or audio transcribed offline, or both."""
    heard = None
    if audio is not None:
        try:
            heard = await _hear(tutor(request), decode_base64(audio))
        except BadAudio as exc:
            raise ApiError(400, f"Bad audio: {exc}", "BAD_AUDIO", {"audio": str(exc)}) from None
        if not heard:
            raise ApiError(400, "Bad audio: no speech was recognized in it", "BAD_AUDIO",
                           {"audio": "no speech recognized"})
    question = " ".join(p for p in (text, heard) if p)
    if not question:
        raise ApiError(400, f"Bad request: {text_key} or audio is required", "VALIDATION_ERROR",
                       {text_key: f"{text_key} or audio is required"})
    return question, ("audio" if heard else "text"), heard


class ChatRequest:
    """A validated tutor request: who asks, in which room, what, and how the answer should come back."""

    def __init__(self, room: Room, uid: str, question: str, request_modality: str, response_modality: str,
                 heard: str | None) -> None:
        self.room = room
        self.uid = uid
        self.question = question
        self.request_modality = request_modality
        self.response_modality = response_modality
        self.heard = heard


async def chat_request(request: web.Request) -> ChatRequest:
    body = v.parse(models.TutorChat, await read_body(request), missing="Bad request")
    g = grant(request)
    room_id, uid, org_id, modality = body.roomId, body.studentUid, body.organizationId, body.responseModality
    if g is None:
        if not uid:
            raise _missing("studentUid")
        if not org_id:
            raise _missing("organizationId")
    else:  # a browser: the token says who asks; fields it sends anyway must agree with it
        if uid and uid != g.participant.uid:
            raise ApiError(403, "studentUid does not match your token", "FORBIDDEN")
        uid = g.participant.uid
    if org_id and org_id != org(request).id:
        raise unauthorized()
    room = await _room_for(request, room_id)
    if room.ended:  # the tutor helps during a live class (seed 003), as a browser's token already says (410)
        raise room_ended()
    await tutor(request).require_credits(room.org_id)  # 402 before transcription or inference
    question, req_modality, heard = await _question(request, body.text, body.audio, "text")
    assert uid is not None
    return ChatRequest(room, uid, question, req_modality, modality, heard)


async def chat(request: web.Request) -> web.Response:
    req = await chat_request(request)
    t = tutor(request)
    answer = Answer()
    async for _ in t.ask(req.room, req.uid, req.question, answer):
        pass
    text = answer.text.strip()
    body: dict[str, Any] = {"success": True, "text": text}
    if req.response_modality in ("audio", "both"):
        body["audio"] = await _speak(t, text)
        body["audioMimeType"] = "audio/wav"
    body["usage"] = (answer.usage or Usage(0, 0)).as_dict()
    body["requestModality"] = req.request_modality
    body["responseModality"] = req.response_modality
    if req.heard is not None:
        body["inputTranscript"] = req.heard
    warnings = v.take_warnings()
    if warnings:
        body["warnings"] = warnings
    return web.json_response(body)


def _sse(payload: Any, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()


async def _first_then_rest(gen: AsyncIterator[str]) -> tuple[str | None, AsyncIterator[str]]:
    """Runs the generator to its first piece before the response starts, so that a 402 or a backend that is
    down still gets a proper JSON error status instead of a broken stream."""
    try:
        first: str | None = await gen.__anext__()
    except StopAsyncIteration:
        first = None
    return first, gen


async def chat_stream(request: web.Request) -> web.StreamResponse:
    req = await chat_request(request)
    t = tutor(request)
    answer = Answer()
    first, rest = await _first_then_rest(t.ask(req.room, req.uid, req.question, answer))
    resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
    try:
        await resp.prepare(request)
        warnings = v.take_warnings()
        if warnings:  # a stream has no envelope: a named event of its own comes first (EventSource's onmessage
            # never sees it, so a client reading `text` from every message is not surprised)
            await resp.write(_sse({"type": "warnings", "warnings": warnings}, event="warnings"))
        try:
            if first is not None:
                await resp.write(_sse({"text": first, "usage": None}))
                async for piece in rest:
                    await resp.write(_sse({"text": piece, "usage": None}))
            if req.response_modality in ("audio", "both"):
                audio = await _speak(t, answer.text.strip())
                await resp.write(_sse({"audio": audio, "audioMimeType": "audio/wav", "usage": None}))
            await resp.write(_sse({"usage": (answer.usage or Usage(0, 0)).as_dict()}))
        except ApiError as exc:  # the status line is gone: report in the stream, then end it as usual
            await resp.write(_sse({"error": exc.message, "code": exc.code, "usage": None}))
        await resp.write(_sse("[DONE]"))
        await resp.write_eof()
    except ConnectionError:
        log.info("client left the tutor stream early")  # generation stops; what was generated is billed
    finally:
        await rest.aclose()
    return resp


async def summary(request: web.Request) -> web.Response:
    room = await _room_for(request, room_id_param(request))
    return web.json_response({"success": True, **await tutor(request).summary(room)})


async def usage(request: web.Request) -> web.Response:
    room = await _room_for(request, room_id_param(request))
    g = grant(request)
    student = g.participant.uid if g is not None else (request.query.get("studentUid") or None)
    return web.json_response({"success": True, **await tutor(request).usage(room, student)})


def room_id_param_any(request: web.Request) -> str:
    """The tutor's paths take the seed's prefixed form too (`org_123_class-456`), which room_id_param allows."""
    return room_id_param(request)


# ---- topic, transcription, transcript ---------------------------------------------------------------------------


async def set_topic(request: web.Request) -> web.Response:
    require_org_caller(request)
    room = await tutor(request).resolve_room(org(request), room_id_param(request))
    body = v.parse(models.Topic, await v.read_json(request))
    if room.ended:
        raise ApiError(410, "Room already ended", "ROOM_ENDED")
    topic = await tutor(request).set_topic(room, body.topic, None)
    return ok({"roomId": room.room_id, "topic": topic}, "Topic set")


async def set_transcription(request: web.Request) -> web.Response:
    require_org_caller(request)
    body = v.parse(models.Transcription, await v.read_json(request))
    enabled, room_id = body.enabled, body.roomId
    t = tutor(request)
    room = await t.resolve_room(org(request), room_id) if room_id else None
    await t.set_transcription(org(request).id, room, enabled)
    scope = {"roomId": room.room_id} if room else {"organization": org(request).id}
    return ok({**scope, "enabled": enabled}, "Transcription " + ("enabled" if enabled else "disabled"))


async def transcript(request: web.Request) -> web.Response:
    t = tutor(request)
    room = await t.resolve_room(org(request), room_id_param(request))
    segments = await t.transcript(room)
    return ok({
        "roomId": room.room_id,
        "transcribing": room.sid in t.transcribers,
        "segments": [{"uid": s["uid"], "text": s["text"], "startedAt": iso(s["started_at"]),
                      "endedAt": iso(s["ended_at"])} for s in segments],
        "text": " ".join(s["text"] for s in segments),
    })


# ---- the general assistant (reference 2.16-2.17) -----------------------------------------------------------------


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def agent_chat_stream(request: web.Request) -> web.StreamResponse:
    body = v.parse(models.AgentChat, await read_body(request), missing="Bad request")
    chat_id, modality = body.chatId, body.responseModality
    if body.voiceName:
        v.warn(f"voiceName is not supported and was ignored: {v.KNOWN_UNSUPPORTED['voiceName']}")
    image = None
    if body.image is not None:
        mime = body.imageMimeType
        if not mime:
            raise _missing("imageMimeType")
        try:
            raw = base64.b64decode(body.image, validate=True)
        except ValueError:
            raw = b""
        if not raw or len(raw) > MAX_IMAGE_BYTES:
            raise validation_error("image", f"must be base64 of at most {MAX_IMAGE_BYTES} bytes")
        image = (mime, body.image)
    t = tutor(request)
    t.check_image(image)  # a clear 400 before any work when the model cannot see
    org_id = org(request).id
    await t.require_credits(org_id)
    question, _, _ = await _question(request, body.message, body.audio, "message")
    answer = Answer()
    first, rest = await _first_then_rest(t.ask_general(org_id, chat_id, question, image, answer))
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson; charset=utf-8",
                                                   "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        warnings = v.take_warnings()
        if warnings:  # a stream has no envelope: its first line carries them
            await resp.write(_ndjson({"type": "warnings", "warnings": warnings}))
        try:
            if first is not None:
                await resp.write(_ndjson({"type": "text", "text": first}))
                async for piece in rest:
                    await resp.write(_ndjson({"type": "text", "text": piece}))
            if modality in ("audio", "text+audio"):
                audio = await _speak(t, answer.text.strip())
                await resp.write(_ndjson({"type": "audio", "audio": audio, "mimeType": "audio/wav"}))
            await resp.write(_ndjson({"type": "usage", "usage": (answer.usage or Usage(0, 0)).as_dict()}))
        except ApiError as exc:
            await resp.write(_ndjson({"type": "error", "message": exc.message, "code": exc.code}))
        await resp.write(_ndjson({"type": "done"}))
        await resp.write_eof()
    except ConnectionError:
        log.info("client left the agent stream early")
    finally:
        await rest.aclose()
    return resp


def _date_param(request: web.Request, name: str, end: bool) -> int | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        if len(raw) == 10:  # a plain date: the whole day counts, endDate included
            d = date.fromisoformat(raw)
            start = datetime(d.year, d.month, d.day, tzinfo=UTC)
            moment = start + timedelta(days=1) if end else start
        else:
            moment = datetime.fromisoformat(raw)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise validation_error(name, "must be an ISO 8601 date") from None


async def agent_usage_summary(request: web.Request) -> web.Response:
    start = _date_param(request, "startDate", end=False)
    end = _date_param(request, "endDate", end=True)
    if start is not None and end is not None and end <= start:
        raise validation_error("endDate", "must be after startDate")
    cfg = services(request).config
    data = await tutor(request).org_usage(org(request).id, start, end, cfg.credit_rate)
    return ok(data)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/ai-tutor/chat", chat)
    r.add_post("/v1/ai-tutor/chat/stream", chat_stream)
    r.add_get("/v1/ai-tutor/summary/{roomId:[^/]*}", summary)
    r.add_get("/v1/ai-tutor/usage/{roomId:[^/]*}", usage)
    r.add_post("/v1/ai-tutor/transcription", set_transcription)
    r.add_post("/v1/room/{roomId:[^/]*}/topic", set_topic)
    r.add_get("/v1/room/{roomId:[^/]*}/transcript", transcript)
    r.add_post("/v1/ai-agent/chat/stream", agent_chat_stream)
    r.add_get("/v1/ai-agent/usage/summary", agent_usage_summary)

    async def attach_sfu(app: web.Application) -> None:
        from control.signaling import HUB

        svc_tutor = app[SERVICES].tutor
        if svc_tutor is not None and HUB in app:
            svc_tutor.sfu = app[HUB].sfu

    async def warm(app: web.Application) -> None:
        svc_tutor = app[SERVICES].tutor
        if svc_tutor is not None and svc_tutor.cfg.llm_backend != "fake":  # tests start it when they need it
            svc_tutor.warm()

    async def close(app: web.Application) -> None:
        svc_tutor = app[SERVICES].tutor
        if svc_tutor is not None:
            await svc_tutor.close()

    app.on_startup.append(attach_sfu)
    app.on_startup.append(warm)
    app.on_cleanup.append(close)
