"""What the class already said about a question: the teacher's topic and transcript lines that cover it.

A passage supports a question when its MiniLM sentence embedding is close to the question's and it shares at
least one content word with it (the embedding alone matches "what is photosynthesis" to any biology sentence).
Questions about the class itself (homework, the test, what the teacher said) have no answer outside the class:
with no supporting passage the tutor says it is not sure and sends the student to the teacher.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from control.tutor.context import ClassContext

log = logging.getLogger("classcast.tutor")

SUPPORT_SIMILARITY = 0.5
MAX_QUOTE_CHARS = 280
MAX_PASSAGES = 80  # the newest transcript sentences looked at

STOPWORDS = frozenset(
    "a an the and or but of to in on at for from by with about as is are was were be been being do does did what "
    "which who whom whose when where why how this that these those it its it's i you he she we they me my your our "
    "their can could would should will shall may might must not no yes so if then than there here just also very "
    "tell explain mean means meaning please teacher said say says class today lesson us them him her give get "
    "all any one has had have our out too use way why how who its let see saw put set".split()
)
CLASS_QUESTION = re.compile(
    r"\b(homework|assignment|quiz|test|exam|due(?! to)|deadline|teacher|today|lesson|tomorrow|next week|next class|"
    r"grade|grading|project|(?:we|you) (?:learn|learned|learnt|did|do|talk|talked|cover|covered|study|studied)|"
    r"(?:did|does) (?:the teacher|she|he|they|you) (?:say|mean|explain))\b"
)


ABOUT_THE_TOPIC = re.compile(
    r"\b(what(?:'s| is| are)? (?:the )?(?:topic|subject)|what (?:are|do|will) we (?:study|learn|do|cover)\w*|"
    r"what is (?:this|the|today's) (?:class|lesson) about)\b")


@dataclass(frozen=True)
class Support:
    passage: str  # the teacher's words (or topic) that cover the question, as said
    source: str  # "transcript" or "topic"
    similarity: float


def _stem(word: str) -> str:
    """ions ~ ion, plants ~ plant, photosynthesis ~ photo...: a plural s off, then the first five letters."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word[:5]


def content_words(text: str) -> set[str]:
    """Lower-case words of three letters or more that carry meaning, stemmed (`_stem`)."""
    return {_stem(w) for w in re.findall(r"[a-z][a-z'-]{2,}", text.lower()) if w not in STOPWORDS}


def passages(ctx: ClassContext) -> list[tuple[str, str]]:
    """(text, source): the topic, then transcript sentences, newest last."""
    out: list[tuple[str, str]] = []
    if ctx.topic:
        out.append((ctx.topic, "topic"))
    said: list[str] = []
    for line in ctx.transcript:
        said += [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if len(s.strip()) > 3]
    out += [(s, "transcript") for s in said[-MAX_PASSAGES:]]
    return out


def is_class_question(question: str) -> bool:
    return CLASS_QUESTION.search(question.lower()) is not None


class Grounder:
    """Finds support with an `embed(texts) -> unit vectors` function, run on `executor` (it blocks)."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], executor: Executor | None = None,
                 threshold: float = SUPPORT_SIMILARITY) -> None:
        self.embed = embed
        self.executor = executor
        self.threshold = threshold
        self._cache: dict[str, np.ndarray] = {}

    def _vectors(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vec in zip(missing, self.embed(missing), strict=True):
                self._cache[text] = vec
            while len(self._cache) > 4096:  # oldest first: dicts keep insertion order
                self._cache.pop(next(iter(self._cache)))
        return np.stack([self._cache[t] for t in texts])

    def find_blocking(self, question: str, ctx: ClassContext) -> Support | None:
        if ctx.topic and ABOUT_THE_TOPIC.search(question.lower()):
            return Support(ctx.topic, "topic", 1.0)
        found = passages(ctx)
        asked = content_words(question)
        found = [(text, src) for text, src in found if asked & content_words(text)]
        if not found:
            return None
        vectors = self._vectors([question] + [text for text, _ in found])
        sims = vectors[1:] @ vectors[0]
        best = int(np.argmax(sims))
        if float(sims[best]) < self.threshold:
            return None
        text, src = found[best]
        if len(text) > MAX_QUOTE_CHARS:
            text = text[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0] + " ..."
        return Support(text, src, float(sims[best]))

    async def find(self, question: str, ctx: ClassContext) -> Support | None:
        """None also when the embedding model fails: the answer then goes on without the class's words."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.find_blocking, question, ctx)
        except Exception:
            log.exception("grounding failed; answering without it")
            return None
