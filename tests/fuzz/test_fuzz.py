"""Every fuzz target runs for a few seconds in `make test` (FUZZ_TEST_SECONDS, default 2): its seeds, the crash
inputs of past findings kept in its corpus, and whatever the fuzzer reaches from them. Long runs: `make fuzz`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz.run import CORPUS, NATIVE, TARGETS, native_targets, run_native, run_python

SECONDS = float(os.environ.get("FUZZ_TEST_SECONDS", 2))
CASES = [*TARGETS, *(["native"] if (NATIVE / "Makefile").exists() else [])]


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
