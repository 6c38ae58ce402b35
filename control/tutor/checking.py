"""Checking what the model says against a verified result, one sentence at a time. Pure functions.

A sentence contradicts a `Fact` when it claims a number ("... is 54", "= 3", "x = -1") that is neither one of the
fact's values, nor a number of the question or the fact itself (operands restated), nor the correct value of a
small calculation written just before it ("7 × 8 = 56" is checked by evaluating 7 × 8 exactly).
"""

from __future__ import annotations

import re
from fractions import Fraction

from control.tutor.cas import Fact
from control.tutor.mathparse import MathSyntaxError, exact_value, normalize, parse

_NUM = r"-?\d+(?:\.\d+)?"
_CLAIM = re.compile(
    r"(=|\bis\b|\bare\b|\bequals?\b|\bgives?\b|\bmakes?\b|\bget\b|\bresults? in\b|\banswer\b:?|\bwould be\b|"
    r"\bbecomes\b)\s*(?:about |approximately |roughly |exactly |just |only |around |[a-z]\s*=\s*)?"
    r"(" + _NUM + r")(?![\d.]*\s*(?:[-+*/×^%]\s*[\d(a-z]|/|\d))"
)
_ANY_NUMBER = re.compile(_NUM)


def sentences(text: str) -> tuple[list[str], str]:
    """(complete sentences, the unfinished rest): a sentence ends at . ! ? followed by space, or a newline."""
    done: list[str] = []
    start = 0
    for m in re.finditer(r"[.!?](?=\s)|\n", text):
        end = m.end()
        if text[start:end].strip():
            done.append(text[start:end])
        start = end
    return done, text[start:]


def _value(s: str) -> Fraction | None:
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _close(claim: Fraction, target: Fraction, claim_text: str) -> bool:
    """Equal, or equal once the target is rounded to the claim's decimals (1.41 for 1.4142)."""
    if claim == target:
        return True
    decimals = len(claim_text.split(".")[1]) if "." in claim_text else 0
    return decimals > 0 and abs(claim - target) <= Fraction(1, 2 * 10 ** decimals)


def numbers_in(text: str) -> list[Fraction]:
    out = []
    for m in _ANY_NUMBER.finditer(normalize(text)):
        v = _value(m.group(0))
        if v is not None:
            out.append(v)
            out.append(abs(v))
    return out


def _computed_before(sentence: str, at: int) -> Fraction | None:
    """The exact value of the calculation written just before the '=' at `at`, if there is one."""
    before = normalize(sentence[:at]).rstrip()
    words = before.split()
    for i in range(max(0, len(words) - 12), len(words)):
        chunk = " ".join(words[i:]).strip(" :,")
        if not chunk or not re.search(r"[-+*/^]", chunk):
            continue
        try:
            value = exact_value(parse(chunk))
        except MathSyntaxError:
            continue
        if value is not None:
            return value
    return None


def contradiction(sentence: str, fact: Fact, question: str) -> str | None:
    """The claimed number that contradicts the fact, or None."""
    targets = [v for v in (_value(x) for x in fact.values) if v is not None]
    known = numbers_in(question) + numbers_in(fact.statement)
    text = sentence.replace("×", "*").replace("−", "-")
    for m in _CLAIM.finditer(text):
        raw = m.group(2)
        claim = _value(raw)
        if claim is None:
            continue
        if any(_close(claim, t, raw) for t in targets) or claim in known:
            continue
        if m.group(1) == "=":
            computed = _computed_before(text, m.start(1))
            if computed is not None and _close(claim, computed, raw):
                continue  # a correct step of the working
        return raw
    return None
