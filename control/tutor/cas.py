"""Exact answers from SymPy, in a child process that a question cannot keep busy or make grow.

A SymPy computation cannot be interrupted from another thread, and some inputs that pass every cheap check still
take minutes (an awkward integral) or gigabytes. So the algebra runs in one long-lived child process
(`python -m control.tutor.cas`) with an address-space limit (RLIMIT_AS) and a CPU-time limit it sets on itself;
the server talks to it from one worker thread over a pipe, one JSON line per problem, and kills it when an answer
takes longer than the time limit (it is started again for the next question). Input reaches it only as parse
trees from `mathparse` - never as text for SymPy's eval-based parser.

Results are `Fact`s: the sentence the tutor states and puts in the prompt, and the values its answer is checked
against.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.tutor.problems import Problem

log = logging.getLogger("classcast.tutor")

TIME_LIMIT_S = 3.0  # per problem, wall clock: the child is killed past it
START_LIMIT_S = 60.0  # importing SymPy on a busy machine
MEMORY_LIMIT_MB = 768
CPU_LIMIT_S = 600  # the child's whole life: it is restarted when it has used this much
RETRY_START_S = 60.0  # a process that cannot start (no SymPy) is not tried for every question
MAX_RESULT_CHARS = 400  # a result longer than this is not worth stating to a student


@dataclass(frozen=True)
class Fact:
    """A verified result: `statement` goes into the prompt and the answer; `values` are what a right answer
    states (decimal strings, or expressions for symbolic results)."""

    statement: str
    values: list[str] = field(default_factory=list)
    numeric: bool = True
    # For equations: the rational solutions ({"x": "2"}), so the model's working can be checked by substitution.
    solutions: list[dict[str, str]] = field(default_factory=list)
    # For simplify/factor/expand: the variable in which the model's equations must be identities.
    identity_in: str | None = None
    # For conversions: the target unit's spellings; a number the model gives in that unit must be the result.
    unit_words: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """The solver gave no fact: `timeout`, `error` (the problem has no result SymPy can give), `unavailable`."""

    kind: str
    detail: str = ""


class Cas:
    """The server side: one child process, one request at a time, each bounded by `time_limit_s`."""

    def __init__(self, time_limit_s: float = TIME_LIMIT_S, memory_mb: int = MEMORY_LIMIT_MB) -> None:
        self.time_limit_s = time_limit_s
        self.memory_mb = memory_mb
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cas")
        self.timeouts = 0
        self.restarts = 0
        self._retry_at = 0.0  # after a failed start (SymPy not installed, say), no new attempt before this
        self._closed = False

    async def solve(self, problem: Problem) -> Fact | Failure:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.solve_blocking, problem)

    async def start(self) -> None:
        """Starts the child ahead of the first question (SymPy takes a second to import)."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._ensure_quietly)

    def _ensure_quietly(self) -> None:
        with self._lock:
            try:
                self._ensure()
            except OSError as exc:
                if not self._closed:  # a start that close() ended is no news
                    log.warning("computer algebra unavailable: %s", exc)

    def solve_blocking(self, problem: Problem) -> Fact | Failure:
        with self._lock:
            try:
                proc = self._ensure()
            except OSError as exc:
                return Failure("unavailable", str(exc))
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(problem.request()).encode() + b"\n")
                proc.stdin.flush()
            except OSError as exc:
                self._kill()
                return Failure("unavailable", str(exc))
            line = self._read_line(proc, self.time_limit_s)
            if line is None and self._closed:
                return Failure("unavailable", "the computer algebra process was closed")
            if line is None:
                self.timeouts += 1
                log.info("computer algebra timed out on %s: restarting it", problem.label[:80])
                self._kill()
                return Failure("timeout", f"no result within {self.time_limit_s:g} s")
            try:
                reply = json.loads(line)
            except ValueError:
                self._kill()
                return Failure("error", "unreadable reply")
            if "statement" in reply:
                return Fact(reply["statement"], [str(v) for v in reply.get("values", [])],
                            bool(reply.get("numeric", True)),
                            [{str(k): str(v) for k, v in s.items()} for s in reply.get("solutions", [])],
                            reply.get("identity_in"), [str(w) for w in reply.get("unit_words", [])])
            return Failure("error", str(reply.get("error", ""))[:200])

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._closed:
            raise OSError("the computer algebra process was closed")
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self.restarts += 1
            self._kill()
        if time.monotonic() < self._retry_at:
            raise OSError("the computer algebra process failed to start recently")
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "control.tutor.cas", str(self.memory_mb), str(CPU_LIMIT_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)
        self._proc = proc
        if self._read_line(proc, START_LIMIT_S) != b"ready\n":
            self._kill()
            self._retry_at = time.monotonic() + RETRY_START_S
            raise OSError("the computer algebra process did not start (is SymPy installed? `make install`)")
        return proc

    @staticmethod
    def _read_line(proc: subprocess.Popen[bytes], limit_s: float) -> bytes | None:
        """One line within `limit_s`, or None (also when the child died: a memory limit hit ends it)."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + limit_s
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
            if b"\n" in buf:
                return buf[:buf.index(b"\n") + 1]
            if len(buf) > 1 << 20:
                return None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    def close(self) -> None:
        """Ends the child, also while it is still starting: a server stopping right after it started (every
        test's, or an operator's restart) would otherwise wait for SymPy's import, about a second, and burn it. A
        start or a question in progress holds the lock; killing the child makes its read end at once."""
        self._closed = True
        while not self._lock.acquire(timeout=0.01):
            proc = self._proc
            if proc is not None and proc.poll() is None:
                try:
                    proc.kill()
                except OSError:
                    pass
        try:
            self._kill()
        finally:
            self._lock.release()
        self._thread.shutdown(wait=False)


# ---- the child process ------------------------------------------------------------------------------------------


def _sympy(node: list[Any], sp: Any) -> Any:
    op = node[0]
    if op == "num":
        return sp.Rational(node[1]) if "." in node[1] else sp.Integer(node[1])
    if op == "sym":
        return sp.Symbol(node[1])
    if op == "const":
        return sp.pi if node[1] == "pi" else sp.E
    if op == "neg":
        return -_sympy(node[1], sp)
    if op == "fact":
        return sp.factorial(_sympy(node[1], sp))
    if op == "fn":
        arg = _sympy(node[2], sp)
        name = node[1]
        fn = {"sqrt": sp.sqrt, "cbrt": sp.cbrt, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "asin": sp.asin,
              "acos": sp.acos, "atan": sp.atan, "ln": sp.log, "exp": sp.exp, "abs": sp.Abs,
              "log": lambda a: sp.log(a, 10)}[name]
        return fn(arg)
    a, b = _sympy(node[1], sp), _sympy(node[2], sp)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        if b == 0:
            raise ZeroDivisionError("division by zero")
        return a / b
    if op == "pow":
        return a ** b
    raise ValueError(f"unknown node {op!r}")


def _show(expr: Any, sp: Any) -> str:
    """How a student writes it: 3x^2 + 2, sqrt(2), 3/4."""
    import re

    s = sp.sstr(expr).replace("**", "^")
    s = re.sub(r"(?<![\w.])(\d+)\*(?=[a-zA-Z(])", r"\1", s)
    s = re.sub(r"\bI\b", "i", s.replace("*", "·"))
    s = re.sub(r"\bexp\(", "e^(", s)
    return s


def _decimal(value: Any, sp: Any) -> str:
    """A plain decimal for checking and stating: 56, 0.75, 1.4142 (four places for inexact values)."""
    if value.is_Integer:
        return str(int(value))
    if value.is_Rational:
        q = int(value.q)
        while q % 2 == 0:
            q //= 2
        while q % 5 == 0:
            q //= 5
        if q == 1:  # a terminating decimal: exact
            return format(sp.Float(value, 30), "f").rstrip("0").rstrip(".")
    f = float(sp.N(value, 15))
    return f"{f:.4f}".rstrip("0").rstrip(".")


def _number(value: Any, sp: Any) -> tuple[str, list[str]]:
    """(how to state it, values to check): 3/4 = 0.75; sqrt(2) ≈ 1.4142."""
    dec = _decimal(value, sp)
    exact = _show(value, sp)
    if value.is_Integer or exact == dec:
        return dec, [dec]
    if value.is_Rational:
        return f"{exact} = {dec}" if len(dec) < 12 else f"{exact} ≈ {dec}", [dec, exact]
    if "RootOf" in exact or len(exact) > 40:  # no closed form worth reading
        return f"≈ {dec}", [dec]
    return f"{exact} ≈ {dec}", [dec, exact]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def compute(req: dict[str, Any], sp: Any) -> dict[str, Any]:
    kind, label = req["kind"], req["label"]
    exprs = req["exprs"]
    var = sp.Symbol(req["var"]) if req.get("var") else None
    args = req.get("args") or {}
    if kind == "evaluate":
        value = sp.simplify(_sympy(exprs[0], sp))
        if value.has(sp.zoo, sp.nan, sp.oo) or not value.is_number:
            raise ValueError("no finite value")
        if not value.is_real:
            raise ValueError("not a real number")
        stated, values = _number(value, sp)
        return {"statement": f"{label} = {stated}", "values": values}
    if kind == "convert":
        value = sp.Rational(exprs[0][1])
        if args["dimension"] == "temperature":
            kelvin = {"C": lambda v: v + sp.Rational("273.15"), "F": lambda v: (v - 32) * sp.Rational(5, 9)
                      + sp.Rational("273.15"), "K": lambda v: v}[args["from"]](value)
            out = {"C": lambda k: k - sp.Rational("273.15"), "F": lambda k: (k - sp.Rational("273.15"))
                   * sp.Rational(9, 5) + 32, "K": lambda k: k}[args["to"]](kelvin)
        else:
            out = value * sp.Rational(args["from"]) / sp.Rational(args["to"])
        dec = _decimal(out, sp)
        number, unit = label.rsplit(" in ", 1)
        return {"statement": f"{number} = {dec} {unit}", "values": [dec], "unit_words": args.get("dst_words", [])}
    if kind == "solve":
        eqs = [sp.Eq(_sympy(a, sp), _sympy(b, sp)) for a, b in exprs]
        names = [sp.Symbol(n) for n in args["vars"]]
        for eq in eqs:
            poly_degree = sp.Poly(eq.lhs - eq.rhs, *names).total_degree() if (eq.lhs - eq.rhs).is_polynomial(
                *names) else None
            if poly_degree is not None and poly_degree > 6:
                raise ValueError("degree above 6")
        if len(names) == 1:
            solutions = sp.solve(eqs[0], names[0], dict=False)
            real = [s for s in solutions if s.is_real]
            if not solutions:
                return {"statement": f"{label} has no solution", "values": [], "numeric": False}
            if not real:
                shown = _join([f"{names[0]} = {_show(s, sp)}" for s in solutions])
                return {"statement": f"{label} has no real solution (complex: {shown})", "values": [],
                        "numeric": False}
            real = sorted(set(real), key=lambda s: float(sp.N(s)))
            parts, values = [], []
            for s in real:
                stated, vals = _number(s, sp)
                parts.append(f"{names[0]} {stated}" if stated.startswith("≈") else f"{names[0]} = {stated}")
                values += vals
            word = "solution" if len(real) == 1 else "solutions"
            rational = [{str(names[0]): str(s)} for s in real if s.is_Rational]
            return {"statement": f"{label} has the {word} {_join(parts)}", "values": values,
                    "solutions": rational if len(rational) == len(real) else []}
        solution = sp.solve(eqs, names, dict=True)
        if not solution:
            return {"statement": f"{label} has no solution", "values": [], "numeric": False}
        if len(solution) > 1:
            raise ValueError("several solutions")
        parts, values = [], []
        for name in names:
            if name not in solution[0]:
                raise ValueError("not determined")
            stated, vals = _number(solution[0][name], sp)
            parts.append(f"{name} = {stated}")
            values += vals
        rational = all(v.is_Rational for v in solution[0].values())
        return {"statement": f"{label} has the solution {_join(parts)}", "values": values,
                "solutions": [{str(k): str(v) for k, v in solution[0].items()}] if rational else []}
    expr = _sympy(exprs[0], sp)
    if kind == "diff":
        result = sp.diff(expr, var, int(args.get("order", 1)))
        shown = _show(sp.simplify(result), sp)
        return {"statement": f"{label} is {shown}", "values": [shown], "numeric": False}  # f'(x) = ... is no identity
    if kind == "integrate":
        if args.get("definite"):
            lo, hi = _sympy(exprs[1], sp), _sympy(exprs[2], sp)
            result = sp.integrate(expr, (var, lo, hi))
            if result.has(sp.Integral) or not result.is_number:
                raise ValueError("no closed form")
            stated, values = _number(result, sp)
            return {"statement": f"{label} is {stated}", "values": values}
        result = sp.integrate(expr, var)
        if result.has(sp.Integral):
            raise ValueError("no closed form")
        shown = _show(result, sp)
        return {"statement": f"{label} is {shown} + C", "values": [shown], "numeric": False}
    if kind in ("simplify", "factor", "expand"):
        result = {"simplify": sp.simplify, "factor": sp.factor, "expand": sp.expand}[kind](expr)
        shown = _show(result, sp)
        verb = {"simplify": "simplifies to", "factor": "factors as", "expand": "expands to"}[kind]
        if kind == "simplify" and shown == label:
            return {"statement": f"{label} is already as simple as it gets", "values": [shown], "numeric": False}
        return {"statement": f"{label} {verb} {shown}", "values": [shown], "numeric": False,
                "identity_in": str(var) if var is not None else None}
    raise ValueError(f"unknown kind {kind!r}")


def worker(memory_mb: int, cpu_s: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    sys.set_int_max_str_digits(5000)
    import sympy as sp

    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            reply = compute(json.loads(line), sp)
            if len(reply["statement"]) > MAX_RESULT_CHARS:
                reply = {"error": "result too long to state"}
        except MemoryError:
            reply = {"error": "out of memory"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        sp.core.cache.clear_cache()
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]))
