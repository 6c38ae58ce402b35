"""Every fuzz target runs for a few seconds in `make test` (FUZZ_TEST_SECONDS, default 2): its seeds, the crash
inputs of past findings kept in its corpus, and whatever the fuzzer reaches from them. Long runs: `make fuzz`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz.run import CORPUS, NATIVE, TARGETS, native_targets, run_native, run_python
from tests.sfu.test_bounds import SPS_READING_UNBOUNDED

SECONDS = float(os.environ.get("FUZZ_TEST_SECONDS", 2))
# The h264 target finds the SPS cost defect within seconds while sfu/frames.py still has it (reported for i21, who
# owns sfu/; fixed on branch i21): expected to fail, not strictly (a 2 s run may miss it), and only until then.
_H264 = pytest.param("h264", marks=pytest.mark.xfail(SPS_READING_UNBOUNDED, strict=False,
                                                     reason="sfu/frames.py SPS reading unbounded (board 07:45)"))
CASES = [*(_H264 if name == "h264" else name for name in TARGETS),
         *(["native"] if (NATIVE / "Makefile").exists() else [])]


@pytest.mark.parametrize("name", CASES)
def test_fuzz_target_finds_nothing(name: str, tmp_path: Path) -> None:
    if name == "native":
        results = [run_native(n, exe, SECONDS, None, tmp_path) for n, exe in native_targets().items()]
        assert results, "tests/fuzz/native/Makefile built no fuzz_* executable"
    else:
        results = [run_python(name, SECONDS, None, tmp_path)]
    for result in results:
        assert not result.findings, "\n".join(result.findings)
        seeds = len(list((CORPUS / result.target).iterdir())) if (CORPUS / result.target).is_dir() else 0
        assert result.inputs > max(seeds, 100), f"{result.target} ran only {result.inputs} inputs"
