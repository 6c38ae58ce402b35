"""How the tutor answers one question: computer algebra first, the class's own words second, the model third.

`plan` reads the question: a computable problem is solved exactly (`cas`), and its verified result becomes the
answer's opening sentence and a fact in the prompt; a question the class covered opens with the teacher's words
("As your teacher said: ..."); a question about the class that nothing said in it covers gets an honest "I'm not
sure, ask your teacher" without the model. `speak` then streams the opening, the model's text and any note:

- the model's sentences that hold numbers are checked before they are passed on (`checking`): one that states a
  result other than the verified one, or writes a false calculation, is withheld, the model is stopped, and a
  correction (naming the verified result, when there is one) is appended;
- mathematics the solver could not read or finish is answered by the model alone with a note that it is unverified.

Both REST endpoints (streamed and not) consume the same `speak` stream, so they say the same thing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from control.tutor.backends import Confidence
from control.tutor.cas import Cas, Fact
from control.tutor.checking import contradiction, negates, sentences
from control.tutor.context import ClassContext, build_messages, general_messages
from control.tutor.grounding import Grounder, Support, is_class_question
from control.tutor.problems import Problem, Unreadable, read

log = logging.getLogger("classcast.tutor")

MAX_EXPLANATION = 3  # sentences the model adds after an opening
_NUMBERISH = re.compile(r"[\d=]")
UNSURE_LOGPROB = -0.75  # mean token log-probability of a first sentence below which the model is guessing
UNSURE_TOKENS = 16  # judged on the first sentence, or on its first tokens if it runs longer
NOT_SURE_MODEL = ("I'm not sure about this, and nothing said in this class so far covers it, so I would only be "
                  "guessing. Please ask your teacher.")
NOT_SURE = ("I'm not sure: nothing said in this class so far covers that, and I would only be guessing. "
            "Please ask your teacher.")


@dataclass
class Plan:
    messages: list[dict[str, Any]]
    lead: str = ""  # the answer's opening, stated without the model
    fact: Fact | None = None
    unverified: str | None = None  # why mathematics in the question could not be checked
    support: Support | None = None
    direct: str | None = None  # a whole answer given without the model
    judge_confidence: bool = False  # nothing supports the answer: a guessing model says it is not sure


def fact_note(fact: Fact) -> str:
    return (f"Verified result from computer algebra: {fact.statement}. Use exactly this result and never state a "
            "different one. Explain briefly how to get it.")


def support_note(support: Support) -> str:
    where = "set the class topic" if support.source == "topic" else "said in class"
    return f'Your teacher {where}: "{support.passage}". Answer from these words, briefly.'


def _sentence_case(text: str) -> str:
    """'the square root ...' -> 'The square root ...', but 'x^2 - 9 = 0 ...' stays as written."""
    return text[:1].upper() + text[1:] if re.match(r"[a-z]{2}", text) else text


async def plan(ctx: ClassContext, question: str, budget_tokens: int, cas: Cas | None,
               grounder: Grounder | None, *, general: bool = False, image: tuple[str, str] | None = None,
               confidence: bool = False) -> Plan:
    """`general`: the assistant without a class (no teacher to quote or to send the student to). `confidence`:
    the backend reports token log-probabilities, so an unsupported answer can be judged."""
    notes: list[str] = []
    result = Plan(messages=[])
    context_lines = ([ctx.topic] if ctx.topic else []) + list(reversed(ctx.transcript))
    problem = read(question, context_lines) if cas is not None else None
    if isinstance(problem, Problem):
        assert cas is not None
        solved = await cas.solve(problem)
        if isinstance(solved, Fact):
            result.fact = solved
            result.lead = f"{_sentence_case(solved.statement)} (checked with computer algebra). "
            notes.append(fact_note(solved))
        else:
            result.unverified = "the calculation took too long" if solved.kind == "timeout" else \
                "the calculator could not work it out"
            log.info("no verified result (%s: %s) for %r", solved.kind, solved.detail, question[:80])
    elif isinstance(problem, Unreadable):
        result.unverified = "I could not read the mathematics exactly"
    if result.fact is None and grounder is not None:
        result.support = await grounder.find(question, ctx)
        if result.support is not None:
            result.lead = f'As your teacher said: "{result.support.passage}" ' if result.support.source != "topic" \
                else f'The topic your teacher set for this class is "{result.support.passage}". '
            notes.append(support_note(result.support))
        elif result.unverified is None and not general and is_class_question(question):
            result.direct = NOT_SURE
        elif result.unverified is None and not general:
            result.judge_confidence = confidence
    if result.unverified:
        notes.append("This answer could not be checked by computer algebra: be careful with every number.")
    result.messages = general_messages(question, image, notes) if general else \
        build_messages(ctx, question, budget_tokens, image, notes)
    return result


def correction(fact: Fact | None, wrong: str) -> str:
    if fact is None:
        return (f"\n\n(Corrected: the model's explanation went on with a calculation that is wrong ({wrong}), so the "
                "rest was left out.)")
    return (f"\n\n(Corrected: the rest of the model's explanation stated a number that does not agree with the "
            f"verified result, so it was left out. The verified result is: {fact.statement}.)")


def unverified_note(reason: str) -> str:
    return f"\n\n(Not verified: {reason}, so please check this answer with your teacher.)"


async def speak(p: Plan, question: str,
                generate: Callable[[], AsyncIterator[str | Confidence]]) -> AsyncIterator[str]:
    """The answer's pieces: opening, checked model text, closing note. `generate` starts the model's stream.

    Every sentence with a number or an '=' is held until it ends and is checked first (`checking.contradiction`),
    so that a wrong result or a false calculation never reaches the student: the model is stopped there and a
    correction is appended. Without an opening, text is passed on as it comes while the current sentence holds no
    number (the first words come fast); after an opening (a verified result, the teacher's words), which already
    came first, the model's text is passed on in whole checked sentences, at most `MAX_EXPLANATION`.

    When nothing supports the answer (`judge_confidence`) and the backend reports token log-probabilities, the
    first sentence is held until it ends: if the model was guessing (mean below `UNSURE_LOGPROB`), the student is
    told so and sent to the teacher instead."""
    if p.direct is not None:
        yield p.direct
        return
    if p.lead:
        yield p.lead
    stream = generate()
    current = ""  # the sentence being generated, from its start
    shown = 0  # how much of `current` was already passed on
    count = 0
    scores: list[float] = []
    judging = p.judge_confidence
    try:
        async for piece in stream:
            if isinstance(piece, Confidence):
                if judging:
                    scores.extend(piece.logprobs)
                continue
            if judging:
                done, _ = sentences(current + piece)
                if not done and len(scores) < UNSURE_TOKENS:
                    current += piece
                    continue
                judging = False
                if scores and sum(scores) / len(scores) < UNSURE_LOGPROB:
                    log.info("model unsure (mean logprob %.2f): %r", sum(scores) / len(scores), question[:80])
                    yield NOT_SURE_MODEL
                    return
            current += piece
            done, rest = sentences(current)
            for i, sentence in enumerate(done):
                wrong = contradiction(sentence, p.fact, question)
                if wrong is not None:
                    log.info("model answer corrected (%s; verified: %s)", wrong, p.fact and p.fact.statement)
                    yield correction(p.fact, wrong)
                    return
                if p.support is not None and negates(sentence, p.support.passage):
                    log.info("model contradicted the teacher: %r", sentence[:120])
                    return  # the teacher's words, already given, stand alone
                out = sentence[shown:] if i == 0 else sentence
                if out:
                    yield out
                count += 1
                if p.lead and count >= MAX_EXPLANATION:
                    return
            if done:
                current, shown = rest, 0
            if not p.lead and not _NUMBERISH.search(current) and len(current) > shown:
                yield current[shown:]
                shown = len(current)
        if judging and scores and sum(scores) / len(scores) < UNSURE_LOGPROB:
            yield NOT_SURE_MODEL
            return
        if current.strip():
            wrong = contradiction(current, p.fact, question)
            if wrong is not None:
                yield correction(p.fact, wrong)
                return
            if p.support is not None and negates(current, p.support.passage):
                return
            if current[shown:]:
                yield current[shown:]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    if p.unverified:
        yield unverified_note(p.unverified)
