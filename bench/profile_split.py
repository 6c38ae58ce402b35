"""Where the server's CPU goes, from a py-spy profile: receive, send and the rest (issue 21, requirement 5).

py-spy (`fanout --profile DIR`) samples the server's Python stacks from outside, `--rate` times a second, with line
numbers. A sample whose innermost frame is the line that calls the engine's `push` is time inside the native
per-packet call (copies, SRTP protect, sendmmsg): **send**. Samples under the handling of a publisher's RTP (SRTP
unprotect in aiortc, demultiplexing, reception statistics) or of a peer's RTCP (SRTCP unprotect, parsing, NACK /
report / TWCC feedback handling) are **receive**, split by which. The event loop's own native code (uvloop: the
recv/send system calls of aioice's sockets, timers) shows as the bare `Runner.run` frame and cannot be told from
waiting, so it is not sampled as work: the **rest** is the measured CPU time minus what the samples attribute
(timers' Python work, layer choice, sender reports, signaling and uvloop's native work).

    python -m bench.profile_split PROFILE.txt [--rate 200] [--cpu SECONDS] [--packets N]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from functools import cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = ("send_engine_push", "receive_rtp", "receive_rtcp", "receive_ice_dtls", "python_other")


@cache
def _line(path: str, lineno: int) -> str:
    for base in (ROOT, ""):
        full = os.path.join(base, path)
        if os.path.isfile(full):
            with open(full, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
            return lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    return ""


def _where(frame: str) -> tuple[str, str, int]:
    """'Producer.on_rtp (sfu/producer.py:376)' -> ('Producer.on_rtp', 'sfu/producer.py', 376)."""
    name, _, rest = frame.rpartition(" (")
    path, _, line = rest.rstrip(")").rpartition(":")
    return name, path, int(line) if line.isdigit() else 0


def classify(stack: str) -> str | None:
    """The category of one sampled stack; None for the event loop's bare frame (native work or waiting)."""
    frames = stack.split(";")
    name, path, line = _where(frames[-1])
    if name == "Runner.run" or name.endswith(".select") or name.endswith("_run_once"):
        return None
    if "engine.push(" in _line(path, line):
        return "send_engine_push"
    names = [_where(f)[0] for f in frames]
    if any(n.endswith(("_handle_rtcp_data", "unprotect_rtcp", ".on_rtcp")) for n in names):
        return "receive_rtcp"
    if any(n.endswith(("_handle_rtp_data", "Session.unprotect", ".on_rtp")) for n in names):
        return "receive_rtp"
    if any(n.endswith(("datagram_received", "Connection.recv", "Connection.recvfrom", "_recv_next",
                       "data_received")) for n in names):
        return "receive_ice_dtls"
    return "python_other"


def split(path: str, rate: float, cpu_s: float | None = None, packets: int | None = None) -> dict[str, object]:
    """CPU seconds per category (samples / rate), the rest from the measured CPU, and µs per forwarded packet."""
    counts: Counter[str] = Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            stack, _, n = raw.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            counts[classify(stack) or "loop"] += int(n)
    seconds = {c: counts[c] / rate for c in CATEGORIES}
    out: dict[str, object] = {"samples": sum(counts.values()), "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    if cpu_s is not None:
        attributed = sum(seconds.values())
        rest = max(0.0, cpu_s - attributed)
        send = seconds["send_engine_push"]
        receive = seconds["receive_rtp"] + seconds["receive_rtcp"] + seconds["receive_ice_dtls"]
        out["cpu_s"] = round(cpu_s, 3)
        out["percent_of_cpu"] = {"send": round(100 * send / cpu_s, 1), "receive": round(100 * receive / cpu_s, 1),
                                 "receive_rtcp": round(100 * seconds["receive_rtcp"] / cpu_s, 1),
                                 "rest": round(100 * (cpu_s - send - receive) / cpu_s, 1)} if cpu_s else {}
        if packets:
            us = 1e6 / packets
            out["us_per_packet"] = {"send": round(send * us, 2), "receive": round(receive * us, 2),
                                    "receive_rtp": round(seconds["receive_rtp"] * us, 2),
                                    "receive_rtcp": round(seconds["receive_rtcp"] * us, 2),
                                    "python_other": round(seconds["python_other"] * us, 2),
                                    "unsampled (uvloop native, GC)": round(rest * us, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile")
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--cpu", type=float, help="the server's measured CPU seconds over the profile's window")
    p.add_argument("--packets", type=int, help="packets forwarded in that window")
    args = p.parse_args(argv)
    print(json.dumps(split(args.profile, args.rate, args.cpu, args.packets), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
