"""The class summary says only what the class's record supports: its transcript and its students' questions.

The room's title, description and topic say what was planned, not what happened, so they never reach the summary
prompt. With no transcript and no question there is nothing to summarize, and the summary says so (a class that
never started says that too) without asking the model. With questions but no transcript, the summary reports the
questions and says that what was taught is unknown, again without the model. With a transcript the model writes
it, and every sentence it writes is kept only if its content words come from the transcript and the questions;
when nothing survives, the summary quotes the transcript instead. Pure functions.
"""

from __future__ import annotations

from typing import Any

from control.tutor.checking import sentences
from control.tutor.context import _newest_that_fit, estimate_tokens
from control.tutor.grounding import content_words

SUMMARY_INSTRUCTIONS = (
    "You write a short summary of a class for its teacher. Use only the transcript and the students' questions "
    "below: do not add any topic, example, name or fact that they do not contain. If they say little, the "
    "summary is short."
)
SUMMARY_REQUEST = "Summarize in two or three sentences what the teacher said and what the students asked."
SUPPORTED_SHARE = 0.6  # of a sentence's content words that must come from the record
# Words any summary may use about a class without the record saying them.
FRAME_WORDS = content_words(
    "class teacher teachers students student asked asking questions question explained explaining discussed "
    "discussing covered covering talked talking taught teaching lesson summary learned learning introduced "
    "focused session began started ended described describing mentioned several many often frequently also "
    "then first second finally about whether which their after before during")


def nothing_to_summarize(never_started: bool) -> str:
    if never_started:
        return ("This class has not started: there is no transcript and no question from students, so there is "
                "nothing to summarize.")
    return "Nothing to summarize: this class has no transcript and no questions from students."


def questions_only(top: list[dict[str, Any]], asked: int) -> str:
    """No transcript (transcription was off, or nobody spoke): the questions are all the record holds."""
    listed = "; ".join(f'"{q["question"]}"' + (f" ({q['frequency']} times)" if q["frequency"] > 1 else "")
                       for q in top[:3])
    noun = "question" if asked == 1 else "questions"
    return (f"No transcript was recorded for this class, so what was taught is not known. Students asked "
            f"the tutor {asked} {noun}; the most frequent: {listed}.")


def summary_messages(transcript: list[str], questions: list[str], budget_tokens: int) -> list[dict[str, Any]]:
    """The transcript (from its start, as much as fits: a summary covers the whole class) and the questions."""
    q_kept, q_used = _newest_that_fit(questions, budget_tokens // 4)
    kept: list[str] = []
    used = 0
    for line in transcript:
        cost = estimate_tokens(line) + 1
        if used + cost > budget_tokens - q_used:
            break
        kept.append(line)
        used += cost
    parts = [SUMMARY_INSTRUCTIONS, "Transcript of what the teacher said:\n" + "\n".join(kept)]
    parts.append("Questions students asked the tutor:\n" + ("\n".join(f"- {q}" for q in q_kept) or "(none)"))
    return [{"role": "system", "content": "\n\n".join(parts)}, {"role": "user", "content": SUMMARY_REQUEST}]


def supported(text: str, record: list[str]) -> str:
    """The sentences of `text` whose content words come (mostly) from `record`."""
    known = set(FRAME_WORDS)
    for line in record:
        known |= content_words(line)
    done, rest = sentences(text)
    kept = []
    for sentence in [*done, rest]:
        words = content_words(sentence)
        if words and len(words & known) >= SUPPORTED_SHARE * len(words):
            kept.append(sentence.strip())
    return " ".join(k for k in kept if k)


def quoted(transcript: list[str], top: list[dict[str, Any]]) -> str:
    """When the model's summary had nothing the record supports: the record itself, shortened."""
    first, last = transcript[0].strip(), transcript[-1].strip()
    said = f'The teacher said: "{first}"' + (f' ... "{last}"' if len(transcript) > 1 else "")
    if len(said) > 600:
        said = said[:600].rsplit(" ", 1)[0] + ' ..."'
    if top:
        said += " Students asked: " + "; ".join(f'"{q["question"]}"' for q in top[:3]) + "."
    return said
