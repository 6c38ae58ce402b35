"""A small, bounded parser for school mathematics: text -> a plain-data syntax tree. No eval, no SymPy.

SymPy's own `parse_expr`/`sympify` run Python's `eval` on the text, so a student's question must never reach them.
This parser accepts only what a class writes (numbers, one-letter variables, a few functions and constants,
+ - * / ^, implicit products such as `2x` or `3(x+1)`, `=`), and rejects anything longer or deeper than a question
needs before any algebra runs. The tree is JSON-friendly lists, so it crosses to the solver process as data:

    ["num", "7"]  ["sym", "x"]  ["const", "pi"]  ["fn", "sqrt", a]  ["neg", a]  ["fact", a]
    ["add" | "sub" | "mul" | "div" | "pow", a, b]

`check_bounds` then refuses trees whose exact evaluation could explode (power towers, huge exponents or
factorials) - the solver process's time and memory limits stay the last line of defence, not the first.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

Node = list[Any]

MAX_CHARS = 200
MAX_TOKENS = 80
MAX_DEPTH = 24
MAX_DIGITS = 15
MAX_EXPONENT = 1000  # |n| in a^n with both constant
MAX_SYMBOLIC_EXPONENT = 12  # x^n: keeps polynomials to degrees a class meets (and solve fast)
MAX_FACTORIAL = 200
MAX_MAGNITUDE_DIGITS = 3000  # an exact constant may have at most this many digits

FUNCTIONS = ("sqrt", "cbrt", "sin", "cos", "tan", "asin", "acos", "atan", "ln", "log", "exp", "abs")
CONSTANTS = ("pi", "e")
VARIABLES = "abcdfghjklmnpqrstuvwxyz"  # every letter but e (Euler's number) and i/o (read as words or digits)

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|([a-z]+)|(\*\*|[-+*/^()=!,|]))")


class MathSyntaxError(ValueError):
    """The text is not an expression this parser reads (or is larger than a question may be)."""


def normalize(text: str) -> str:
    """Typography and spoken forms to plain operators: × ÷ − ² √ and 'times', 'squared', ..."""
    s = text.lower()
    for a, b in (("×", "*"), ("·", "*"), ("⋅", "*"), ("÷", "/"), ("−", "-"), ("–", "-"), ("²", "^2"),
                 ("³", "^3"), ("√", "sqrt"), ("π", "pi"), ("**", "^")):
        s = s.replace(a, b)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    words = (
        (r"\bmultiplied by\b", "*"), (r"\btimes\b", "*"), (r"\bdivided by\b", "/"), (r"\bover\b", "/"),
        (r"\bplus\b", "+"), (r"\bminus\b", "-"), (r"\bsquared\b", "^2"), (r"\bcubed\b", "^3"),
        (r"\bto the power of\b", "^"), (r"\bto the\s+(\d+)(?:st|nd|rd|th) power\b", r"^\1"),
        (r"\braised to\b", "^"), (r"\bequals\b", "="), (r"\bis equal to\b", "="),
    )
    for pattern, repl in words:
        s = re.sub(pattern, repl, s)
    return s


def tokenize(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_CHARS:
        raise MathSyntaxError(f"longer than {MAX_CHARS} characters")
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise MathSyntaxError(f"unexpected {text[pos:pos + 10]!r}")
        pos = m.end()
        number, word, op = m.groups()
        if number is not None:
            if len(number.split(".")[0]) > MAX_DIGITS or len(number) > 2 * MAX_DIGITS:
                raise MathSyntaxError("a number with too many digits")
            tokens.append(("num", number))
        elif word is not None:
            tokens.extend(_split_word(word))
        else:
            tokens.append(("op", "^" if op == "**" else op))
        if len(tokens) > MAX_TOKENS:
            raise MathSyntaxError(f"more than {MAX_TOKENS} symbols")
    return tokens


def _split_word(word: str) -> list[tuple[str, str]]:
    """`sqrt` is a function, `pi` a constant, `xy` the product of two variables; English words are refused."""
    if word in FUNCTIONS:
        return [("fn", word)]
    if word in CONSTANTS:
        return [("const", word)]
    if len(word) <= 2 and all(ch in VARIABLES for ch in word):
        return [("sym", ch) for ch in word]
    for name in FUNCTIONS:  # sqrtx -> sqrt x
        if word.startswith(name) and len(word) == len(name) + 1 and word[-1] in VARIABLES:
            return [("fn", name), ("sym", word[-1])]
    raise MathSyntaxError(f"unknown word {word!r}")


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise MathSyntaxError("the expression ends too early")
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok != ("op", op):
            raise MathSyntaxError(f"expected {op!r}")

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise MathSyntaxError("nested too deeply")

    def sum(self) -> Node:
        self.nested()
        node = self.term()
        while (tok := self.peek()) in (("op", "+"), ("op", "-")):
            self.take()
            node = ["add" if tok == ("op", "+") else "sub", node, self.term()]
        self.depth -= 1
        return node

    def term(self) -> Node:
        node = self.unary()
        while True:
            tok = self.peek()
            if tok in (("op", "*"), ("op", "/")):
                self.take()
                node = ["mul" if tok == ("op", "*") else "div", node, self.unary()]
            elif tok is not None and (tok[0] in ("sym", "const", "fn") or tok == ("op", "(")):
                node = ["mul", node, self.power()]  # implicit product: 2x, 3(x+1), x sin x
            else:
                return node

    def unary(self) -> Node:
        tok = self.peek()
        if tok in (("op", "-"), ("op", "+")):
            self.take()
            self.nested()
            inner = self.unary()
            self.depth -= 1
            return ["neg", inner] if tok == ("op", "-") else inner
        return self.power()

    def power(self) -> Node:
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.take()
            self.nested()
            exponent = self.unary()  # right-associative: 2^3^2 = 2^(3^2)
            self.depth -= 1
            return ["pow", base, exponent]
        return base

    def postfix(self) -> Node:
        node = self.atom()
        while self.peek() == ("op", "!"):
            self.take()
            node = ["fact", node]
        return node

    def atom(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            return ["num", value]
        if kind == "sym":
            return ["sym", value]
        if kind == "const":
            return ["const", value]
        if kind == "fn":
            self.nested()
            if self.peek() == ("op", "("):
                self.take()
                arg = self.sum()
                self.expect(")")
            else:  # sqrt 81, sin x
                arg = self.power()
            self.depth -= 1
            return ["fn", value, arg]
        if (kind, value) == ("op", "("):
            node = self.sum()
            self.expect(")")
            return node
        if (kind, value) == ("op", "|"):
            node = self.sum()
            self.expect("|")
            return ["fn", "abs", node]
        raise MathSyntaxError(f"unexpected {value!r}")


def parse(text: str) -> Node:
    """One expression, bounded in size and depth; raises MathSyntaxError otherwise."""
    p = _Parser(tokenize(text))
    if not p.tokens:
        raise MathSyntaxError("empty")
    node = p.sum()
    if p.peek() is not None:
        raise MathSyntaxError(f"unexpected {p.peek()[1]!r}")  # type: ignore[index]
    check_bounds(node)
    return node


def parse_relation(text: str) -> tuple[Node, Node | None]:
    """`lhs = rhs` (an equation) or a lone expression (rhs None)."""
    parts = text.split("=")
    if len(parts) > 2:
        raise MathSyntaxError("more than one '='")
    lhs = parse(parts[0])
    return lhs, (parse(parts[1]) if len(parts) == 2 else None)


def symbols(node: Node) -> set[str]:
    if node[0] == "sym":
        return {node[1]}
    out: set[str] = set()
    for child in node[1:]:
        if isinstance(child, list):
            out |= symbols(child)
    return out


def is_constant(node: Node) -> bool:
    return not symbols(node)


def _digits(node: Node) -> float:
    """An upper bound on log10 |value| of a constant tree (inf when it cannot be bounded cheaply)."""
    op = node[0]
    if op == "num":
        return len(node[1].split(".")[0])
    if op == "const":
        return 1.0
    if op == "neg":
        return _digits(node[1])
    if op in ("add", "sub"):
        return max(_digits(node[1]), _digits(node[2])) + 1
    if op == "mul":
        return _digits(node[1]) + _digits(node[2])
    if op == "div":
        return _digits(node[1]) + 3 * MAX_DIGITS  # a small divisor can grow it: bounded by the literal sizes
    if op == "pow":
        value = exact_value(node[2])
        if value is None:
            return float("inf")
        return max(_digits(node[1]), 1.0) * max(abs(float(value)), 1.0)
    if op == "fact":
        value = exact_value(node[1])
        return float("inf") if value is None else float(value) * 3
    return _digits(node[2]) if op == "fn" else float("inf")


def exact_value(node: Node, env: dict[str, Fraction] | None = None) -> Fraction | None:
    """The exact rational value of a small tree made of + - * / and integer powers, with the variables of `env`
    set to their values; None for anything else (functions, unknown variables, huge powers)."""
    op = node[0]
    try:
        if op == "num":
            return Fraction(node[1])
        if op == "sym":
            return None if env is None else env.get(node[1])
        if op == "neg":
            v = exact_value(node[1], env)
            return None if v is None else -v
        if op in ("add", "sub", "mul", "div"):
            a, b = exact_value(node[1], env), exact_value(node[2], env)
            if a is None or b is None:
                return None
            if op == "add":
                return a + b
            if op == "sub":
                return a - b
            if op == "mul":
                return a * b
            return a / b if b else None
        if op == "pow":
            a, b = exact_value(node[1], env), exact_value(node[2], env)
            if a is None or b is None or b.denominator != 1 or abs(b) > 64 or (a == 0 and b < 0):
                return None
            return a ** int(b)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def check_bounds(node: Node) -> None:
    """Refuses trees whose exact value or expansion could take unbounded time or memory to compute."""
    op = node[0]
    if op == "pow":
        base, exponent = node[1], node[2]
        if any(n[0] == "pow" for n in _walk(exponent)) or any(n[0] == "fact" for n in _walk(exponent)):
            raise MathSyntaxError("a power in an exponent")
        value = exact_value(exponent)
        if value is not None:
            limit = MAX_EXPONENT if is_constant(base) else MAX_SYMBOLIC_EXPONENT
            if abs(value) > limit:
                raise MathSyntaxError(f"an exponent larger than {limit}")
        elif not is_constant(exponent) and not is_constant(base):
            raise MathSyntaxError("a variable raised to a variable power")
    if op == "fact":
        value = exact_value(node[1])
        if value is None or value.denominator != 1 or not 0 <= value <= MAX_FACTORIAL:
            raise MathSyntaxError(f"a factorial of something other than a whole number up to {MAX_FACTORIAL}")
    for child in node[1:]:
        if isinstance(child, list):
            check_bounds(child)
    if is_constant(node) and _digits(node) > MAX_MAGNITUDE_DIGITS:
        raise MathSyntaxError("a number too large to compute exactly")


def _walk(node: Node) -> list[Node]:
    out = [node]
    for child in node[1:]:
        if isinstance(child, list):
            out.extend(_walk(child))
    return out


def to_text(node: Node) -> str:
    """The tree as a student reads it: 3x^2 - 5x + 6, sqrt(81), 15/100*200."""
    return _text(node, 0)


_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "pow": 4}


def _text(node: Node, outer: int) -> str:
    op = node[0]
    if op in ("num", "sym"):
        return node[1]
    if op == "const":
        return "π" if node[1] == "pi" else "e"
    if op == "fn":
        return f"{node[1]}({_text(node[2], 0)})"
    if op == "fact":
        return f"{_text(node[1], 5)}!"
    prec = _PREC[op]
    if op == "neg":
        s = "-" + _text(node[1], prec)
    elif op == "pow":
        s = f"{_text(node[1], prec + 1)}^{_text(node[2], prec)}"
    elif op == "mul" and node[1][0] == "num" and node[2][0] in ("sym", "fn", "const", "pow") \
            and (node[2][0] != "pow" or node[2][1][0] == "sym"):
        s = f"{node[1][1]}{_text(node[2], prec)}"
    else:
        sign = {"add": " + ", "sub": " - ", "mul": " × ", "div": "/"}[op]
        right = _text(node[2], prec + (1 if op in ("sub", "div") else 0))
        s = f"{_text(node[1], prec)}{sign}{right}"
    return f"({s})" if prec < outer else s
