"""The tutor's prompt: what is happening in the class, fitted into a token budget. Pure functions only.

Every prompt carries the room's title and description, the teacher's topic, the last minutes of the live
transcript and the questions already asked. When they do not all fit, the oldest transcript lines and questions
go first: what the teacher said a minute ago matters more than what they said at the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INSTRUCTIONS = (
    "You are the AI tutor of a live class. Answer the student's question clearly and briefly, in a few sentences. "
    "When the class context below covers the question, base the answer on what the teacher said. When you do not "
    "know the answer, say you are not sure and suggest asking the teacher; never invent facts."
)
MAX_DESCRIPTION_CHARS = 600


def estimate_tokens(text: str) -> int:
    """About four characters per token for English: good enough to budget a prompt, never used for billing
    when the backend reports its own counts."""
    return max(1, (len(text) + 3) // 4) if text else 0


@dataclass(frozen=True)
class ClassContext:
    title: str
    description: str | None = None
    topic: str | None = None
    transcript: list[str] = field(default_factory=list)  # oldest first, already limited to the recent window
    questions: list[str] = field(default_factory=list)  # questions asked earlier in the session, oldest first


def _newest_that_fit(items: list[str], budget: int) -> tuple[list[str], int]:
    """The newest items whose estimated tokens fit in `budget`, returned oldest first, and the tokens used."""
    kept: list[str] = []
    used = 0
    for item in reversed(items):
        cost = estimate_tokens(item) + 1
        if used + cost > budget:
            break
        kept.append(item)
        used += cost
    kept.reverse()
    return kept, used


def system_prompt(ctx: ClassContext, budget_tokens: int, notes: list[str] | None = None) -> str:
    """Instructions, class context within `budget_tokens` (estimated), and `notes` (verified results, the
    teacher's words that cover the question); the fixed parts and the notes are always there."""
    head = [INSTRUCTIONS, "", f"Class: {ctx.title}"]
    if ctx.description:
        desc = ctx.description
        if len(desc) > MAX_DESCRIPTION_CHARS:
            desc = desc[:MAX_DESCRIPTION_CHARS].rstrip() + "..."
        head.append(f"Description: {desc}")
    head.append(f"Current topic: {ctx.topic}" if ctx.topic else "Current topic: not set by the teacher")
    fixed = "\n".join(head)
    tail = "\n".join(notes or [])
    remaining = max(0, budget_tokens - estimate_tokens(fixed) - estimate_tokens(tail) - 16)  # 16: the headings
    # Questions get at most a third; the transcript gets the rest (and whatever the questions leave unused).
    questions, q_used = _newest_that_fit(ctx.questions, remaining // 3)
    transcript, _ = _newest_that_fit(ctx.transcript, remaining - q_used)
    parts = [fixed]
    if transcript:
        parts.append("What the teacher said recently:\n" + "\n".join(transcript))
    if questions:
        parts.append("Questions students already asked:\n" + "\n".join(f"- {q}" for q in questions))
    if tail:
        parts.append(tail)
    return "\n\n".join(parts)


def build_messages(ctx: ClassContext, question: str, budget_tokens: int,
                   image: tuple[str, str] | None = None, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages. `image` is (mime type, base64) and becomes an OpenAI-style image part."""
    budget = max(0, budget_tokens - estimate_tokens(question))
    user: Any = question
    if image is not None:
        mime, data = image
        user = [{"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}]
    return [{"role": "system", "content": system_prompt(ctx, budget, notes)}, {"role": "user", "content": user}]


def general_messages(question: str, image: tuple[str, str] | None = None,
                     notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The general assistant (ai-agent) has no class: just a short instruction (and verified results)."""
    ctx_free = "\n\n".join(["You are a helpful assistant. Answer clearly and briefly.", *(notes or [])])
    msgs = build_messages(ClassContext(title=""), question, 10_000, image)
    msgs[0] = {"role": "system", "content": ctx_free}
    return msgs
