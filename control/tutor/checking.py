"""Checking what the model says against a verified result, one sentence at a time. Pure functions.

A sentence contradicts a `Fact` when it claims a number ("... is 54", "= 3", "x = -1") that is neither one of the
fact's values, nor a number of the question or the fact itself (operands restated), nor the correct value of a
small calculation written just before it ("7 × 8 = 56" is checked by evaluating 7 × 8 exactly). Any sentence,
with or without a fact, is wrong when it writes a false equation between numbers ("12 × 7 = 32 - 12").
"""

from __future__ import annotations

import re
from fractions import Fraction

from control.tutor.cas import Fact
from control.tutor.mathparse import MathSyntaxError, Node, exact_value, normalize, parse, symbols
from control.tutor.problems import is_word

_NUM = r"-?\d+(?:\.\d+)?"
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
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


def _tree(words: list[str]) -> tuple[Node, str] | None:
    chunk = " ".join(words).strip(" :,.;!?")
    if not chunk or not re.search(r"[\da-z]", chunk):
        return None
    try:
        return parse(chunk), chunk
    except MathSyntaxError:
        return None


def _side_before(sentence: str, at: int) -> tuple[Node, str] | None:
    """The whole expression written just before the '=' at `at` (back to the previous English word), or None:
    never a piece of a longer formula."""
    words = normalize(sentence[:at]).split()
    start = len(words)
    while start > 0 and not is_word(words[start - 1]) and "=" not in words[start - 1] \
            and not words[start - 1].endswith((",", ":", ";")):
        start -= 1
    return _tree(words[start:])


def _side_after(sentence: str, at: int) -> tuple[Node, str] | None:
    """The whole expression written just after the '=' at `at`, or None."""
    words = normalize(sentence[at + 1:]).split()
    end = 0
    while end < len(words) and not is_word(words[end]) and "=" not in words[end]:
        end += 1
        if words[end - 1].endswith((",", ":", ";", ".", "?", "!")):
            break
    return _tree(words[:end])


IDENTITY_POINTS = (Fraction(2), Fraction(3), Fraction(-5, 7))


def false_equation(sentence: str, fact: Fact | None = None) -> str | None:
    """An equation the model wrote that is false, as written, or None. Between numbers ("12 × 7 = 32 - 12") it is
    computed exactly, whatever the question was. With a verified equation's solutions, an equation in its
    variables must hold for one of them ("3x = 5" when x = 12 is false); with a verified identity (simplify,
    factor, expand), an equation in its variable must be an identity ("(x + 2)(x + 3) = 6x + 12" is not)."""
    text = sentence.replace("×", "*").replace("−", "-")
    envs = [{k: Fraction(v) for k, v in s.items()} for s in fact.solutions] if fact else []
    for m in re.finditer(r"=", text):
        left, right = _side_before(text, m.start()), _side_after(text, m.start())
        if left is None or right is None:
            continue
        (lhs, _), (rhs, written) = left, right
        names = symbols(lhs) | symbols(rhs)
        if not names:
            a, b = exact_value(lhs), exact_value(rhs)
            if a is None or b is None:
                continue
            decimals = max((len(x.split(".")[1]) for x in re.findall(r"\d+\.\d+", written)), default=0)
            if a == b or (decimals and abs(a - b) <= Fraction(1, 2 * 10 ** decimals)):
                continue
        elif envs and names <= set(envs[0]):
            pairs = [(exact_value(lhs, env), exact_value(rhs, env)) for env in envs]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if not pairs or any(a == b for a, b in pairs):
                continue
        elif fact is not None and fact.identity_in is not None and names == {fact.identity_in}:
            pairs = [(exact_value(lhs, {fact.identity_in: x}), exact_value(rhs, {fact.identity_in: x}))
                     for x in IDENTITY_POINTS]
            if not any(a is not None and b is not None and a != b for a, b in pairs):
                continue
        else:
            continue
        return text[max(0, m.start() - 30):m.start() + 1 + len(written) + 1].strip()
    return None


def contradiction(sentence: str, fact: Fact | None, question: str) -> str | None:
    """What in the sentence contradicts the fact (a claimed number), or is false arithmetic; None if nothing."""
    sentence = _THOUSANDS.sub("", sentence)  # 5,035 is one number
    wrong = false_equation(sentence, fact)
    if wrong is not None or fact is None:
        return wrong
    targets = [v for v in (_value(x) for x in fact.values) if v is not None]
    known = numbers_in(question) + numbers_in(fact.statement)
    text = sentence.replace("×", "*").replace("−", "-")
    if fact.unit_words:  # "2 hours is 2 * 60 = 120 seconds": an amount in the target unit must be the result
        units = "|".join(re.escape(w) for w in fact.unit_words)
        claimed = (rf"(?:=|\bis\b|\bequals?\b|\bequal to\b|\bmakes\b|\bgives\b|\bget\b)\s*({_NUM})\s*"
                   rf"(?:{units})(?:e?s)?\b")
        for m in re.finditer(claimed, text, re.IGNORECASE):
            claim = _value(m.group(1))
            if claim is not None and not any(_close(claim, t, m.group(1)) for t in targets):
                return m.group(0)
    for m in _CLAIM.finditer(text):
        raw = m.group(2)
        claim = _value(raw)
        if claim is None:
            continue
        if any(_close(claim, t, raw) for t in targets):
            continue
        if m.group(1) == "=":
            side = _side_before(text, m.start(1))
            computed = None if side is None else exact_value(side[0])
            if computed is not None:
                if _close(claim, computed, raw):
                    continue  # a correct step of the working
                return raw
        if claim in known:
            continue  # a number of the question restated
        return raw
    return None


_NEGATION = re.compile(r"\b(not|no|never|none|neither|nor|cannot)\b|n't\b", re.IGNORECASE)


def negates(sentence: str, passage: str) -> bool:
    """The sentence says the opposite of the teacher's words: it negates what they state without negation,
    about the same things ("The quiz will not include fractions" after "the quiz covers fractions")."""
    from control.tutor.grounding import content_words

    if not _NEGATION.search(sentence) or _NEGATION.search(passage):
        return False
    return len(content_words(sentence) & content_words(passage)) >= 1
