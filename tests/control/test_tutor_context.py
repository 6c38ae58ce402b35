"""The prompt builder is a pure function: everything in context is there, and the oldest goes first."""

from __future__ import annotations

from control.tutor.context import ClassContext, build_messages, estimate_tokens, system_prompt


def _ctx(**kw) -> ClassContext:  # type: ignore[no-untyped-def]
    base = dict(title="Algebra", description="Grade 9", topic="Quadratics",
                transcript=[f"line {i} about roots" for i in range(200)],
                questions=[f"question number {i}?" for i in range(100)])
    return ClassContext(**{**base, **kw})


def test_every_part_of_the_context_is_in_the_prompt() -> None:
    ctx = ClassContext(title="Algebra", description="Grade 9 maths", topic="Quadratics",
                       transcript=["We factor x squared minus one."], questions=["What is a root?"])
    messages = build_messages(ctx, "Why factor?", 1000)
    system = messages[0]["content"]
    for part in ("Algebra", "Grade 9 maths", "Current topic: Quadratics", "We factor x squared minus one.",
                 "- What is a root?"):
        assert part in system
    assert messages[1] == {"role": "user", "content": "Why factor?"}


def test_budget_drops_the_oldest_first() -> None:
    prompt = system_prompt(_ctx(), 300)
    assert estimate_tokens(prompt) <= 300
    assert "line 199 about roots" in prompt and "line 0 about roots" not in prompt
    assert "question number 99?" in prompt and "question number 0?" not in prompt
    kept = [i for i in range(200) if f"line {i} about roots\n" in prompt + "\n"]
    assert kept == list(range(kept[0], 200))  # a contiguous run of the newest lines


def test_fixed_parts_survive_a_tiny_budget() -> None:
    prompt = system_prompt(_ctx(), 10)
    assert "Algebra" in prompt and "Quadratics" in prompt
    assert "line" not in prompt and "question number" not in prompt


def test_a_bigger_budget_keeps_more() -> None:
    small, big = system_prompt(_ctx(), 300), system_prompt(_ctx(), 1200)
    assert big.count("about roots") > small.count("about roots")
    assert big.count("question number") >= small.count("question number")


def test_no_topic_and_long_description() -> None:
    prompt = system_prompt(_ctx(topic=None, description="x" * 5000), 2000)
    assert "not set by the teacher" in prompt
    assert "x" * 601 not in prompt


def test_images_become_openai_image_parts() -> None:
    messages = build_messages(_ctx(), "What is this?", 500, image=("image/png", "AAAA"))
    assert messages[1]["content"][1]["image_url"]["url"] == "data:image/png;base64,AAAA"
