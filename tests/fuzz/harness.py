"""What every fuzz target shares: the contract it checks and the cost bound it measures.

A target module (tests/fuzz/targets/NAME.py) defines

    INSTRUMENT = ("sfu.rtp", ...)   packages whose coverage guides the fuzzer (imported under atheris' hook)
    BOUND_MS = 5.0                  CPU time one input may cost, measured here, in the instrumented process
    STATELESS = True                the same input always costs the same (a slow input is measured again)
    def setup() -> None             optional: build what the target needs once per process
    def one_input(data: bytes)      feed the parser as its caller does; raise only for what the caller would not
                                    catch (the parser's documented errors are caught inside)

A target fails on an exception escaping `one_input` (libFuzzer records the input as a crash artifact) and on an
input whose processing costs more than BOUND_MS of this thread's CPU time (`CostExceeded`). Thread CPU time, not
wall time, so other processes on a loaded machine do not make a target fail; the garbage collector's passes are
not counted (a full collection of a long run's heap costs what the heap holds, not what the input does); and a
stateless target's slow input is run four more times, spread over two seconds, and judged by its cheapest run.
The bounds are set well above what valid inputs cost under instrumentation (which slows Python code several
times), and well below what the defects issue 13 found cost (a TWCC feedback expanding 65,535 statuses).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from types import ModuleType

# A slow input of a stateless target is run again after each of these pauses and judged by its cheapest run.
RERUN_PAUSES_S = (0.05, 0.2, 0.5, 1.2)


class CostExceeded(Exception):
    """An input took more CPU time than its target's bound: the parser's cost is not bounded by what it holds."""


def bounded(target: ModuleType) -> Callable[[bytes], None]:
    """The target's `one_input` wrapped with its cost bound."""
    one_input: Callable[[bytes], None] = target.one_input
    name = target.__name__.rsplit(".", 1)[-1].upper()
    # FUZZ_BOUND_MS_<TARGET> raises a bound for a run that looks past a known, reported cost finding.
    bound = float(os.environ.get(f"FUZZ_BOUND_MS_{name}", target.BOUND_MS)) / 1000
    stateless = bool(getattr(target, "STATELESS", True))
    clock = time.thread_time
    collecting = [0.0, 0.0]  # [started at, total]: the garbage collector's time is the heap's, not the input's

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = clock()
        else:
            collecting[1] += clock() - collecting[0]

    gc.callbacks.append(on_gc)

    def measure(data: bytes) -> float:
        collecting[1] = 0.0
        start = clock()
        one_input(data)
        return clock() - start - collecting[1]

    def run(data: bytes) -> None:
        cost = measure(data)
        if cost <= bound:
            return
        costs = [cost]
        if stateless:
            for pause in RERUN_PAUSES_S:
                # apart in time: a virtual machine's stolen or throttled CPU is counted as the thread's own, so
                # runs close together can all land in one such stretch (CI runs twice reported an RTP input that
                # costs 0.2 ms, the second time 5.0-5.5 ms in five runs 20 ms apart); an input that is really
                # slow is slow every time, so spreading the runs over two seconds costs a real finding nothing
                time.sleep(pause)
                costs.append(measure(data))
        cost = min(costs)
        if cost > bound:
            raise CostExceeded(f"{len(data)}-byte input cost {cost * 1000:.1f} ms of CPU, the bound is "
                               f"{bound * 1000:.1f} ms (runs: {', '.join(f'{c * 1000:.1f}' for c in costs)} ms)")

    return run
