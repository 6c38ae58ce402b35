"""Every fuzz target runs for a few seconds in `make test` (FUZZ_TEST_SECONDS, default 2): its seeds, the crash
inputs of past findings kept in its corpus, and whatever the fuzzer reaches from them. Long runs: `make fuzz`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz.run import CORPUS, TARGETS, run_python

SECONDS = float(os.environ.get("FUZZ_TEST_SECONDS", 2))
# The engine's native targets have their own test (tests/fuzz/native/test_native_fuzz.py, AddressSanitizer).
CASES = list(TARGETS)


@pytest.mark.parametrize("name", CASES)
def test_fuzz_target_finds_nothing(name: str, tmp_path: Path) -> None:
    results = [run_python(name, SECONDS, None, tmp_path)]
    for result in results:
        assert not result.findings, "\n".join(result.findings)
        seeds = len(list((CORPUS / result.target).iterdir())) if (CORPUS / result.target).is_dir() else 0
        assert result.inputs > max(seeds, 100), f"{result.target} ran only {result.inputs} inputs"
