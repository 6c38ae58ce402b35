"""The media engine's libFuzzer targets (tests/fuzz/native/fuzz_engine_*.c: AddressSanitizer, UBSan, and a cost
bound per unit of work) run for a bounded time in `make test`: FUZZ_NATIVE_SECONDS each (default 8: six targets,
about a minute in all, issue 21's bound), from their seeds in tests/fuzz/corpus/engine_*. Any crash, sanitizer
report or input over the cost bound fails. Long runs: `make fuzz-native` (the 10-million-input figures are in
bench/RESULTS.md)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fuzz.run import memory_flags

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "corpus"
SECONDS = int(os.environ.get("FUZZ_NATIVE_SECONDS", 8))
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.c"))


@pytest.fixture(scope="module")
def built() -> Path:
    subprocess.run(["make", "-s", f"-j{os.cpu_count() or 1}", "-C", str(HERE)], check=True)  # 9 programs
    return HERE / "build"


@pytest.mark.parametrize("name", TARGETS)
def test_native_fuzz_target_finds_nothing(name: str, built: Path, tmp_path: Path) -> None:
    seeds = CORPUS / name
    env = {**os.environ, "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    proc = subprocess.run(
        [str(built / f"fuzz_{name}"), f"-max_total_time={SECONDS}", "-max_len=1500", "-timeout=10",
         *memory_flags(), f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(tmp_path), str(seeds)],
        capture_output=True, text=True, errors="replace", env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, _finding(output)
    runs = re.search(r"stat::number_of_executed_units: (\d+)", output)
    assert runs and int(runs[1]) > len(list(seeds.iterdir())) + 1000, output[-2000:]


def _finding(output: str) -> str:
    """What the fuzzer found, first: its cost-bound or sanitizer verdict can sit above a long stack trace, past
    the tail an assertion message keeps."""
    verdict = [line for line in output.splitlines()
               if line.startswith("COST BOUND") or "ERROR:" in line or "runtime error" in line or "SUMMARY:" in line]
    return "\n".join(verdict) + "\n...\n" + output[-3000:]


def test_the_cost_bound_finds_a_costly_input_and_forgives_a_slow_spell(built: Path) -> None:
    """fuzz_common.h's bound, both ways (selftest_cost.c): an input that costs ten times the bound every time it
    runs (what issue 13's hostile RTCP cost) is reported; an input over the bound on four runs in a row and cheap
    when it is timed again 2,000 inputs later (a loaded machine's slow spell) is not."""
    costly = subprocess.run([str(built / "selftest_cost"), "costly"], capture_output=True, text=True, timeout=60)
    assert costly.returncode != 0
    assert re.search(r"COST BOUND: costly spent \d+ ns for 1 unit\(s\), then \d+ ns", costly.stderr), costly.stderr
    spell = subprocess.run([str(built / "selftest_cost"), "spell"], capture_output=True, text=True, timeout=60)
    assert spell.returncode == 0, spell.stderr
    assert "no finding after 4021 inputs" in spell.stdout


@pytest.mark.parametrize("sanitizer", ["tsan", "asan"])
def test_the_reader_thread_races_nothing(sanitizer: str, built: Path) -> None:
    """The engine's reader thread (sfu/engine/native/reader.c) forwarding routed SRTP and reading feedback while
    another thread changes routes, streams, subscribers, paths and the socket set, and a third takes its queue:
    ThreadSanitizer finds no data race, AddressSanitizer + UBSan no memory error (stress_reader.c). The run itself
    checks that packets were forwarded, taken and fed back, so a harness that did nothing fails."""
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1",
           "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    proc = subprocess.run([str(built / f"stress_reader_{sanitizer}"), "3"], capture_output=True, text=True,
                          errors="replace", env=env, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "WARNING" not in output and "ERROR" not in output, output[-4000:]
    forwarded = re.search(r"(\d+) forwarded, (\d+) feedback", output)
    assert forwarded and int(forwarded[1]) > 100 and int(forwarded[2]) > 100, output
