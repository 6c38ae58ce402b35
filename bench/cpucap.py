"""A CPU cap for the server under test, so that its knee is reachable on a small machine.

On this 2-core machine the bench's own subscribers (Python, one decrypting peer each) run out of CPU before any of
the servers does, so the knee and the figures "at 80% of the knee" (issues 14 and 21) were never reached. Capping
the server process tree to a fraction of one core (a cgroup's CFS quota: `cpu.cfs_quota_us` per `cpu.cfs_period_us`)
brings its knee down to where the subscribers still keep up; subscribers per core is then the knee divided by the
CPU the server used there, as without the cap. The same cap applies to every target of a `--compare` run.

A short period (10 ms) keeps the throttling fine-grained: a server that spends its quota early in a period waits at
most the rest of that period, which shows in its latency as it would on a busy core, not as 100 ms stalls.
cgroup v2 (`cpu.max`) is used where mounted as the unified hierarchy, else cgroup v1's cpu controller; both need
root, as the network namespaces of tests/net do.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

PERIOD_US = 10_000


def _v1() -> tuple[Path, str | None] | None:
    """cgroup v1's cpu hierarchy, and the private mount made for it (None: the system's). `ip netns exec` (the
    bench re-runs itself in a network namespace for Janus and pion) remounts /sys without the cgroup mounts; its
    mount namespace is private, so the same hierarchy is mounted again at a temporary folder."""
    root = Path("/sys/fs/cgroup/cpu")
    if (root / "cpu.cfs_quota_us").exists():
        return root, None
    controllers = Path("/proc/cgroups")
    if not controllers.exists() or not any(line.split()[:1] == ["cpu"]
                                           for line in controllers.read_text().splitlines()):
        return None
    folder = tempfile.mkdtemp(prefix="classcast-cgroup-")
    if subprocess.run(["mount", "-t", "cgroup", "-o", "cpu", "cgroup", folder], capture_output=True).returncode:
        os.rmdir(folder)
        return None
    return Path(folder), folder


def _v2() -> Path | None:
    root = Path("/sys/fs/cgroup")
    return root if (root / "cgroup.controllers").exists() and "cpu" in (root / "cgroup.controllers").read_text() \
        else None


def _tree(pid: int) -> list[int]:
    """The process and its descendants (children of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def pin(pid: int, cpus: set[int]) -> int:
    """Every thread of the process tree on `cpus` (threads and children born later inherit it); returns how many
    threads were pinned. The server gets its own core(s) and the bench (publisher, subscribers) the others, so
    neither waits for the other's CPU: on two shared cores a packet's latency otherwise measured when the bench's
    own processes let the server run."""
    pinned = 0
    for p in _tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), cpus)
                pinned += 1
    return pinned


def parse_cpus(text: str) -> set[int]:
    """'1' or '2,3' or '2-3': CPUs of this machine, and at least one left over for the bench."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    available = set(range(os.cpu_count() or 1))  # the machine's, not this process's: the bench pins itself too
    if not cpus or not cpus <= available or not available - cpus:
        raise ValueError(f"--server-cpus {text!r}: CPUs among {sorted(available)}, leaving one for the bench")
    return cpus


class CpuCap:
    """Caps a process tree to `cores` of CPU (0.25 = a quarter of one core) until `release`."""

    def __init__(self, pid: int, cores: float, name: str) -> None:
        if not 0.01 <= cores <= 64:
            raise ValueError("the server's CPU cap must be between 0.01 and 64 cores")
        quota = int(cores * PERIOD_US)
        self.mount: str | None = None
        v2 = _v2()
        v1 = _v1() if v2 is None else None
        if v2 is not None:
            (v2 / "cgroup.subtree_control").write_text("+cpu")
            self.root, self.dir = v2, v2 / f"classcast-bench-{os.getpid()}-{name}"
            self.dir.mkdir(exist_ok=True)
            (self.dir / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        elif v1 is not None:
            (root, self.mount) = v1
            self.root, self.dir = root, root / f"classcast-bench-{os.getpid()}-{name}"
            self.dir.mkdir(exist_ok=True)
            (self.dir / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            raise RuntimeError("no cgroup cpu controller here: --server-cpu needs one (and root)")
        self.cores = cores
        for p in _tree(pid):  # later children are born inside
            with contextlib.suppress(OSError):
                (self.dir / "cgroup.procs").write_text(str(p))

    def throttled_seconds(self) -> float:
        """How long the cap held the server back so far (cpu.stat)."""
        stat = dict(line.split() for line in (self.dir / "cpu.stat").read_text().splitlines() if line.strip())
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def release(self) -> None:
        """Moves whatever is left back to the root and removes the group. A process killed just before may still
        be in it, dying slowly under the group's quota (rmdir says EBUSY): tried again for up to 2 s."""
        deadline = time.monotonic() + 2.0
        while True:
            with contextlib.suppress(OSError):
                for p in (self.dir / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.root / "cgroup.procs").write_text(p)
            try:
                self.dir.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        if self.mount is not None:
            subprocess.run(["umount", self.mount], capture_output=True)
            with contextlib.suppress(OSError):
                os.rmdir(self.mount)
