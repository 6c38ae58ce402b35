"""Exact mathematics in the tutor: the safe parser, the question reader, the bounded SymPy process, and their wiring
through the REST endpoints with the fake backend (the verified result reaches the prompt and opens the answer, a
contradicting model is corrected, a solver timeout or an unreadable expression falls back to the model, flagged)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from control.tutor.cas import Cas, Fact, Failure
from control.tutor.checking import contradiction
from control.tutor.mathparse import MathSyntaxError, parse
from control.tutor.problems import Problem, Unreadable, read
from tests.conftest import Api
from tests.control.tutor_fixtures import chat_body

HARD_INTEGRAL = "What is the integral of exp(x^2) sin(x)^3 / (x^5 + x + 1)?"


@pytest.fixture(scope="module")
def cas() -> Cas:
    solver = Cas()
    yield solver  # type: ignore[misc]
    solver.close()


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch /tmp/pwned')",
    "x.__class__", "lambda: 1", "open('/etc/passwd')", "2 + [1]", "sqrt(", "1 +* 2", "9^9^9", "2^100000",
    "x^x", "100000!", "(" * 40 + "1" + ")" * 40, "1+" * 60 + "1", "9" * 40,
])
def test_parser_refuses_code_and_unbounded_expressions(text: str) -> None:
    with pytest.raises(MathSyntaxError):
        parse(text)


def test_reader_finds_the_problem_in_school_wording() -> None:
    cases = {
        "What is 7 times 8?": ("evaluate", "7 × 8"),
        "what's 15% of 200": ("evaluate", "15% of 200"),
        "What are the roots of x² − 5x + 6 = 0?": ("solve", "x^2 - 5x + 6 = 0"),
        "Solve x + y = 10 and x - y = 2": ("solve", "x + y = 10 and x - y = 2"),
        "What is the derivative of x^3 + 2x?": ("diff", "the derivative of x^3 + 2x with respect to x"),
        "Integrate cos(x) from 0 to pi/2": ("integrate", "the integral of cos(x) from 0 to π/2"),
        "Simplify (x^2 - 1)/(x - 1)": ("simplify", "(x^2 - 1)/(x - 1)"),
        "How many centimetres are in 2.5 metres?": ("convert", "2.5 m in cm"),
    }
    for question, (kind, label) in cases.items():
        problem = read(question)
        assert isinstance(problem, Problem), question
        assert (problem.kind, problem.label) == (kind, label), question
    assert read("What is photosynthesis?") is None
    assert read("Who wrote Hamlet in 1600?") is None
    assert isinstance(read("What is 9^9^9?"), Unreadable)
    # 'this equation' is the one on the class's board (topic or transcript)
    problem = read("What does this equation mean?", ["We solve x^2 - 9 = 0 today."])
    assert isinstance(problem, Problem) and problem.label == "x^2 - 9 = 0"


def test_solver_gives_exact_results(cas: Cas) -> None:
    expected = {
        "What is 7 times 8?": "7 × 8 = 56",
        "What is the square root of 81?": "the square root of 81 = 9",
        "What are the roots of x^2 - 5x + 6 = 0?": "x^2 - 5x + 6 = 0 has the solutions x = 2 and x = 3",
        "What is 15% of 200?": "15% of 200 = 30",
        "Solve x + y = 10 and x - y = 2": "x + y = 10 and x - y = 2 has the solution x = 6 and y = 4",
        "What is 3/4 + 1/6?": "3/4 + 1/6 = 11/12 = 0.9167",
        "Convert 72 km/h to m/s": "72 km/h = 20 m/s",
        "What is the derivative of x^3 + 2x?": "the derivative of x^3 + 2x with respect to x is 3x^2 + 2",
        "Integrate x^2 from 0 to 3": "the integral of x^2 from 0 to 3 is 9",
        "Factor x^2 + 5x + 6": "x^2 + 5x + 6 factors as (x + 2)·(x + 3)",
    }
    for question, statement in expected.items():
        problem = read(question)
        assert isinstance(problem, Problem)
        fact = cas.solve_blocking(problem)
        assert isinstance(fact, Fact) and fact.statement == statement, (question, fact)
    fact = cas.solve_blocking(read("What is 1/0?"))  # type: ignore[arg-type]
    assert isinstance(fact, Failure) and fact.kind == "error"


def test_solver_is_bounded_in_time_and_memory() -> None:
    solver = Cas(time_limit_s=0.5, memory_mb=512)
    try:
        assert isinstance(solver.solve_blocking(read("What is 1 + 1?")), Fact)  # started: SymPy imported
        problem = read(HARD_INTEGRAL)
        assert isinstance(problem, Problem)
        started = time.monotonic()
        result = solver.solve_blocking(problem)
        assert isinstance(result, Failure) and result.kind == "timeout"
        assert time.monotonic() - started < 3.0  # killed at the limit (0.5 s), not when SymPy gives up
        # The process was replaced: the next question is answered.
        fact = solver.solve_blocking(read("What is 6 times 7?"))  # type: ignore[arg-type]
        assert isinstance(fact, Fact) and fact.values == ["42"]
        assert solver._proc is not None
        limits = Path(f"/proc/{solver._proc.pid}/limits").read_text()
        line = next(s for s in limits.splitlines() if s.startswith("Max address space"))
        assert line.split()[3] == str(512 << 20)
        # A tree that skipped the parser's checks (2^(10^11)): the child's limits end it, nothing else suffers.
        bomb = Problem("evaluate", [["pow", ["num", "2"], ["num", "100000000000"]]], "2^100000000000")
        started = time.monotonic()
        result = solver.solve_blocking(bomb)
        assert isinstance(result, Failure) and time.monotonic() - started < 3.0
        fact = solver.solve_blocking(read("What is 6 times 7?"))  # type: ignore[arg-type]
        assert isinstance(fact, Fact) and fact.values == ["42"]
    finally:
        solver.close()


def test_contradictions_are_found_and_correct_working_is_not_one() -> None:
    fact = Fact("7 × 8 = 56", ["56"])
    q = "What is 7 times 8?"
    assert contradiction("7 times 8 is 54.", fact, q) == "54"
    assert contradiction("So 7 × 8 = 54.", fact, q) == "So 7 * 8 = 54"  # a false calculation, whatever the fact
    assert contradiction("First 12 × 7 = 32 - 12, then add.", None, "?") == "First 12 * 7 = 32 - 12"
    assert contradiction("Solve x + x + 1 = 0 for x.", None, "?") is None
    assert contradiction("7 × 8 = 56, because 7 + 7 = 14 and 14 × 4 = 56.", fact, q) is None
    assert contradiction("Multiply 7 by 8.", fact, q) is None
    assert contradiction("1,250 + 3,785 = 5,035.", Fact("1250 + 3785 = 5035", ["5035"]), "1,250 + 3,785?") is None
    roots = Fact("x^2 - 5x + 6 = 0 has the solutions x = 2 and x = 3", ["2", "3"])
    assert contradiction("The roots are -1 and -2.", roots, "roots of x^2 - 5x + 6 = 0?") == "-1"
    assert contradiction("So x = 2 or x = 3.", roots, "roots of x^2 - 5x + 6 = 0?") is None
    roots = Fact(roots.statement, roots.values, solutions=[{"x": "2"}, {"x": "3"}])
    # A number given to another letter must be one of the problem's ("b = 7" for x^2 - 5x + 6 is withheld; the
    # check cannot tell a coefficient from a result, so a right "a = 1" is withheld too: an explanation is lost,
    # never a right result).
    assert contradiction("In ax^2 + bx + c = 0, b = 7.", roots, "roots of x^2 - 5x + 6 = 0?") == "7"
    assert contradiction("So x = 4.", roots, "roots of x^2 - 5x + 6 = 0?") is not None
    # The working is checked too: an equation in the unknown must hold for a verified solution...
    linear = Fact("3x - 7 = 2x + 5 has the solution x = 12", ["12"], solutions=[{"x": "12"}])
    q = "Solve 3x - 7 = 2x + 5"
    assert contradiction("Adding 7 to both sides gives 3x = 2x + 12.", linear, q) is None
    assert contradiction("Adding 7 to both sides gives 3x = 2x + 5.", linear, q) is not None
    assert contradiction("So 3x = 5.", linear, q) is not None
    squares = Fact("x^2 = 49 has the solutions x = -7 and x = 7", ["-7", "7"], solutions=[{"x": "-7"}, {"x": "7"}])
    assert contradiction("So x = 7 or x = -7, since 7 × 7 = 49.", squares, "Solve x^2 = 49") is None
    # ... and after a verified identity, an equation in its variable must be one.
    factor = Fact("x^2 + 5x + 6 factors as (x + 2)·(x + 3)", ["(x + 2)·(x + 3)"], False, identity_in="x")
    assert contradiction("x^2 + 5x + 6 = (x + 2)(x + 3).", factor, "Factor x^2 + 5x + 6") is None
    assert contradiction("x^2 + 5x + 6 = (x + 2)(x + 3) = 6x + 12.", factor, "Factor x^2 + 5x + 6") is not None
    # ... and an amount in the target unit of a conversion must be the converted one.
    hours = Fact("2 h = 7200 s", ["7200"], unit_words=["second", "sec", "s"])
    q = "How many seconds are in 2 hours?"
    assert contradiction("2 hours is equal to 2 * 60 = 120 seconds.", hours, q) == "= 120 seconds"
    assert contradiction("An hour has 3600 s, so 2 hours have 7200 seconds.", hours, q) is None
    assert contradiction("2 hours have 2 × 3600 = 7200 seconds.", hours, q) is None
    sqrt2 = Fact("the square root of 2 = sqrt(2) ≈ 1.4142", ["1.4142", "sqrt(2)"])
    assert contradiction("It is about 1.41.", sqrt2, "square root of 2") is None
    assert contradiction("It is about 1.5.", sqrt2, "square root of 2") == "1.5"


# ---- through the API, with the fake backend --------------------------------------------------------------------


def _script(reply: str):  # type: ignore[no-untyped-def]
    return lambda messages: reply


async def _both(tapi: Api, text: str) -> tuple[str, str]:
    """The non-streamed answer and the streamed one, for the same question."""
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text=text))
    assert status == 200, body
    resp = await tapi.client.post("/v1/ai-tutor/chat/stream", json=chat_body(tapi, text=text),
                                  headers={"VF-ORG-ID": tapi.org.id})
    frames = [f[len("data: "):] for f in (await resp.text()).split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    streamed = "".join(json.loads(f).get("text", "") for f in frames[:-1])
    return body["text"], streamed.strip()


async def test_the_verified_result_reaches_the_prompt_and_opens_the_answer(tapi: Api) -> None:
    await tapi.create_room("math-101")
    plain, streamed = await _both(tapi, "What is 7 times 8?")
    assert plain == streamed
    assert plain.startswith("7 × 8 = 56 (checked with computer algebra).")
    system = tapi.svc.tutor.backend.calls[-1][0]["content"]  # type: ignore[union-attr]
    assert "Verified result" in system and "7 × 8 = 56" in system


async def test_a_model_that_contradicts_the_result_is_corrected(tapi: Api) -> None:
    from control.tutor.backends import FakeBackend

    await tapi.create_room("math-101")
    assert tapi.svc.tutor is not None
    tapi.svc.tutor.backend = FakeBackend(script=_script(
        "Multiply the two numbers. 7 times 8 is 54. So the answer is 54."))
    plain, streamed = await _both(tapi, "What is 7 times 8?")
    assert plain == streamed
    assert "54" not in plain  # the wrong sentence never reached the student, in either endpoint
    assert plain.startswith("7 × 8 = 56 (checked with computer algebra). Multiply the two numbers.")
    assert plain.endswith("(Corrected: the rest of the model's explanation stated a number that does not agree with "
                          "the verified result, so it was left out. The verified result is: 7 × 8 = 56.)")
    status, usage = await tapi.get("/v1/ai-tutor/usage/math-101")
    assert usage["requests"] == 2 and usage["usage"]["outputTokens"] > 0  # the model's work is still billed


async def test_a_solver_timeout_falls_back_to_the_model_flagged_unverified(tapi: Api) -> None:
    await tapi.create_room("math-101")
    assert tapi.svc.tutor is not None
    tapi.svc.tutor.cas.close()
    tapi.svc.tutor.cas = Cas(time_limit_s=0.5)
    started = time.monotonic()
    plain, streamed = await _both(tapi, HARD_INTEGRAL)
    assert time.monotonic() - started < 20  # two requests: the limit each, plus a restart of SymPy (slow under load)
    assert plain == streamed
    assert plain.startswith("Here is an answer about:")  # the model answered alone
    assert plain.endswith("(Not verified: the calculation took too long, so please check this answer with your "
                          "teacher.)")
    assert tapi.svc.tutor.cas.timeouts == 2
    plain, _ = await _both(tapi, "What is 6 times 7?")  # and the solver is back for the next question
    assert plain.startswith("6 × 7 = 42 (checked with computer algebra).")


@pytest.mark.parametrize("question", [
    "What is 9^9^9?", "What is 100000!?", "What is 2^99999999 - 1?", "Solve " + "x + " * 70 + "1 = 0",
    "What is __import__('os').system('id') + 1?",
])
async def test_hostile_or_unreadable_mathematics_is_answered_unverified(tapi: Api, question: str) -> None:
    await tapi.create_room("math-101")
    started = time.monotonic()
    plain, streamed = await _both(tapi, question)
    assert time.monotonic() - started < 5
    assert plain == streamed
    assert "checked with computer algebra" not in plain
    if "__import__" not in question:  # code is not mathematics: the model answers it, without a note
        assert "(Not verified:" in plain


async def test_the_general_assistant_uses_the_solver_too(tapi: Api) -> None:
    resp = await tapi.client.post("/v1/ai-agent/chat/stream", headers={"VF-ORG-ID": tapi.org.id},
                                  json={"chatId": "chat-1", "message": "What is the square root of 81?"})
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    text = "".join(line.get("text", "") for line in lines if line["type"] == "text")
    assert text.startswith("The square root of 81 = 9 (checked with computer algebra).")


# ---- grounding and honesty --------------------------------------------------------------------------------------


async def test_grounded_answers_quote_the_teacher_and_class_questions_nothing_covers_are_honest(tapi: Api) -> None:
    from control.store.tutor import TutorStore

    await tapi.create_room("math-101")
    room = await tapi.room("math-101")
    now = tapi.clock.now_ms()
    await TutorStore(tapi.svc.store).add_segment(
        room.sid, "teacher-1", "Good morning. The homework on page 42 is due on Friday.", now - 2000, now - 1000)
    plain, streamed = await _both(tapi, "When is the homework due?")
    assert plain == streamed
    assert plain.startswith('As your teacher said: "The homework on page 42 is due on Friday."')
    system = tapi.svc.tutor.backend.calls[-1][0]["content"]  # type: ignore[union-attr]
    assert 'Your teacher said in class: "The homework on page 42 is due on Friday."' in system
    tapi.svc.tutor.backend.script = _script(  # type: ignore[union-attr]
        "It is due on Friday. The homework is not due this week.")
    plain, streamed = await _both(tapi, "When is the homework due?")
    assert plain == streamed == ('As your teacher said: "The homework on page 42 is due on Friday." '
                                 "It is due on Friday.")  # the sentence that negates the teacher is left out
    calls = len(tapi.svc.tutor.backend.calls)  # type: ignore[union-attr]
    before = (await tapi.refresh_org()).credits
    plain, streamed = await _both(tapi, "What did the teacher say about the test?")
    assert plain == streamed == ("I'm not sure: nothing said in this class so far covers that, and I would only be "
                                 "guessing. Please ask your teacher.")
    assert len(tapi.svc.tutor.backend.calls) == calls  # type: ignore[union-attr]  # no model was asked
    assert (await tapi.refresh_org()).credits == before  # and nothing was billed


async def test_a_guessing_model_says_it_is_not_sure(tapi: Api) -> None:
    from control.tutor.backends import FakeBackend

    await tapi.create_room("math-101")
    assert tapi.svc.tutor is not None
    tapi.svc.tutor.backend = FakeBackend(script=_script("The first president was John F. Kennedy. He was great."),
                                         logprob=-1.2)
    plain, streamed = await _both(tapi, "Who was the first president of the United States?")
    assert plain == streamed
    assert plain.startswith("I'm not sure about this") and "ask your teacher" in plain and "Kennedy" not in plain
    tapi.svc.tutor.backend = FakeBackend(script=_script("The first president was George Washington."),
                                         logprob=-0.1)
    plain, streamed = await _both(tapi, "Who was the first president of the United States?")
    assert plain == streamed == "The first president was George Washington."


def test_without_sympy_the_tutor_answers_unverified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without the AI extra (no SymPy): the solver fails to start once, says so, and is not tried
    again for every question."""
    (tmp_path / "sympy").mkdir()
    (tmp_path / "sympy" / "__init__.py").write_text("raise ImportError('sympy is not installed')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}")  # shadows the installed SymPy in the child
    solver = Cas()
    try:
        problem = read("What is 7 times 8?")
        assert isinstance(problem, Problem)
        result = solver.solve_blocking(problem)
        assert isinstance(result, Failure) and result.kind == "unavailable" and "SymPy" in result.detail
        started = time.monotonic()
        result = solver.solve_blocking(problem)
        assert isinstance(result, Failure) and result.kind == "unavailable"
        assert time.monotonic() - started < 0.1  # no second process start
    finally:
        solver.close()


def test_the_reader_takes_any_text_without_raising() -> None:
    """Seconds of random questions from a mathematical alphabet (the long run belongs to a fuzz target): the
    reader returns a problem, 'unreadable' or nothing, never raises, and every tree it returns is bounded."""
    import random

    from control.tutor.mathparse import check_bounds

    rng = random.Random(22)
    alphabet = [*"0123456789xyz+-*/^()=!.,% ", "sqrt", "sin", "what is ", "solve ", " of ", "derivative ",
                "integral ", "km", " to ", "m", "percent", "9^9^9", "|"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        result = read(text, ["x^2 - 1 = 0"])
        assert result is None or isinstance(result, Problem | Unreadable)
        if isinstance(result, Problem):
            for tree in result.exprs:
                for node in (tree if result.kind == "solve" else [tree]):
                    check_bounds(node)


def test_closing_while_the_solver_starts_ends_the_start(caplog: pytest.LogCaptureFixture) -> None:
    """A server stopped right after it started (warm() begins SymPy's import, about a second) does not wait for
    the import to finish: close() kills the starting child, and the start gives up without a warning."""
    solver = Cas()
    starting = threading.Thread(target=solver._ensure_quietly)
    starting.start()
    deadline = time.monotonic() + 10
    while solver._proc is None and time.monotonic() < deadline:  # the child exists, SymPy not imported yet
        time.sleep(0.005)
    child = solver._proc
    assert child is not None
    solver.close()
    starting.join(5)
    assert not starting.is_alive()
    assert child.poll() == -signal.SIGKILL
    assert solver._retry_at > 0  # the start ended without the child's "ready": killed amid its import
    assert isinstance(solver.solve_blocking(read("What is 1 + 1?")), Failure)  # closed stays closed
    assert solver._proc is None
    assert "unavailable" not in caplog.text
