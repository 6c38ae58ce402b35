"""The class summary: topQueries group paraphrases with real MiniLM embeddings and keep unrelated ones apart."""

from __future__ import annotations

from control.store.tutor import TutorStore
from control.tutor.backends import FakeBackend
from tests.conftest import Api
from tests.control.tutor_fixtures import chat_body

PARAPHRASES = [
    "What is a quadratic equation?",
    "Can you explain what a quadratic equation is?",
    "what's a quadratic equation",
    "What is a quadratic equation?",
]
UNRELATED = ["How do plants make their food?", "When is the homework due?"]


async def test_top_queries_group_paraphrases_and_separate_unrelated(tapi: Api) -> None:
    await tapi.create_room("math-101")
    for i, q in enumerate([PARAPHRASES[0], UNRELATED[0], *PARAPHRASES[1:], UNRELATED[1]]):
        status, _ = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text=q, studentUid=f"s{i}"))
        assert status == 200
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200, body
    assert body["success"] is True and body["summary"]
    top = body["topQueries"]
    assert top[0]["frequency"] == 4
    assert top[0]["question"] == "What is a quadratic equation?"  # the most common wording
    assert "What is a quadratic equation?" in top[0]["answer"]  # the answer given to it
    rest = sorted((q["question"], q["frequency"]) for q in top[1:])
    assert rest == sorted((q, 1) for q in UNRELATED)


async def test_summary_is_written_from_transcript_and_questions(tapi: Api) -> None:
    await tapi.create_room("math-101")
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200 and body["topQueries"] == [] and "Nothing to summarize" in body["summary"]
    room = await tapi.room("math-101")
    now = tapi.clock.now_ms()
    await TutorStore(tapi.svc.store).add_segment(room.sid, "teacher-1", "Today: completing the square.", now, now)
    await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text="Why complete the square?"))
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200
    backend = tapi.svc.tutor.backend
    assert isinstance(backend, FakeBackend)
    prompt = backend.calls[-1][0]["content"]
    assert "completing the square" in prompt and "Why complete the square?" in prompt
    assert body["summary"].startswith("Here is an answer about: Summarize this class")
