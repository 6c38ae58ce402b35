"""The soak, run for seconds: students come and go around a live lecture and the server gives back what they took.

The 30-minute curve (growth per join) is in bench/RESULTS.md; here the short run checks that churn works end to
end and that a server with everyone gone holds no more sockets or tasks than before anyone came.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_short_soak_churns_and_the_server_gives_everything_back(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "-m", "bench.fanout", "soak", "--minutes", "0.3", "--period", "0.4",
                          "--sample-seconds", "6", "--warmup", "0", "--grace", "2", "--json", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    counters = report["counters"]
    assert counters["failures"] == 0, report["errors"]
    assert counters["joins"] >= 10 and counters["leaves"] >= 1 and counters["drops"] >= 1
    assert counters["reconnects"] >= 1
    samples = report["samples"]
    assert len(samples) >= 4 and samples[-1]["after_all_left"]
    assert all(s["receiving"] == s["present"] for s in samples[1:-1]), "every present student gets media"
    first, last = samples[0], samples[-1]
    assert last["present"] == 0
    # Everyone gone: the teacher's sockets and tasks are what is left, as before the first student came.
    assert last["fds"] <= first["fds"] + 2, (first, last)
    assert last["tasks"] <= first["tasks"] + 2, (first, last)
    # Threads: the event loop's executor may have grown a worker or two (a pool, bounded), never one per join.
    assert last["threads"] <= first["threads"] + 4 < first["threads"] + counters["joins"], (first, last)
