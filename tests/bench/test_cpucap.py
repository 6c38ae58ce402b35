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


def test_pinning_moves_every_thread_and_later_children() -> None:
    """--server-cpus: every thread of the server's tree runs on the given CPU, and so does a child it starts
    afterwards (a worker process); the rest of the machine is left to the bench."""
    from bench.cpucap import parse_cpus, pin

    available = sorted(os.sched_getaffinity(0))
    script = ("import subprocess, sys, threading, time\n"
              "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
              "time.sleep(0.5)\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(30)\n")
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        assert pin(server.pid, {available[-1]}) >= 2  # the main thread and the sleeping one
        child = int(server.stdout.readline())  # type: ignore[union-attr]
        for pid in (server.pid, child):
            for task in os.listdir(f"/proc/{pid}/task"):
                assert os.sched_getaffinity(int(task)) == {available[-1]}, (pid, task)
    finally:
        server.kill()
    if len(available) > 1:
        assert parse_cpus(f"{available[-1]}") == {available[-1]}
        os.sched_setaffinity(0, {available[0]})  # the bench pins itself away from the server: the next target
        try:  # (a --compare run) still gets the server's CPU
            assert parse_cpus(f"{available[-1]}") == {available[-1]}
        finally:
            os.sched_setaffinity(0, set(available))
    with pytest.raises(ValueError, match="leaving one for the bench"):
        parse_cpus(",".join(str(c) for c in available))
    with pytest.raises(ValueError):
        parse_cpus("4096")
