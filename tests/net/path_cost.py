"""What each student's path costs the server: coturn's and classcast's CPU per path, measured on the namespaces
of tests/net/network.py (docs/operations.md, "What each student's path costs").

    PYTHONPATH=. .venv/bin/python -m tests.net.path_cost [--students 3] [--seconds 15] [--video 640x360x30] [--noise]

For each path the school's firewall lets out only what that path needs, so Chromium ends on it (checked with the
SDK's connectionType); then CPU seconds of coturn and of `classcast serve` are read from /proc over the window,
with the bytes the students received. Needs root (namespaces). Not part of `make test`: a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from tests.net import network
from tests.net.stage import PLAYING_JS, open_student, poll, school_browser, stage

PAGE = "ip daddr . meta l4proto . th dport { %s }"
PATHS = {  # connectionType -> what the school's firewall lets out (always the page: 198.18.0.1 TCP 443)
    "direct-udp": "ip daddr 198.18.0.1",
    "relay-udp": PAGE % "198.18.0.1 . tcp . 443, 198.18.0.2 . udp . 3478",
    "relay-tcp": PAGE % "198.18.0.1 . tcp . 443, 198.18.0.2 . tcp . 3478",
    "relay-tls": PAGE % "198.18.0.1 . tcp . 443, 198.18.0.2 . tcp . 443",
}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def measure(path: str, students: int, seconds: float, video: str, noise: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, network.network(f"cost{os.getpid() % 10000}", PATHS[path]) as net:
        tmp_path = Path(tmp)
        async with stage(net, tmp_path, students=students, video=video, noise=noise) as cls, \
                school_browser(net, tmp_path) as browser:
            pages = [await open_student(browser, link) for link in cls.links]
            for page, console in pages:
                got = await poll(page, PLAYING_JS, console)
                kind = (f"relay-{got['local']['relayProtocol']}" if got["local"]["type"] == "relay" else "direct-udp")
                assert kind == path, (path, got)
            await asyncio.sleep(3)  # past the start: the bandwidth estimate settles
            coturn = int((cls.data / "turnserver.pid").read_text())
            before = [await poll(p, PLAYING_JS, c) for p, c in pages]
            t0, c0, s0 = time.monotonic(), cpu_seconds(coturn), cpu_seconds(cls.server.pid)
            await asyncio.sleep(seconds)
            c1, s1, t1 = cpu_seconds(coturn), cpu_seconds(cls.server.pid), time.monotonic()
            after = [await poll(p, PLAYING_JS, c) for p, c in pages]
    elapsed = t1 - t0
    mbps = sum(a["bytes"] - b["bytes"] for a, b in zip(after, before, strict=True)) * 8 / elapsed / 1e6
    return {"mbps": mbps, "coturn_pct": 100 * (c1 - c0) / elapsed, "server_pct": 100 * (s1 - s0) / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--video", default="640x360x30")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--noise", action="store_true", help="a camera picture that does not compress")
    args = parser.parse_args()
    print(f"{args.students} students, {args.video} synthetic camera{' with noise' if args.noise else ''} + tone, "
          f"{args.seconds:g} s window")
    print(f"{'path':<11} {'received Mbit/s':>16} {'coturn CPU %':>13} {'coturn %/Mbit/s':>16} {'classcast CPU %':>16}")
    for path in args.paths.split(","):
        r = await measure(path, args.students, args.seconds, args.video, args.noise)
        per = r["coturn_pct"] / r["mbps"] if r["mbps"] else 0.0
        print(f"{path:<11} {r['mbps']:>16.2f} {r['coturn_pct']:>13.1f} {per:>16.2f} {r['server_pct']:>16.1f}",
              flush=True)


if __name__ == "__main__":
    asyncio.run(main())
