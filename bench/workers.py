"""Every core (issue 15 req 5): the same multi-room fan-out against `classcast serve` with 1 SFU worker and with
more, in one run, plus the signaling round trip on a spare connection while the media plane is loaded.

    python -m bench.workers --rooms 2 --ramp 10:10:60 --duration 5 --sfu-workers 1,2 --json out.json

For each worker count: a fresh `classcast serve` (CLASSCAST_SFU_WORKERS=W), ROOMS rooms each with the fan-out
bench's teacher (bench/fanout.py Publisher: simulcast H.264 + Opus, paced) and its raw subscribers ramped together;
a room is placed on one worker (control/workers.py) until it outgrows the worker's capacity (--capacity, default
the server's: 300 participants), so ROOMS >= W spreads the rooms. Figures per step are the
fan-out bench's, per room; the step's total is ROOMS x N subscribers. The knee of a worker count is the largest
total where every room is under 1% loss with every join served (bench/fanout.py `knee`). The spare connection
(bench/ping.py, a process of its own) sends `ping` every 100 ms for the whole run and times each `pong`: p50/p99
per step (the pings of its measuring window), of the run, and at 80% of the knee (issue 15 req 5: p99 < 50 ms).

One lecture over several workers (issue 15 req 2): `--capacity C` sets CLASSCAST_SFU_WORKER_CAPACITY, so a room's
participants beyond C on a worker go to another worker, the teacher's tracks piped there once (sfu/pipe.py):

    python -m bench.workers --rooms 1 --capacity 40 --ramp 80:80:80 --sfu-workers 2 --no-ping

is a lecture of twice a worker's capacity (80 students + the teacher over 2 workers). Each worker's forwarded
packets (/metrics, per worker, over the run) show both served it.

Everything runs on this machine (the subscribers' DTLS/SRTP in Python costs more CPU than the server's forwarding):
on a small shared machine the clients, not the workers, may set the knee; the JSON keeps the server's CPU per step
so the two can be told apart. `--worker-cpu F` caps each worker process to F cores (its own cgroup quota), so that
W workers have W times one worker's CPU while the control process and the bench's clients keep the rest: on a
2-core machine that is how "the knee with all workers against one worker" can be measured at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiohttp

from bench import cpucap, fanout, ping
from bench.targets.classcast import Server


async def _ping_token(base: str, org: str) -> str:
    """A join token for the spare connection: a room of its own, never joined (a ping is answered before `join`)."""
    async with aiohttp.ClientSession() as session, session.post(
            base + "/v1/room/create", headers={"VF-ORG-ID": org}, json={
                "roomId": "bench-ping", "title": "ping",
                "participant": {"uid": "pinger", "name": "Ping", "role": "STUDENT"}}) as resp:
        return str((await resp.json())["data"]["token"])


def at_80_percent(steps: list[dict[str, Any]], knee_total: int | None) -> dict[str, Any] | None:
    """The signaling round trip "while the media plane is at 80% of the knee" (issue 15 req 5): the smallest passing
    step at or above 80% of the knee (as bench/fanout.py `knee` picks it: a coarse ramp gives a heavier load, never
    a lighter one that would flatter the figure), its pings' p50/p99 and whether p99 is under 50 ms."""
    if not knee_total:
        return None
    near = min((s for s in steps if s["ok"] and s["subscribers_total"] >= 0.8 * knee_total),
               key=lambda s: s["subscribers_total"])
    p99 = near["ping_ms_p99"]
    return {"subscribers_total": near["subscribers_total"], "of_knee": round(near["subscribers_total"] / knee_total, 2),
            "ping_ms_p50": near["ping_ms_p50"], "ping_ms_p99": p99, "pings": near["pings"],
            "pings_lost": near["pings_lost"], "p99_under_50_ms": p99 is not None and p99 < 50}


async def run_one(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    env = {"CLASSCAST_SFU_WORKERS": str(workers), "CLASSCAST_RTC_PORT": "0"}
    if args.capacity is not None:
        env["CLASSCAST_SFU_WORKER_CAPACITY"] = str(args.capacity)
    server = await loop.run_in_executor(None, lambda: Server("127.0.0.1", env=env))
    rtts: list[ping.Sample] = []  # (sent at, round trip ms or None: lost)
    pinger: ping.Pinger | None = None
    caps: list[cpucap.CpuCap] = []
    try:
        if args.worker_cpu:
            caps = [cpucap.CpuCap(pid, args.worker_cpu, f"w{workers}-{i}")
                    for i, pid in enumerate(_worker_pids(server.proc.pid))]
            if len(caps) != workers:
                raise SystemExit(f"--worker-cpu: found {len(caps)} SFU worker processes, expected {workers}")
        fan_args = fanout.parser().parse_args([
            "fanout", "--target", server.base, "--org", server.org, "--server-pid", str(server.proc.pid),
            "--ramp", args.ramp, "--duration", str(args.duration), "--settle", str(args.settle),
            "--workers", str(args.client_processes), "--past-knee", str(args.past_knee)])
        fan_args.ice_host, fan_args.codec = "127.0.0.1", "h264"
        benches = []
        for r in range(args.rooms):
            bench = fanout.Bench(fan_args, server.base)
            bench.target.room = f"bench-w{workers}-r{r}"
            bench.step = _timed(bench.step, args.duration)  # type: ignore[method-assign]
            benches.append(bench)
        if args.ping:
            pinger = ping.Pinger(server.base, await _ping_token(server.base, server.org)).start()
        results = await asyncio.gather(*(b.run() for b in benches))
        if pinger is not None:
            rtts = await loop.run_in_executor(None, pinger.stop)
            pinger = None
        per_worker = await _per_worker(server.base)
    finally:
        if pinger is not None:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, pinger.stop)
        await loop.run_in_executor(None, server.stop)
        throttled = [round(c.throttled_seconds(), 1) for c in caps]
        for cap in caps:
            cap.release()
    steps = []
    for i, per_room in enumerate(zip(*(r["steps"] for r in results), strict=False)):
        n = per_room[0]["subscribers"]
        losses = [s["loss_percent"] for s in per_room]
        # the pings sent while any room of this step was measuring
        window = ping.summary(rtts, [s["measured"] for s in per_room])
        steps.append({
            "step": i, "subscribers_per_room": n, "subscribers_total": n * args.rooms,
            "loss_percent_max": max((x for x in losses if x is not None), default=None),
            "loss_percent_worst_subscriber": max((s.get("loss_percent_worst_subscriber") or 0 for s in per_room),
                                                 default=None),
            "delivered_percent_min": min((s["delivered_percent"] or 0) for s in per_room),
            "server_cpu_percent": max(s["server_cpu_percent"] for s in per_room),
            "packets_out_per_s": sum(s["packets_out_per_s"] for s in per_room),
            "joins_failed": sum(s.get("joins_failed") or 0 for s in per_room),
            "ping_ms_p50": window["p50_ms"], "ping_ms_p99": window["p99_ms"], "pings": window["count"],
            "pings_lost": window["lost"],
            "ok": all(fanout.knee([s])["knee"] is not None for s in per_room),
        })
    good = [s["subscribers_total"] for s in steps if s["ok"]]
    knee_total = max(good, default=None)
    whole = ping.summary(rtts)
    return {"sfu_workers": workers, "rooms": args.rooms, "capacity": args.capacity, "per_worker": per_worker,
            "worker_cpu_cap": args.worker_cpu, "worker_throttled_s": throttled,
            "steps": steps, "knee_total": knee_total,
            "first_failure_total": min((s["subscribers_total"] for s in steps if not s["ok"]), default=None),
            "ping_ms": {"count": whole["count"], "lost": whole["lost"], "p50": whole["p50_ms"],
                        "p99": whole["p99_ms"]},
            "ping_at_80_percent_of_knee": at_80_percent(steps, knee_total) if args.ping else None,
            "rooms_raw": results}


def _worker_pids(server_pid: int) -> list[int]:
    """The server's SFU worker processes (`python -m sfu.worker`), found by their command line."""
    pids = []
    for pid in cpucap._tree(server_pid)[1:]:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"sfu.worker" in f.read():
                    pids.append(pid)
    return pids


async def _per_worker(base: str) -> dict[str, dict[str, float]]:
    """Each worker's cumulative figures from /metrics (forwarded packets, participants): who served the run."""
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for family in ("forwarded_packets_total", "participants"):
            prefix = f"classcast_sfu_worker_{family}{{"
            if line.startswith(prefix):
                worker = line.split('"')[1]
                out.setdefault(worker, {})[family] = float(line.split()[-1])
    return out


def _timed(step: Any, duration: float) -> Any:
    """Bench.step, its row stamped with its measuring window (the last `duration` seconds before it returns)."""
    async def timed(n: int) -> dict[str, Any]:
        row = await step(n)
        end = time.monotonic()
        row["measured"] = (end - duration - 1.0, end)
        return row
    return timed


def table(result: dict[str, Any]) -> str:
    lines = [f"SFU workers {result['sfu_workers']} (capacity {result['capacity']}), {result['rooms']} rooms; "
             f"per worker {result['per_worker']}",
             f"knee {result['knee_total']} "
             f"subscribers (first failure {result['first_failure_total']}); signaling ping p50 "
             f"{_ms(result['ping_ms']['p50'])} p99 {_ms(result['ping_ms']['p99'])} "
             f"({result['ping_ms']['count']} pings, {result['ping_ms'].get('lost', 0)} lost); "
             f"at 80% of the knee: {_at80(result)}",
             "| total subs | loss % (worst room) | loss % (worst subscriber) | delivered % (worst room) | "
             "server CPU % | packets out/s | joins failed | ping p50 / p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for s in result["steps"]:
        delivered = s.get("delivered_percent_min")
        lines.append(f"| {s['subscribers_total']} | {s['loss_percent_max']} | {s['loss_percent_worst_subscriber']} | "
                     f"{delivered} | "
                     f"{s['server_cpu_percent']} | {s['packets_out_per_s']} | {s['joins_failed']} | "
                     f"{_ms(s['ping_ms_p50'])} / {_ms(s['ping_ms_p99'])} |")
    return "\n".join(lines)


def _at80(result: dict[str, Any]) -> str:
    at = result.get("ping_at_80_percent_of_knee")
    if not at:
        return "-"
    return (f"{at['subscribers_total']} subscribers ({at['of_knee']:.0%} of the knee), ping p50 "
            f"{_ms(at['ping_ms_p50'])} p99 {_ms(at['ping_ms_p99'])}: "
            f"{'under' if at['p99_under_50_ms'] else 'NOT under'} 50 ms")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=2)
    p.add_argument("--ramp", default="10:10:40", help="START:STEP:MAX subscribers per room")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--settle", type=float, default=3)
    p.add_argument("--sfu-workers", default="1,2", help="worker counts to compare, in this run")
    p.add_argument("--client-processes", type=int, default=1, help="subscriber processes per room")
    p.add_argument("--capacity", type=int, default=None,
                   help="CLASSCAST_SFU_WORKER_CAPACITY: participants per worker before a room spreads")
    p.add_argument("--worker-cpu", type=float, default=None,
                   help="cap each SFU worker process to this many cores (a cgroup quota per worker, root only: "
                        "bench/cpucap.py): a small machine's stand-in for a core per worker that the bench's own "
                        "subscribers cannot take; the control process and the bench stay uncapped")
    p.add_argument("--past-knee", type=int, default=2,
                   help="end a worker count's ramp after this many steps in a row past the knee in a room (0: never)")
    p.add_argument("--no-ping", dest="ping", action="store_false", help="no spare signaling connection")
    p.add_argument("--json")
    args = p.parse_args(argv)
    import uvloop

    out = []
    for w in [int(x) for x in args.sfu_workers.split(",")]:
        result = uvloop.run(run_one(args, w))
        print(table(result), flush=True)
        out.append(result)
    if len(out) > 1 and out[0]["knee_total"]:
        ratio = (out[-1]["knee_total"] or 0) / out[0]["knee_total"]
        print(f"knee ratio {out[-1]['sfu_workers']} workers / {out[0]['sfu_workers']}: {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(["python -m bench.workers", *sys.argv[1:]]), "runs": out}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
