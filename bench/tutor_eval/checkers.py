"""Answer checkers of the tutor's question set. Independent of the tutor's own checking code on purpose: the
judge must not share the defendant's mistakes.

- `Value`: the expected number is stated, and no other number is claimed as the result ("7 × 8 = 54" fails
  even if 56 appears later; numbers of the question and its class context may be restated, and a correct
  one-operation step such as "7 × 7 = 49" is no claim).
- `Forms`: one of the accepted written forms appears (spaces, `*`, `·` and case ignored): "3x^2+2".
- `Words`: every required word appears (any of its listed spellings), as whole words or word starts.
- `Honest`: the answer says it is not sure and sends the student to the teacher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_NUM = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_CLAIM = re.compile(r"(?:=|\bis\b|\bare\b|\bequals?\b|\bgives\b|\bmakes\b)\s*(?:about |approximately |x\s*=\s*)?"
                    r"(-?\d+(?:,\d{3})*(?:\.\d+)?)(?![\d.]*\s*[-+*/×^%]\s*\d)")


def _num(s: str) -> Fraction:
    return Fraction(s.replace(",", ""))


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def _matches(claim: str, expected: str) -> bool:
    """Equal, or equal at the precision of the less precise of the two (37.7778 states 37.78)."""
    value, target = _num(claim), _num(expected)
    places = min(_decimals(claim), _decimals(expected))
    return value == target or (places >= 1 and abs(value - target) <= Fraction(1, 2 * 10 ** places))


_STEP = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/×])\s*(-?\d+(?:\.\d+)?)\s*$")


def _true_step(before: str, claim: str) -> bool:
    """'7 × 7 = 49': a correct one-operation calculation is not a claim about the result."""
    m = _STEP.search(before)
    if m is None:
        return False
    a, op, b = _num(m.group(1)), m.group(2), _num(m.group(3))
    if op == "/" and b == 0:
        return False
    value = {"+": a + b, "-": a - b, "*": a * b, "×": a * b, "/": a / b if b else a}[op]
    return value == _num(claim)


@dataclass(frozen=True)
class Value:
    expected: tuple[str, ...]

    def check(self, answer: str, question: str) -> bool:
        text = answer.replace("−", "-").replace("×", "*")
        targets = list(self.expected)
        stated = [m.group(0) for m in _NUM.finditer(text)]
        if not all(any(_matches(s, t) for s in stated) for t in targets):
            return False
        given = {_num(m.group(0)) for m in _NUM.finditer(question)}
        for m in _CLAIM.finditer(text):
            claim = m.group(1)
            if not any(_matches(claim, t) for t in targets) and _num(claim) not in given \
                    and not _true_step(text[:m.start()], claim):
                return False
        return True

    def describe(self) -> str:
        return "value " + " and ".join(self.expected)


def _flat(text: str) -> str:
    return re.sub(r"[\s*·⋅]", "", text.lower()).replace("**", "^")


@dataclass(frozen=True)
class Forms:
    accepted: tuple[str, ...]

    def check(self, answer: str, question: str) -> bool:
        flat = _flat(answer)
        return any(_flat(a) in flat for a in self.accepted)

    def describe(self) -> str:
        return "one of " + " | ".join(self.accepted)


def _word(w: str) -> str:
    """Short words whole ("na" is not "nature"), longer ones as word starts ("mitochondri" in "mitochondria")."""
    w = w.lower()
    return r"\b" + re.escape(w) + (r"\b" if len(w) <= 3 else "")


@dataclass(frozen=True)
class Words:
    required: tuple[str, ...]  # each entry: spellings separated by '|'
    forbidden: tuple[str, ...] = ()  # words a right answer does not contain ("not" in "will not include")

    def check(self, answer: str, question: str) -> bool:
        low = answer.lower().replace("n't", " not")
        return all(any(re.search(_word(w), low) for w in req.split("|")) for req in self.required) and \
            not any(re.search(_word(w) + r"\b", low) for w in self.forbidden)

    def describe(self) -> str:
        return "words " + ", ".join(self.required) + (f"; not {', '.join(self.forbidden)}" if self.forbidden else "")


@dataclass(frozen=True)
class Honest:
    def check(self, answer: str, question: str) -> bool:
        low = answer.lower()
        unsure = re.search(r"not sure|don't know|do not know|cannot tell|can't tell|not certain|no information", low)
        return bool(unsure) and "teacher" in low

    def describe(self) -> str:
        return "says it is not sure and points to the teacher"


Checker = Value | Forms | Words | Honest
