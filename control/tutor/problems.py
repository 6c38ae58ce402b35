"""Reading a computable question: "what is 15% of 200", "solve x^2 - 5x + 6 = 0", "derivative of x^3",
"convert 72 km/h to m/s". Pure text work (no SymPy): the result is a `Problem` of plain data for the solver
process, `Unreadable` when the question is clearly mathematics this reader cannot parse (the model then answers
alone, flagged unverified), or None when there is nothing to compute.

A question that points at the class ("what are the roots of this equation?") takes its expression from the
class context: the topic first, then the newest transcript line holding one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from control.tutor.mathparse import (
    CONSTANTS,
    FUNCTIONS,
    VARIABLES,
    MathSyntaxError,
    Node,
    normalize,
    parse,
    parse_relation,
    symbols,
    to_text,
)

# Units: dimension and exact factor to the SI unit, as a string the solver turns into a Rational.
UNITS: dict[str, tuple[str, str]] = {
    "mm": ("length", "1/1000"), "millimeter": ("length", "1/1000"), "millimetre": ("length", "1/1000"),
    "cm": ("length", "1/100"), "centimeter": ("length", "1/100"), "centimetre": ("length", "1/100"),
    "m": ("length", "1"), "meter": ("length", "1"), "metre": ("length", "1"),
    "km": ("length", "1000"), "kilometer": ("length", "1000"), "kilometre": ("length", "1000"),
    "in": ("length", "127/5000"), "inch": ("length", "127/5000"), "inches": ("length", "127/5000"),
    "ft": ("length", "381/1250"), "foot": ("length", "381/1250"), "feet": ("length", "381/1250"),
    "yd": ("length", "1143/1250"), "yard": ("length", "1143/1250"),
    "mi": ("length", "201168/125"), "mile": ("length", "201168/125"),
    "mg": ("mass", "1/1000000"), "milligram": ("mass", "1/1000000"),
    "g": ("mass", "1/1000"), "gram": ("mass", "1/1000"),
    "kg": ("mass", "1"), "kilogram": ("mass", "1"),
    "t": ("mass", "1000"), "tonne": ("mass", "1000"),
    "lb": ("mass", "45359237/100000000"), "pound": ("mass", "45359237/100000000"),
    "oz": ("mass", "45359237/1600000000"), "ounce": ("mass", "45359237/1600000000"),
    "s": ("time", "1"), "sec": ("time", "1"), "second": ("time", "1"),
    "min": ("time", "60"), "minute": ("time", "60"),
    "h": ("time", "3600"), "hr": ("time", "3600"), "hour": ("time", "3600"),
    "day": ("time", "86400"), "week": ("time", "604800"),
    "ml": ("volume", "1/1000000"), "milliliter": ("volume", "1/1000000"), "millilitre": ("volume", "1/1000000"),
    "l": ("volume", "1/1000"), "liter": ("volume", "1/1000"), "litre": ("volume", "1/1000"),
    "km/h": ("speed", "5/18"), "kph": ("speed", "5/18"), "m/s": ("speed", "1"),
    "mph": ("speed", "1397/3125"),
    "c": ("temperature", "C"), "°c": ("temperature", "C"), "celsius": ("temperature", "C"),
    "f": ("temperature", "F"), "°f": ("temperature", "F"), "fahrenheit": ("temperature", "F"),
    "k": ("temperature", "K"), "kelvin": ("temperature", "K"),
    "j": ("energy", "1"), "joule": ("energy", "1"), "kj": ("energy", "1000"), "kilojoule": ("energy", "1000"),
    "cal": ("energy", "4184/1000"), "calorie": ("energy", "4184/1000"), "kcal": ("energy", "4184"),
}
UNIT_WORDS = sorted(UNITS, key=len, reverse=True)
# How a fact names a unit: the shortest spelling with the same meaning (kilometre -> km, fahrenheit -> °f).
SYMBOL = {name: min((n for n, v in UNITS.items() if v == spec), key=len) for name, spec in UNITS.items()}
SYMBOL.update({"c": "°C", "°c": "°C", "celsius": "°C", "f": "°F", "°f": "°F", "fahrenheit": "°F", "k": "K",
               "kelvin": "K", "km/h": "km/h", "kph": "km/h", "l": "L", "liter": "L", "litre": "L", "ml": "mL",
               "milliliter": "mL", "millilitre": "mL", "j": "J", "joule": "J", "kj": "kJ", "kilojoule": "kJ"})
_UNIT = "(" + "|".join(re.escape(u) for u in UNIT_WORDS) + ")(?:e?s)?"
_NUMBER = r"(-?\d+(?:\.\d+)?)"

MATH_HINT = re.compile(
    r"\d\s*[-+*/^=]\s*[\d(a-z]|\b(solve|equation|derivative|differentiate|integral|integrate|simplify|factori[sz]e|"
    r"expand|square root|cube root|percent|calculate|compute|evaluate|root|roots)\b|[a-z]\s*\^\s*\d|\d\s*!|%")

_LEADS = (
    r"what(?:'s| is| are)", r"calculate", r"compute", r"evaluate", r"work out", r"find", r"how much is",
    r"tell me", r"what do you get for", r"can you (?:calculate|compute|solve|find|simplify)", r"please",
)


@dataclass(frozen=True)
class Problem:
    """What to compute. `exprs` are parse trees; `label` is how the fact will name the problem."""

    kind: str  # evaluate | solve | diff | integrate | simplify | factor | expand | convert
    exprs: list[Any]
    label: str
    var: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        return {"kind": self.kind, "exprs": self.exprs, "var": self.var, "args": self.args, "label": self.label}


@dataclass(frozen=True)
class Unreadable:
    reason: str


def _clean_tail(text: str) -> str:
    """The expression part: drop a question mark, 'for x', 'with respect to x', 'dx', trailing words."""
    s = text.strip().rstrip("?.!").strip()
    s = re.sub(r"\s+(?:with respect to|wrt|for)\s+[a-z]\s*$", "", s)
    s = re.sub(r"\s*\bd[a-z]\s*$", "", s)
    return s.strip(" :,")


def _pick_var(nodes: list[Node], hint: str | None = None) -> str | None:
    names: set[str] = set()
    for n in nodes:
        names |= symbols(n)
    if hint and (hint in names or not names):
        return hint
    for preferred in "xyzt":
        if preferred in names:
            return preferred
    return sorted(names)[0] if names else None


def _respect(text: str) -> str | None:
    m = re.search(r"(?:with respect to|wrt|d/d)\s*([a-z])\b", text)
    return m.group(1) if m else None


def is_word(w: str) -> bool:
    """An English word (not mathematics): letters only, two or more, not a function or constant name."""
    bare = w.strip("?!.,:;\"'")
    return len(bare) >= 2 and bare.isalpha() and bare not in FUNCTIONS and bare not in CONSTANTS \
        and not (len(bare) == 2 and all(ch in VARIABLES for ch in bare) and bare not in ENGLISH_PAIRS)


ENGLISH_PAIRS = frozenset("an as at be by do go he if in is it me my no of on or so to up us we am".split())


def math_runs(text: str) -> list[str]:
    """The stretches of mathematics in a sentence: maximal runs of words that are not English words, cut at a
    colon, semicolon or comma that ends a word. A run is read whole or not at all: never a piece of a formula."""
    runs: list[str] = []
    current: list[str] = []
    for w in text.split():
        if is_word(w):
            if current:
                runs.append(" ".join(current))
            current = []
            continue
        current.append(w.rstrip(":;,"))
        if w[-1] in ":;,":
            runs.append(" ".join(current))
            current = []
    if current:
        runs.append(" ".join(current))
    return [r.strip(" .?!") for r in runs if r.strip(" .?!")]


_OPERATOR = re.compile(r"[-+*/^!=]|\d\s*[a-z(]|sqrt|cbrt|sin|cos|tan|log|ln|exp")


def _longest_expression(text: str, need_operator: bool = True) -> Node | None:
    """The longest stretch of mathematics without '=' (with an operator, unless told otherwise), parsed.
    A stretch with an operator that does not parse is an error: the question has mathematics we cannot read."""
    best: tuple[int, Node] | None = None
    for run in math_runs(text):
        if "=" in run or (need_operator and not _OPERATOR.search(run)):
            continue
        node = parse(run)
        if need_operator and node[0] in ("num", "sym", "const", "neg") and \
                (node[0] != "neg" or node[1][0] in ("num", "sym", "const")):
            continue  # a signed number is no calculation
        if best is None or len(run) > best[0]:
            best = (len(run), node)
    return best[1] if best else None


def _equations(text: str) -> list[tuple[Node, Node]] | None:
    """Every stretch of mathematics with an '=' in the text, parsed as `lhs = rhs`, or None."""
    out: list[tuple[Node, Node]] = []
    for run in math_runs(text):
        if "=" not in run:
            continue
        lhs, rhs = parse_relation(run)
        assert rhs is not None
        out.append((lhs, rhs))
    return out or None


def read(question: str, context: list[str] | None = None) -> Problem | Unreadable | None:
    """The computable problem in `question`; `context` (topic, then transcript newest first) supplies the
    expression for questions that point at 'this equation'."""
    q = normalize(question)
    try:
        problem = _read(q)
    except MathSyntaxError as exc:
        problem = Unreadable(str(exc))
    if problem is None and re.search(r"\b(this|that|the)\s+(equation|expression|function|formula|polynomial)\b", q):
        for line in context or []:
            found = _from_context(q, normalize(line))
            if found is not None:
                return found
    if problem is None and MATH_HINT.search(q) and re.search(r"\d|\b[a-z]\s*[\^=]", q):
        return Unreadable("no expression I can read")
    return problem


def _from_context(q: str, line: str) -> Problem | None:
    try:
        eqs = _equations(line)
        if eqs:
            return _solve_problem(eqs)
        node = _longest_expression(line)
    except MathSyntaxError:
        return None
    if node is None or not symbols(node):
        return None
    var = _pick_var([node])
    if re.search(r"deriv|differentiat|slope", q):
        return Problem("diff", [node], f"the derivative of {to_text(node)}", var)
    if re.search(r"integra", q):
        return Problem("integrate", [node], f"the integral of {to_text(node)}", var)
    return Problem("factor", [node], to_text(node), var)


def _solve_problem(eqs: list[tuple[Node, Node]]) -> Problem:
    nodes = [n for pair in eqs for n in pair]
    names: set[str] = set()
    for n in nodes:
        names |= symbols(n)
    if not names:
        raise MathSyntaxError("an equation without a variable")
    if len(names) > len(eqs):
        raise MathSyntaxError("more unknowns than equations")
    label = " and ".join(f"{to_text(a)} = {to_text(b)}" for a, b in eqs)
    return Problem("solve", [list(pair) for pair in eqs], label, _pick_var(nodes),
                   {"vars": sorted(names)})


def _read(q: str) -> Problem | Unreadable | None:
    # Unit conversions: "convert 5 km to m", "how many cm are in 2.5 m", "72 km/h in m/s".
    m = re.search(rf"how many {_UNIT} (?:are |is )?(?:there )?in {_NUMBER}\s*{_UNIT}\b", q)
    if m:
        return _convert(m.group(2), m.group(3), m.group(1))
    m = re.search(rf"{_NUMBER}\s*(?:degrees?\s+)?{_UNIT}\s+(?:to|in|into|in terms of)\s+(?:degrees?\s+)?{_UNIT}"
                  r"(?![a-z/])", q)
    if m:
        return _convert(m.group(1), m.group(2), m.group(3))

    # Percentages: "15% of 200", "what percent of 80 is 20", "increase 50 by 10%".
    m = re.search(rf"{_NUMBER}\s*(?:%|percent)\s+of\s+{_NUMBER}", q)
    if m:
        a, b = m.group(1), m.group(2)
        return Problem("evaluate", [["mul", ["div", ["num", a], ["num", "100"]], ["num", b]]], f"{a}% of {b}")
    m = re.search(rf"what (?:percent|percentage) of {_NUMBER} is {_NUMBER}", q) or \
        re.search(rf"{_NUMBER} is what (?:percent|percentage) of {_NUMBER}", q)
    if m:
        whole, part = (m.group(1), m.group(2)) if q.find("of") < q.find(" is ") else (m.group(2), m.group(1))
        return Problem("evaluate", [["mul", ["div", ["num", part], ["num", whole]], ["num", "100"]]],
                       f"{part} as a percentage of {whole} (in %)")
    m = re.search(rf"(increase|decrease|raise|reduce|lower)\s+{_NUMBER}\s+by\s+{_NUMBER}\s*(?:%|percent)", q)
    if m:
        sign = "add" if m.group(1) in ("increase", "raise") else "sub"
        a, p = m.group(2), m.group(3)
        node = ["mul", ["num", a], [sign, ["num", "1"], ["div", ["num", p], ["num", "100"]]]]
        return Problem("evaluate", [node], f"{a} {'increased' if sign == 'add' else 'decreased'} by {p}%")

    # Roots written out: "square root of 81", "cube root of 27".
    m = re.search(r"(square|cube) root of\s+(.+)", q)
    if m:
        node = _longest_expression(_clean_tail(m.group(2)), need_operator=False)
        if node is None:
            raise MathSyntaxError("no expression after 'root of'")
        fn = "sqrt" if m.group(1) == "square" else "cbrt"
        return Problem("evaluate", [["fn", fn, node]], f"the {m.group(1)} root of {to_text(node)}")

    # Calculus.
    m = re.search(r"(?:derivative|differentiate|d/d[a-z])\s*(?:of\s+)?(?:f\(x\)\s*=\s*|y\s*=\s*)?(.+)", q)
    if m:
        tail = _clean_tail(m.group(1))
        order = 2 if re.search(r"second derivative", q) else 1
        node = parse(tail)
        var = _pick_var([node], _respect(q))
        label = f"the {'second ' if order == 2 else ''}derivative of {to_text(node)} with respect to {var}"
        return Problem("diff", [node], label, var, {"order": order})
    m = re.search(r"(?:integral|integrate|antiderivative)\s*(?:of\s+)?(.+)", q)
    if m:
        tail = m.group(1)
        bounds = re.search(r"\bfrom\s+(\S+)\s+to\s+([^\s?]+)", tail)
        if bounds:
            tail = tail[:bounds.start()] + tail[bounds.end():]
        node = parse(_clean_tail(tail))
        var = _pick_var([node], _respect(q))
        if bounds:
            lo, hi = parse(bounds.group(1).rstrip(",")), parse(bounds.group(2).rstrip(",.?"))
            if symbols(lo) or symbols(hi):
                raise MathSyntaxError("bounds of an integral must be numbers")
            return Problem("integrate", [node, lo, hi],
                           f"the integral of {to_text(node)} from {to_text(lo)} to {to_text(hi)}", var,
                           {"definite": True})
        return Problem("integrate", [node], f"the integral of {to_text(node)} d{var}", var)

    # Simplify / factor / expand.
    m = re.search(r"\b(simplify|factori[sz]e|factor|expand)\s*(?:the expression\s+)?(.+)", q)
    if m:
        verb = {"factorise": "factor", "factorize": "factor"}.get(m.group(1), m.group(1))
        node = parse(_clean_tail(m.group(2)))
        return Problem(verb, [node], to_text(node), _pick_var([node]))

    # Equations and systems: "solve 2x + 3 = 11", "roots of x^2 - 5x + 6 = 0", "x + y = 10 and x - y = 2".
    if "=" in q:
        eqs = _equations(q)
        if eqs:
            return _solve_problem(eqs)
    m = re.search(r"\b(?:roots?|zeros?|solutions?) of\s+(.+)", q)
    if m:
        node = parse(_clean_tail(m.group(1)))
        if symbols(node):
            return _solve_problem([(node, ["num", "0"])])

    # Plain arithmetic: the longest expression in the question, if it is made of numbers only.
    node = _longest_expression(q)
    if node is not None and not symbols(node):
        return Problem("evaluate", [node], to_text(node))
    if node is not None and re.search(r"\bsimplif", q):
        return Problem("simplify", [node], to_text(node), _pick_var([node]))
    return None


def _convert(value: str, src: str, dst: str) -> Problem | Unreadable:
    a, b = UNITS.get(src), UNITS.get(dst)
    if a is None or b is None:
        return Unreadable(f"unknown unit {src if a is None else dst!r}")
    if a[0] != b[0]:
        return Unreadable(f"{src} ({a[0]}) cannot be converted to {dst} ({b[0]})")
    spellings = sorted({n for n, spec in UNITS.items() if spec == b} | {SYMBOL[dst]}, key=len, reverse=True)
    return Problem("convert", [["num", value]], f"{value} {SYMBOL[src]} in {SYMBOL[dst]}", None,
                   {"from": a[1], "to": b[1], "dimension": a[0], "src": src, "dst": dst, "dst_words": spellings})
