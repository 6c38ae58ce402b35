"""The fuzz harness's own contract: the cost bound catches an input that is slow every time, not one run that a
busy virtual machine made slow, and a finding's report says what the target raised."""

from __future__ import annotations

import time
from types import ModuleType

import pytest

from tests.fuzz.harness import CostExceeded, bounded
from tests.fuzz.run import Result, _parse


def _target(one_input: object, bound_ms: float = 2.0) -> ModuleType:
    module = ModuleType("tests.fuzz.targets.fake")
    module.one_input = one_input  # type: ignore[attr-defined]
    module.BOUND_MS = bound_ms  # type: ignore[attr-defined]
    module.STATELESS = True  # type: ignore[attr-defined]
    return module


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_an_input_slow_every_time_is_a_finding_with_each_runs_cost() -> None:
    run = bounded(_target(lambda data: _spin(0.01)))
    with pytest.raises(CostExceeded, match=r"3-byte input cost 1\d\.\d ms of CPU, the bound is 2\.0 ms \(runs: "):
        run(b"abc")


def test_one_slow_run_of_a_cheap_input_is_not_a_finding() -> None:
    calls = []

    def one_input(data: bytes) -> None:
        calls.append(data)
        if len(calls) == 1:  # what a stretch of stolen CPU looks like from inside the thread
            _spin(0.01)

    bounded(_target(one_input))(b"abc")
    assert len(calls) == 5  # measured again, four times, and judged by the cheapest


def test_a_slow_stretch_of_half_a_second_is_not_a_finding() -> None:
    """A CI run had all five runs of a 0.2 ms input at 5.0-5.5 ms, 20 ms apart: the machine's slow stretch
    outlasted them. Runs spread over two seconds get past one."""
    started = time.monotonic()

    def one_input(data: bytes) -> None:
        if time.monotonic() - started < 0.5:
            _spin(0.01)

    bounded(_target(one_input))(b"abc")


def test_a_findings_report_names_the_exception() -> None:
    """atheris prints the exception on stdout and libFuzzer the input on stderr: the finding carries both."""
    stdout = (" === Uncaught Python exception: ===\nCostExceeded: 44-byte input cost 6.1 ms of CPU\n"
              "Traceback (most recent call last):\n  File \"harness.py\", line 1, in run\n")
    stderr = ("#10871\tREDUCE cov: 58 ft: 160 corp: 55/4094b lim: 232 exec/s: 10871 rss: 2750Mb L: 44/229\n"
              "==3281== ERROR: libFuzzer: fuzz target exited\n"
              "artifact_prefix='/tmp/x/rtp-'; Test unit written to /tmp/x/rtp-crash-ec49\n")
    result = Result("rtp", "python")
    _parse(result, stdout + stderr)
    assert result.findings == ["/tmp/x/rtp-crash-ec49: CostExceeded: 44-byte input cost 6.1 ms of CPU"]
    assert result.inputs == 10871
    native = Result("engine_rtp", "native")
    _parse(native, stderr)
    assert native.findings == ["/tmp/x/rtp-crash-ec49"]
