"""Runs the fuzz targets: `python -m tests.fuzz.run [--seconds S | --runs N] [--json FILE] [TARGET ...]`.

`make fuzz` runs every target for FUZZ_SECONDS (default 60) each; `make test` runs each for a few seconds through
tests/fuzz/test_fuzz.py. Each target starts from its committed seeds (tests/fuzz/corpus/NAME, read only) plus a
scratch corpus for what it discovers; a finding (an exception its caller would not catch, or an input over the
target's cost bound) is written to ARTIFACTS/NAME-crash-... and makes the run fail. A fixed finding's input goes
into tests/fuzz/corpus/NAME so every later run replays it.

Two kinds of targets plug in here:
- Python targets: tests/fuzz/targets/NAME.py under atheris (see tests/fuzz/harness.py for the contract).
- Native targets: `make -C tests/fuzz/native` (if tests/fuzz/native/Makefile exists) must build libFuzzer
  executables (clang -fsanitize=fuzzer,address,undefined) named tests/fuzz/native/build/fuzz_NAME; each is run here
  with the same flags, seeded from tests/fuzz/corpus/NAME when that folder exists (so a native parser shares the
  seeds of its Python reference), with ASAN_OPTIONS making any sanitizer report a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
NATIVE = HERE / "native"
# Python targets and the largest input each sees in a class (UDP payloads fit an MTU; text has its own limits).
TARGETS = {"rtp": 1500, "vp8": 1500, "h264": 1500, "rtcp": 1500, "twcc": 1500, "sdp": 8192, "signaling": 4096,
           "rest": 4096, "recorder_feed": 8192, "rtcserver": 2048}


@dataclass
class Result:
    target: str
    kind: str  # python or native
    inputs: int = 0
    seconds: float = 0.0
    exec_per_s: int = 0
    coverage: int = 0  # libFuzzer's "cov:" (edges; for Python targets, atheris' bytecode edges)
    corpus: int = 0
    findings: list[str] = field(default_factory=list)
    returncode: int = 0


def native_targets() -> dict[str, Path]:
    """Builds the native fuzzers if the engine provides them; {name: executable}."""
    if not (NATIVE / "Makefile").exists():
        return {}
    subprocess.run(["make", "-s", f"-j{os.cpu_count() or 1}", "-C", str(NATIVE)], check=True)
    build = NATIVE / "build"
    return {p.name.removeprefix("fuzz_"): p for p in sorted(build.glob("fuzz_*")) if os.access(p, os.X_OK)}


def _parse(result: Result, output: str) -> None:
    for line in output.splitlines():
        m = re.match(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED).*?cov: (\d+).*?corp: (\d+)", line)
        if m:
            result.inputs, result.coverage, result.corpus = int(m[1]), int(m[2]), int(m[3])
        m = re.match(r"stat::number_of_executed_units: (\d+)", line)
        if m:
            result.inputs = int(m[1])
        m = re.search(r"Test unit written to (\S+)", line)
        if m:
            result.findings.append(f"{m[1]}{_exception(output)}")


def _exception(output: str) -> str:
    """': ' and the last line of the Python exception atheris printed for a finding (CostExceeded, a parser's
    error), so a failing test says what was found; empty for a native finding (its sanitizer report is in the
    log)."""
    _, found, after = output.partition("=== Uncaught Python exception: ===")
    lines = [line for line in after.splitlines() if line.strip()] if found else []
    summary = next((line for line in lines if not line.startswith((" ", "Traceback"))), "")
    return f": {summary.strip()}" if summary else ""


RSS_BUDGET_MB = 2048  # what a target may use on top of what it started with


def memory_flags() -> list[str]:
    """libFuzzer's memory limits for a fuzzer started from this process. Linux carries a process's peak RSS into
    the children it forks (getrusage's ru_maxrss survives fork and exec), and libFuzzer compares that peak with
    -rss_limit_mb: started late in a long pytest run (whose peak had passed 2 GB), every target reported an
    out-of-memory at its first input. So the limit is the budget on top of the peak the child inherits."""
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return [f"-rss_limit_mb={inherited + RSS_BUDGET_MB}", f"-malloc_limit_mb={RSS_BUDGET_MB}"]


def run_one(name: str, command: list[str], seeds: Path | None, seconds: float | None, runs: int | None,
            max_len: int, artifacts: Path, kind: str, env: dict[str, str] | None = None) -> Result:
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    try:
        flags = [f"-max_len={max_len}", f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1",
                 "-timeout=120", *memory_flags()]  # wall-clock hang guard only: cost is bounded in CPU time
        if runs is not None:
            flags.append(f"-runs={runs}")
        if seconds is not None:
            flags.append(f"-max_total_time={max(1, round(seconds))}")
        dirs = [str(scratch)] + ([str(seeds)] if seeds is not None and seeds.is_dir() else [])
        started = time.monotonic()
        proc = subprocess.run([*command, *flags, *dirs], capture_output=True, text=True, errors="replace",
                              cwd=ROOT, env=env)
        result = Result(name, kind, seconds=round(time.monotonic() - started, 1), returncode=proc.returncode)
        _parse(result, proc.stdout + proc.stderr)
        if result.findings:  # what libFuzzer and the target said about it: atheris prints the exception (the
            # traceback, the cost) on stdout, libFuzzer its progress and the input on stderr; each kept, not one
            # cut from the front of both (that lost the traceback)
            (artifacts / f"{name}.log").write_text(f"{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-12000:]}")
        if proc.returncode != 0 and not result.findings:
            tail = (proc.stdout + proc.stderr)[-3000:]
            result.findings.append(f"exit {proc.returncode}: {tail}")
        result.exec_per_s = int(result.inputs / result.seconds) if result.seconds else 0
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_python(name: str, seconds: float | None, runs: int | None, artifacts: Path) -> Result:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return run_one(name, [sys.executable, "-m", "tests.fuzz.main", name], CORPUS / name, seconds, runs,
                   TARGETS[name], artifacts, "python", env)


def run_native(name: str, exe: Path, seconds: float | None, runs: int | None, artifacts: Path) -> Result:
    env = {**os.environ, "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    return run_one(name, [str(exe)], CORPUS / name, seconds, runs, TARGETS.get(name, 4096), artifacts, "native",
                   env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help="names (default: every Python and native target)")
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 60)))
    parser.add_argument("--runs", type=int, help="stop each target after this many inputs (instead of --seconds)")
    parser.add_argument("--artifacts", type=Path, default=Path(tempfile.gettempdir()) / "classcast-fuzz")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-native", action="store_true")
    args = parser.parse_args(argv)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    native = {} if args.no_native else native_targets()
    names = args.targets or [*TARGETS, *(f"native:{n}" for n in native)]
    seconds = None if args.runs is not None else args.seconds
    results = []
    print(f"{'target':22} {'inputs':>10} {'exec/s':>8} {'seconds':>8} {'cov':>6} {'corpus':>6}  findings")
    for name in names:
        if name.startswith("native:"):
            result = run_native(name[7:], native[name[7:]], seconds, args.runs, args.artifacts)
        else:
            result = run_python(name, seconds, args.runs, args.artifacts)
        results.append(result)
        label = f"{result.kind}:{result.target}" if result.kind == "native" else result.target
        print(f"{label:22} {result.inputs:>10} {result.exec_per_s:>8} {result.seconds:>8} {result.coverage:>6} "
              f"{result.corpus:>6}  {len(result.findings) or '-'}", flush=True)
        for finding in result.findings:
            print(f"    finding: {finding}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
