"""The soak: one lecture for M minutes with students joining, leaving, dropping and reconnecting all along.

    classcast-bench soak --minutes 30 --json soak.json

A real `classcast serve` (through bench/soak_probe.py, which adds a route reporting its asyncio tasks) on
127.0.0.1; the fan-out benchmark's browser-like teacher (three simulcast layers with MID/RID, Opus, answering NACK
and PLI); students as raw aiortc peers (ICE, DTLS, SRTP, receiver reports; no decoding) that come and go: every
`--period` seconds one of join (a new uid), leave (says so), drop (vanishes: the server's grace period runs out)
or reconnect (a dropped student back within the grace period, same uid). The server's RSS, open file
descriptors and threads (of its whole process tree: the control process, its SFU workers, the recorder) and the
control process's asyncio tasks are sampled every `--sample-seconds` (60: each minute).

The figure of merit is growth per join after warm-up: (RSS at the end - RSS at the first sample after warm-up) /
joins in between. A server that keeps something per join (a table, a task, a socket) shows up here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.fanout import Publisher, _children, proc_rss
from bench.targets.classcast import ClasscastTarget, Server, Signal, subscribe
from sfu.ice import IceConfig
from sfu.peer import Peer

ICE = IceConfig(hosts=("127.0.0.1",))


@dataclass
class Student:
    uid: str
    info: tuple[str, str]
    peer: Peer | None = None
    signal: Signal | None = None
    packets: int = 0
    dropped_at: float | None = None

    def on_rtp(self, _data: bytes, _arrival: float) -> None:
        self.packets += 1


@dataclass
class Counters:
    joins: int = 0
    leaves: int = 0
    drops: int = 0
    reconnects: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


def proc_fds(pid: int) -> int:
    """Open file descriptors of the server's process tree (its SFU workers hold the media's)."""
    total = 0
    for p in _children(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


def proc_threads(pid: int) -> int:
    """Threads of the server's process tree."""
    total = 0
    for p in _children(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            total += next((int(line.split()[1]) for line in f if line.startswith("Threads:")), 0)
    return total


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.counters = Counters()
        self.present: list[Student] = []
        self.dropped: list[Student] = []
        self.samples: list[dict[str, Any]] = []
        self.next_uid = 0

    async def _open(self, student: Student, session: aiohttp.ClientSession) -> None:
        student.peer = Peer(on_rtp=student.on_rtp, ice=ICE, name=f"soak:{student.uid}")
        student.signal = await subscribe(session, student.info, student.peer)
        await asyncio.wait_for(student.peer.wait_connected(), 20)

    async def _close(self, student: Student, leave: bool) -> None:
        if leave and student.signal is not None and student.signal.ws is not None:
            with contextlib.suppress(Exception):
                await student.signal.send({"type": "leave"})
        if student.signal is not None:
            await student.signal.close()
        if student.peer is not None:
            await student.peer.close()
        student.peer, student.signal = None, None

    async def join(self, session: aiohttp.ClientSession, target: ClasscastTarget) -> None:
        n = self.next_uid
        self.next_uid += 1
        [info] = await target.join_infos(session, n, n + 1)
        student = Student(f"s{n}", info)
        try:
            await self._open(student, session)
        except Exception as exc:  # counted: a soak reports failures, it does not stop at the first
            self.counters.failures += 1
            self.counters.errors.append(f"join {student.uid}: {exc!r}"[:200])
            await self._close(student, leave=False)
            return
        self.counters.joins += 1
        self.present.append(student)

    async def step(self, session: aiohttp.ClientSession, target: ClasscastTarget) -> None:
        now = time.monotonic()
        self.dropped = [s for s in self.dropped if now - (s.dropped_at or now) < self.args.grace]
        choices = ["join"] * (3 if len(self.present) < self.args.students else 1)
        if self.present:
            choices += ["leave", "drop"]
        if self.dropped:
            choices.append("reconnect")
        action = self.rng.choice(choices)
        if action == "join":
            await self.join(session, target)
        elif action in ("leave", "drop"):
            student = self.present.pop(self.rng.randrange(len(self.present)))
            await self._close(student, leave=action == "leave")
            if action == "leave":
                self.counters.leaves += 1
            else:
                self.counters.drops += 1
                student.dropped_at = now
                self.dropped.append(student)
        else:
            student = self.dropped.pop(self.rng.randrange(len(self.dropped)))
            try:
                await self._open(student, session)
            except Exception as exc:
                self.counters.failures += 1
                self.counters.errors.append(f"reconnect {student.uid}: {exc!r}"[:200])
                await self._close(student, leave=False)
                return
            self.counters.reconnects += 1
            self.present.append(student)

    async def sample(self, session: aiohttp.ClientSession, server: Server, started: float) -> dict[str, Any]:
        pid = server.proc.pid
        async with session.get(server.base + "/_bench/runtime") as resp:
            runtime = await resp.json()
        receiving = sum(1 for s in self.present if s.packets > 0)
        row = {"minute": round((time.monotonic() - started) / 60, 2), "rss_kb": proc_rss(pid) // 1024,
               "fds": proc_fds(pid), "threads": proc_threads(pid), "tasks": runtime["tasks"],
               "joins": self.counters.joins, "present": len(self.present), "receiving": receiving}
        self.samples.append(row)
        print(f"{row['minute']:>7} {row['rss_kb']:>9} {row['fds']:>5} {row['threads']:>7} {row['tasks']:>6} "
              f"{row['joins']:>6} {row['present']:>7} {row['receiving']:>9}", flush=True)
        return row

    async def run(self) -> dict[str, Any]:
        args = self.args
        server = await asyncio.get_running_loop().run_in_executor(
            None, lambda: Server("127.0.0.1", entry="bench.soak_probe",
                                 env={"CLASSCAST_RECONNECT_GRACE": str(args.grace)}))
        target = ClasscastTarget("127.0.0.1", url=server.base, org=server.org, server_pid=server.proc.pid)
        publisher = Publisher("lecture", "h264", ICE)
        try:
            async with aiohttp.ClientSession() as session:
                await publisher.start(session, target)
                print(f"{'minute':>7} {'rss_kb':>9} {'fds':>5} {'threads':>7} {'tasks':>6} {'joins':>6} "
                      f"{'present':>7} {'receiving':>9}", flush=True)
                started = time.monotonic()
                await self.sample(session, server, started)
                end = started + args.minutes * 60
                next_sample = started + args.sample_seconds
                while time.monotonic() < end:
                    await self.step(session, target)
                    await asyncio.sleep(args.period)
                    if time.monotonic() >= next_sample:
                        await self.sample(session, server, started)
                        next_sample += args.sample_seconds
                for student in self.present:
                    await self._close(student, leave=True)
                self.present = []
                await asyncio.sleep(min(args.grace + 1, 5))
                final = await self.sample(session, server, started)
                final["after_all_left"] = True
                await target.close()
        finally:
            await publisher.close()
            server.stop()
        return self.report()

    def report(self) -> dict[str, Any]:
        args = self.args
        warm = next((s for s in self.samples if s["minute"] >= args.warmup), self.samples[0])
        last = self.samples[-1]
        joins = last["joins"] - warm["joins"]
        # Growth per join: the least-squares slope of RSS against joins over the samples after warm-up (the same
        # class, about the same number present); the final sample, with everyone gone, is reported apart.
        during = [s for s in self.samples if s["minute"] >= warm["minute"] and not s.get("after_all_left")]
        growth = _slope([s["joins"] for s in during], [s["rss_kb"] * 1024 for s in during])
        return {
            "command": "classcast-bench soak " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["soak"] else sys.argv[1:]),
            "minutes": args.minutes, "period_s": args.period, "students": args.students,
            "counters": {k: v for k, v in vars(self.counters).items() if k != "errors"},
            "errors": self.counters.errors[:20], "samples": self.samples,
            "warmup_minutes": args.warmup, "joins_after_warmup": joins,
            "rss_growth_bytes_per_join": round(growth, 1) if growth is not None else None,
            "rss_end_minus_warm_kb": last["rss_kb"] - warm["rss_kb"],
            "fds_growth": last["fds"] - warm["fds"], "tasks_growth": last["tasks"] - warm["tasks"],
            "threads_growth": last["threads"] - warm["threads"],
        }


def _slope(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classcast-bench soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--students", type=int, default=8, help="about how many are present at a time")
    p.add_argument("--period", type=float, default=1.0, help="seconds between two churn actions")
    p.add_argument("--grace", type=float, default=3.0, help="the server's reconnect grace (CLASSCAST_RECONNECT_GRACE)")
    p.add_argument("--sample-seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0, help="minutes before growth is counted")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", help="write the report here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import uvloop

    report = uvloop.run(Soak(args).run())
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if not report["counters"]["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
