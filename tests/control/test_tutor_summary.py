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


async def test_a_class_that_never_started_is_not_summarized_as_a_lesson(tapi: Api) -> None:
    """Issue 12: a room that never started got a summary of a lesson that never happened (from its title and
    description). With no transcript and no question, the summary says so, and the model is not asked."""
    await tapi.create_room("math-101", roomDescription="Quadratics for grade 9: the discriminant and the formula")
    await tapi.post("/v1/room/math-101/topic", {"topic": "The discriminant"})
    before = (await tapi.refresh_org()).credits
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200, body
    assert body["topQueries"] == []
    assert "has not started" in body["summary"] and "nothing to summarize" in body["summary"]
    for planned in ("Quadratic", "discriminant", "Calculus"):
        assert planned.lower() not in body["summary"].lower()
    backend = tapi.svc.tutor.backend
    assert isinstance(backend, FakeBackend) and backend.calls == []
    assert (await tapi.refresh_org()).credits == before  # nothing generated, nothing billed


async def test_questions_without_a_transcript_are_reported_without_inventing_a_lesson(tapi: Api) -> None:
    await tapi.create_room("math-101", roomDescription="Quadratics for grade 9")
    for text in ("Why complete the square?", "Why complete the square?", "What is a parabola?"):
        await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text=text))
    backend = tapi.svc.tutor.backend
    assert isinstance(backend, FakeBackend)
    calls = len(backend.calls)
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200, body
    summary = body["summary"]
    assert "No transcript was recorded" in summary and "not known" in summary
    assert '"Why complete the square?" (2 times)' in summary and '"What is a parabola?"' in summary
    assert "3 questions" in summary and "Quadratics" not in summary
    assert len(backend.calls) == calls  # the summary did not ask the model to imagine the lesson


def _summary_script(reply: str):  # type: ignore[no-untyped-def]
    def script(messages):  # type: ignore[no-untyped-def]
        return reply if "summary of a class" in messages[0]["content"] else "An answer."
    return script


async def test_summary_prompt_holds_only_the_record_and_unsupported_sentences_are_dropped(tapi: Api) -> None:
    await tapi.create_room("math-101", roomDescription="Quadratics for grade 9")
    await tapi.post("/v1/room/math-101/topic", {"topic": "The discriminant"})
    room = await tapi.room("math-101")
    now = tapi.clock.now_ms()
    await TutorStore(tapi.svc.store).add_segment(
        room.sid, "teacher-1", "Today: completing the square. We add and subtract the same number.", now, now)
    assert tapi.svc.tutor is not None
    tapi.svc.tutor.backend = FakeBackend(script=_summary_script(
        "The teacher explained completing the square, adding and subtracting the same number. "
        "Students then practised the Pythagorean theorem and its history in ancient Greece. "
        "Students asked why we complete the square."))
    await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text="Why complete the square?"))
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200, body
    backend = tapi.svc.tutor.backend
    prompt = backend.calls[-1][0]["content"]
    assert "completing the square" in prompt and "Why complete the square?" in prompt
    # What was planned is not evidence of what happened: title, description and topic stay out of the prompt.
    for planned in ("Calculus I", "Quadratics for grade 9", "The discriminant"):
        assert planned not in prompt
    assert "Use only the transcript and the students' questions" in prompt
    assert body["summary"] == ("The teacher explained completing the square, adding and subtracting the same "
                               "number. Students asked why we complete the square.")


async def test_a_summary_with_nothing_supported_quotes_the_transcript(tapi: Api) -> None:
    await tapi.create_room("math-101")
    room = await tapi.room("math-101")
    now = tapi.clock.now_ms()
    await TutorStore(tapi.svc.store).add_segment(room.sid, "teacher-1", "Today: completing the square.", now, now)
    assert tapi.svc.tutor is not None
    tapi.svc.tutor.backend = FakeBackend(script=_summary_script(
        "This lesson explored photosynthesis in tropical rainforests and the chemistry of chlorophyll."))
    status, body = await tapi.get("/v1/ai-tutor/summary/math-101")
    assert status == 200, body
    assert body["summary"] == 'The teacher said: "Today: completing the square."'
