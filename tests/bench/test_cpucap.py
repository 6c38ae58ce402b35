"""bench/cpucap.py: the server under test capped to a fraction of a core (a cgroup CFS quota)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.cpucap import CpuCap


def _cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_capped_process_tree_gets_its_share_and_no_more() -> None:
    """A busy process and the child it starts after the cap (as a server's workers are) together get about the
    capped quarter of a core, the cap says it throttled them, and releasing it removes the group. Needs root, as
    tests/net does (make test runs as root)."""
    busy = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                             "time.sleep(0.3)\n"
                             "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
                             "while True: pass"])
    try:
        cap = CpuCap(busy.pid, 0.25, "test")
        start = time.monotonic()
        time.sleep(2.0)
        children = [int(c) for c in open(f"/proc/{busy.pid}/task/{busy.pid}/children").read().split()]
        assert len(children) == 1
        used = _cpu(busy.pid) + _cpu(children[0])
        elapsed = time.monotonic() - start
        assert used <= 0.25 * elapsed * 1.3 + 0.05, (used, elapsed)  # two busy loops, a quarter core in all
        assert used >= 0.25 * elapsed * 0.5, (used, elapsed)
        assert cap.throttled_seconds() > 0.5
        for child in children:
            os.kill(child, 9)
    finally:
        busy.kill()
        busy.wait()
    cap.release()
    assert not cap.dir.exists()
    with pytest.raises(ValueError, match=r"between 0\.01 and 64 cores"):
        CpuCap(os.getpid(), 0, "bad")
