"""AI tutor endpoints with the fake backend: seed 003's shapes, SSE framing, context, billing, every error."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from control.clock import FakeClock
from control.store.tutor import TutorStore
from control.tutor.backends import BackendError, FakeBackend
from tests.conftest import Api
from tests.control.tutor_fixtures import chat_body, make_api, replace_tutor, tutor_config


def _frames(raw: str) -> list[str]:
    assert raw.endswith("\n\n")
    frames = raw.split("\n\n")[:-1]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[len("data: "):] for f in frames]


async def test_chat_answers_in_the_seed_shape_and_counts_usage(tapi: Api) -> None:
    await tapi.create_room("math-101")
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi))
    assert status == 200, body
    assert body["success"] is True
    assert "What does this equation mean?" in body["text"]
    assert body["usage"]["inputTokens"] > 0 and body["usage"]["outputTokens"] > 0
    assert body["requestModality"] == "text" and body["responseModality"] == "text"
    assert "audio" not in body
    status, usage = await tapi.get("/v1/ai-tutor/usage/math-101")
    assert status == 200
    assert usage["success"] is True
    assert usage["usage"] == body["usage"]  # the room's total is this one request


async def test_stream_uses_the_seed_framing_and_headers(tapi: Api) -> None:
    await tapi.create_room("math-101")
    resp = await tapi.client.post("/v1/ai-tutor/chat/stream", json=chat_body(tapi),
                                  headers={"VF-ORG-ID": tapi.org.id})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["Connection"] == "keep-alive"
    frames = _frames(await resp.text())
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    texts, final = chunks[:-1], chunks[-1]
    assert len(texts) > 3
    assert all(set(c) == {"text", "usage"} and c["usage"] is None for c in texts)
    assert frames[0].startswith('{"text":') and frames[0].endswith(',"usage":null}')  # compact, as in the seed
    assert "".join(c["text"] for c in texts).startswith("Here is an answer about:")
    assert set(final) == {"usage"} and final["usage"]["outputTokens"] == len(texts)


async def test_room_id_in_the_organization_prefixed_form(tapi: Api) -> None:
    await tapi.create_room("class-456")
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, f"{tapi.org.id}_class-456"))
    assert status == 200, body
    status, usage = await tapi.get(f"/v1/ai-tutor/usage/{tapi.org.id}_class-456")
    assert status == 200 and usage["usage"] == body["usage"]


async def test_prompt_carries_room_topic_transcript_and_earlier_questions(tapi: Api) -> None:
    await tapi.create_room("math-101", roomDescription="Quadratics for grade 9")
    status, _ = await tapi.post("/v1/room/math-101/topic", {"topic": "The discriminant"})
    assert status == 200
    room = await tapi.room("math-101")
    now = tapi.clock.now_ms()
    db = TutorStore(tapi.svc.store)
    await db.add_segment(room.sid, "teacher-1", "Long ago we talked about fractions.", now - 900_000, now - 899_000)
    await db.add_segment(room.sid, "teacher-1", "b squared minus four a c tells how many roots.", now - 5000, now)
    await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text="Why do we square b?"))
    await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text="What if it is negative?"))
    backend = tapi.svc.tutor.backend
    assert isinstance(backend, FakeBackend)
    system = backend.calls[-1][0]["content"]
    assert "Calculus I - Morning Session" in system and "Quadratics for grade 9" in system
    assert "Current topic: The discriminant" in system
    assert "b squared minus four a c" in system
    assert "fractions" not in system  # older than the transcript window
    assert "Why do we square b?" in system  # asked before
    assert backend.calls[-1][1]["content"] == "What if it is negative?"


async def test_tokens_are_billed_as_credits(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    api = await make_api(aiohttp_client, replace_tutor(tutor_config(tmp_path), tokens_per_credit=10), clock)
    await api.create_room("math-101")
    before = (await api.refresh_org()).credits
    status, body = await api.post("/v1/ai-tutor/chat", chat_body(api))
    assert status == 200
    total = body["usage"]["inputTokens"] + body["usage"]["outputTokens"]
    after = (await api.refresh_org()).credits
    assert before - after == -(-total // 10)


async def test_no_credits_is_402_before_any_inference(aiohttp_client: Any, tmp_path: Path,
                                                      clock: FakeClock) -> None:
    api = await make_api(aiohttp_client, tutor_config(tmp_path), clock)
    await api.create_room("math-101")
    await api.svc.store.add_credits(api.org.id, -api.org.credits, "test", clock.now_ms())
    for path in ("/v1/ai-tutor/chat", "/v1/ai-tutor/chat/stream"):
        status, body = await api.post(path, chat_body(api))
        assert status == 402, body
        assert body["success"] is False and body["message"] == "Insufficient credits"
    backend = api.svc.tutor.backend
    assert isinstance(backend, FakeBackend) and backend.calls == []


async def test_missing_fields_are_400(tapi: Api) -> None:
    await tapi.create_room("math-101")
    for field in ("roomId", "studentUid", "organizationId"):
        body = chat_body(tapi)
        del body[field]
        status, reply = await tapi.post("/v1/ai-tutor/chat", body)
        assert status == 400, reply
        assert field in reply["message"]
    status, reply = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text=None))
    assert status == 400 and "text or audio" in reply["message"]
    status, reply = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, responseModality="video"))
    assert status == 400 and "responseModality" in reply["message"]
    resp = await tapi.client.post("/v1/ai-tutor/chat", data="{not json", headers={"VF-ORG-ID": tapi.org.id})
    assert resp.status == 400


async def test_unauthorized_is_401(tapi: Api) -> None:
    await tapi.create_room("math-101")
    resp = await tapi.client.post("/v1/ai-tutor/chat", json=chat_body(tapi))  # no header at all
    assert resp.status == 401
    resp = await tapi.client.post("/v1/ai-tutor/chat", json=chat_body(tapi), headers={"VF-ORG-ID": "nope"})
    assert resp.status == 401
    status, _ = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, organizationId="another-org"))
    assert status == 401
    resp = await tapi.client.get("/v1/ai-tutor/usage/math-101", headers={"Authorization": "Bearer not.a.jwt"})
    assert resp.status == 401


async def test_unknown_room_is_404(tapi: Api) -> None:
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, "no-such-room"))
    assert status == 404 and body["message"] == "Room not found"
    for path in ("/v1/ai-tutor/summary/no-such-room", "/v1/ai-tutor/usage/no-such-room",
                 "/v1/room/no-such-room/transcript"):
        status, _ = await tapi.get(path)
        assert status == 404, path


async def test_backend_down_is_500(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = replace_tutor(tutor_config(tmp_path), llm_backend="openai", llm_url=f"http://127.0.0.1:{port}/v1")
    api = await make_api(aiohttp_client, config, clock)
    await api.create_room("math-101")
    for path in ("/v1/ai-tutor/chat", "/v1/ai-tutor/chat/stream"):
        status, body = await api.post(path, chat_body(api))
        assert status == 500, body
        assert body["success"] is False
    status, usage = await api.get("/v1/ai-tutor/usage/math-101")
    assert usage["usage"] == {"inputTokens": 0, "outputTokens": 0}  # nothing billed for a failure


async def test_browser_calls_with_its_participant_token(tapi: Api) -> None:
    await tapi.create_room("math-101")
    token = (await tapi.join("math-101", "stu-1"))["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    resp = await tapi.client.post("/v1/ai-tutor/chat", json={"roomId": "math-101", "text": "What is a root?"},
                                  headers=bearer)
    body = await resp.json()
    assert resp.status == 200, body
    resp = await tapi.client.get("/v1/ai-tutor/usage/math-101", headers=bearer)
    usage = await resp.json()
    assert usage["student"]["studentUid"] == "stu-1"  # the uid came from the token
    assert usage["student"]["inputTokens"] == body["usage"]["inputTokens"]
    # The token does not speak for another student, another room, or the organization's settings.
    resp = await tapi.client.post("/v1/ai-tutor/chat", headers=bearer,
                                  json={"roomId": "math-101", "studentUid": "stu-2", "text": "hi"})
    assert resp.status == 403
    await tapi.create_room("other-room")
    resp = await tapi.client.post("/v1/ai-tutor/chat", headers=bearer, json={"roomId": "other-room", "text": "hi"})
    assert resp.status == 403
    resp = await tapi.client.post("/v1/ai-tutor/transcription", headers=bearer, json={"enabled": True})
    assert resp.status == 403
    # Bearer works only on the tutor paths: the rest of the API still needs VF-ORG-ID.
    resp = await tapi.client.get("/v1/billing/balance", headers=bearer)
    assert resp.status == 401


async def test_an_ended_class_refuses_its_tokens(tapi: Api) -> None:
    await tapi.create_room("math-101")
    token = (await tapi.join("math-101", "stu-1"))["token"]
    await tapi.delete("/v1/room/math-101")
    resp = await tapi.client.post("/v1/ai-tutor/chat", json={"roomId": "math-101", "text": "hello?"},
                                  headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 410
    for path in ("/v1/ai-tutor/chat", "/v1/ai-tutor/chat/stream"):  # the integrator's backend: the same
        status, body = await tapi.post(path, chat_body(tapi))
        assert (status, body["code"]) == (410, "ROOM_ENDED"), body
    status, body = await tapi.get("/v1/ai-tutor/usage/math-101")
    assert status == 200, body  # what happened stays readable


async def test_topic_rest_validation(tapi: Api) -> None:
    await tapi.create_room("math-101")
    status, body = await tapi.post("/v1/room/math-101/topic", {"topic": ""})
    assert status == 400
    status, body = await tapi.post("/v1/room/math-101/topic", {"topic": "Vertex form"})
    assert status == 200 and body["data"]["topic"] == "Vertex form"
    assert any(e.type == "topic_set" and e.data["topic"] == "Vertex form" for e in tapi.events)


async def test_general_assistant_streams_ndjson(tapi: Api) -> None:
    resp = await tapi.client.post("/v1/ai-agent/chat/stream", headers={"VF-ORG-ID": tapi.org.id},
                                  json={"chatId": "chat-1", "message": "Name a prime number"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert lines[-1] == {"type": "done"}
    assert lines[-2]["type"] == "usage" and lines[-2]["usage"]["outputTokens"] > 0
    assert all(line["type"] == "text" for line in lines[:-2])
    assert "Name a prime number" in "".join(line["text"] for line in lines[:-2])


async def test_images_are_refused_when_the_model_cannot_see(tapi: Api) -> None:
    body = {"chatId": "chat-1", "message": "What is in this picture?", "image": "iVBORw0KGgo=",
            "imageMimeType": "image/png"}
    status, reply = await tapi.post("/v1/ai-agent/chat/stream", body)
    assert status == 400 and "cannot read images" in reply["message"]
    status, reply = await tapi.post("/v1/ai-agent/chat/stream", {**body, "imageMimeType": None})
    assert status == 400 and "imageMimeType" in reply["message"]
    status, reply = await tapi.post("/v1/ai-agent/chat/stream", {"message": "hi"})
    assert status == 400 and "chatId" in reply["message"]


async def test_images_go_to_a_backend_that_takes_them(aiohttp_client: Any, tmp_path: Path,
                                                      clock: FakeClock) -> None:
    api = await make_api(aiohttp_client, replace_tutor(tutor_config(tmp_path), llm_images=True), clock)
    resp = await api.client.post("/v1/ai-agent/chat/stream", headers={"VF-ORG-ID": api.org.id}, json={
        "chatId": "c", "message": "Describe it", "image": "iVBORw0KGgo=", "imageMimeType": "image/png"})
    assert resp.status == 200
    backend = api.svc.tutor.backend
    assert isinstance(backend, FakeBackend)
    parts = backend.calls[-1][-1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


async def test_usage_summary_aggregates_tutor_and_agent(tapi: Api) -> None:
    await tapi.create_room("math-101")
    _, a = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi))
    _, b = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text="And the second root?"))
    resp = await tapi.client.post("/v1/ai-agent/chat/stream", headers={"VF-ORG-ID": tapi.org.id},
                                  json={"chatId": "chat-9", "message": "hello"})
    agent_usage = [json.loads(x) for x in (await resp.text()).splitlines()][-2]["usage"]
    status, body = await tapi.get("/v1/ai-agent/usage/summary?startDate=2024-01-15&endDate=2024-01-15")
    assert status == 200, body
    data = body["data"]
    tutor = data["breakdown"]["aiTutor"]
    assert tutor["interactions"] == 2
    assert tutor["inputTokens"] == a["usage"]["inputTokens"] + b["usage"]["inputTokens"]
    assert data["breakdown"]["aiAgent"]["sessions"] == 1
    assert data["breakdown"]["aiAgent"]["outputTokens"] == agent_usage["outputTokens"]
    assert data["summary"]["totalInputTokens"] == tutor["inputTokens"] + agent_usage["inputTokens"]
    assert data["summary"]["totalSessions"] == 3
    status, body = await tapi.get("/v1/ai-agent/usage/summary?startDate=2024-01-16")  # the day after: nothing
    assert body["data"]["summary"]["totalInputTokens"] == 0
    status, body = await tapi.get("/v1/ai-agent/usage/summary?startDate=yesterday")
    assert status == 400


class _FailsMidway(FakeBackend):
    """The fake backend, cut off after two pieces as a real endpoint can be."""

    async def stream(self, messages, max_tokens):  # type: ignore[no-untyped-def]
        count = 0
        async for item in super().stream(messages, max_tokens):
            if count == 2:
                raise BackendError("connection reset by the model server")
            count += 1
            yield item


async def test_a_backend_failing_mid_stream_ends_the_stream_cleanly(tapi: Api) -> None:
    await tapi.create_room("math-101")
    assert tapi.svc.tutor is not None
    tapi.svc.tutor.backend = _FailsMidway()
    resp = await tapi.client.post("/v1/ai-tutor/chat/stream", json=chat_body(tapi),
                                  headers={"VF-ORG-ID": tapi.org.id})
    assert resp.status == 200  # the status line went out with the first piece
    frames = _frames(await resp.text())
    chunks = [json.loads(f) for f in frames[:-1]]
    assert [c.get("text") for c in chunks[:2]] == ["Here", " is"]
    assert chunks[2]["code"] == "AI_BACKEND_ERROR" and chunks[2]["usage"] is None
    assert frames[-1] == "[DONE]"
    status, usage = await tapi.get("/v1/ai-tutor/usage/math-101")
    assert usage["usage"]["outputTokens"] > 0  # what was generated is billed (by estimate)


async def test_usage_reports_the_credits_each_request_was_billed(tapi: Api) -> None:
    """Issue 12: four requests billed 1 credit each were reported as 1 credit (rounded over the total)."""
    await tapi.create_room("math-101")
    before = (await tapi.refresh_org()).credits
    for i in range(4):
        status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text=f"Question number {i}?"))
        assert status == 200 and sum(body["usage"].values()) < 1000  # each well under one credit's tokens
    billed = before - (await tapi.refresh_org()).credits
    assert billed == 4
    status, usage = await tapi.get("/v1/ai-tutor/usage/math-101?studentUid=student-789")
    assert status == 200
    assert usage["requests"] == 4 and usage["credits"] == billed
    assert usage["student"]["requests"] == 4 and usage["student"]["credits"] == 4
