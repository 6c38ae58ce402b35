"""`classcast serve` with tracemalloc on, and snapshots on request (bench only: what a subscriber costs in Python).

Start the server through this module, run `classcast-bench fanout --target URL --server-pid PID` against it, and
touch `MEMPROBE_DIR/NAME.req` at each step: the server collects garbage and writes `NAME.pickle` (a tracemalloc
snapshot, object counts by type, its RSS, the garbage collector's pauses so far by generation).
`python -m bench.memprobe diff A.pickle B.pickle N` prints what the N subscribers joined between the two snapshots
cost, per subscriber, by allocating line and by type.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import pickle
import sys
import time
import tracemalloc
from typing import Any

POLL_S = 0.3
_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}  # generation -> durations of its collections (s)
_started: list[float] = []


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        _pauses[info["generation"]].append(time.perf_counter() - _started[0])


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def _snapshot(directory: str, tag: str) -> None:
    gc.collect()
    snap = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
    types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    tmp = os.path.join(directory, tag + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"snap": snap, "types": types, "rss_kb": _rss_kb(),
                     "gc_pauses": {g: list(p) for g, p in _pauses.items()}}, f)
    os.rename(tmp, os.path.join(directory, tag + ".pickle"))


async def _watch(directory: str) -> None:
    while True:
        await asyncio.sleep(POLL_S)
        for name in os.listdir(directory):
            if name.endswith(".req"):
                os.unlink(os.path.join(directory, name))
                _snapshot(directory, name[:-4])


def serve(argv: list[str]) -> int:
    import control.app
    from control.cli import main as cli_main

    directory = os.environ.get("MEMPROBE_DIR", "memprobe")
    os.makedirs(directory, exist_ok=True)
    frames = int(os.environ.get("MEMPROBE_FRAMES", "8"))
    if frames > 0:  # 0: no tracemalloc (it slows the server down 2-3x), object counts, RSS and pauses only
        tracemalloc.start(frames)
    gc.callbacks.append(_gc_callback)
    create_app = control.app.create_app

    async def create_app_with_probe(*args: Any, **kwargs: Any) -> Any:
        app = await create_app(*args, **kwargs)

        async def start(app: Any) -> None:
            app["memprobe"] = asyncio.get_running_loop().create_task(_watch(directory))

        app.on_startup.append(start)
        return app

    control.app.create_app = create_app_with_probe  # control.cli imports it when serving
    return cli_main(argv)


def diff(before: str, after: str, n: int, top: int = 30) -> None:
    with open(before, "rb") as f:
        a = pickle.load(f)
    with open(after, "rb") as f:
        b = pickle.load(f)
    print(f"RSS per subscriber (tracemalloc's own overhead included): {(b['rss_kb'] - a['rss_kb']) / n:.0f} kB")
    if a["snap"] is not None and b["snap"] is not None:
        stats = b["snap"].compare_to(a["snap"], "lineno")
        print(f"traced Python memory per subscriber: {sum(s.size_diff for s in stats) / n / 1024:.1f} kB")
        for stat in stats[:top]:
            print(f"{stat.size_diff / n / 1024:8.2f} kB {stat.count_diff / n:7.1f} objects  {stat.traceback}")
    for generation, pauses in sorted(b.get("gc_pauses", {}).items()):
        if pauses:
            print(f"gc generation {generation}: {len(pauses)} collections so far, longest {max(pauses) * 1000:.1f} ms, "
                  f"{sum(pauses):.2f} s in all")
    print("objects per subscriber, by type:")
    counts = {k: (v - a["types"].get(k, 0)) / n for k, v in b["types"].items()}
    for name, count in sorted(counts.items(), key=lambda item: -item[1])[:top]:
        print(f"{count:8.1f} {name}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["diff"]:
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(serve(sys.argv[1:]))
