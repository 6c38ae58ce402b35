"""Where the server's CPU goes, from a py-spy profile: receive, send and the rest (issue 21, requirement 5).

py-spy (`fanout --profile DIR`) samples the server's Python stacks from outside, `--rate` times a second, with line
numbers. A sample whose innermost frame is the line that calls the engine's `push` is time inside the native
per-packet call (copies, SRTP protect, sendmmsg): **send**. Samples on the line that calls the engine's `recv`
(recvmmsg, SRTP unprotect, subscribers' RTCP read in C), or under the handling of a publisher's RTP (SRTP unprotect
in aiortc, demultiplexing, reception statistics) or of a peer's RTCP (SRTCP unprotect, parsing, NACK / report /
TWCC feedback handling) are **receive**, split by which; everything else is the **rest** (timers' Python
work: layer choice, sender reports, reports to publishers, signaling; and the event loop's own native code, uvloop's
system calls and timers, which shows as the bare `Runner.run` frame). The measured CPU time is shared out in
proportion to the samples (see `split`); the rest is
split further by `rest_part` (layer choice, the router's timers, STUN, the control plane, the bare loop frame).

    python -m bench.profile_split PROFILE.txt [--rate 200] [--cpu SECONDS] [--packets N]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from functools import cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = ("send_engine_push", "receive_native", "receive_rtp", "receive_rtcp", "receive_ice_dtls", "python_other")


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
    code = _line(path, line)
    if "engine.push(" in code:
        return "send_engine_push"
    if "engine.recv(" in code:  # recvmmsg, SRTP unprotect and native feedback (subscribers' quiet RTCP), in C
        return "receive_native"
    names = [_where(f)[0] for f in frames]
    if any(n.endswith(("_handle_rtcp_data", "unprotect_rtcp", ".on_rtcp")) for n in names):
        return "receive_rtcp"
    if any(n.endswith(("_handle_rtp_data", "Session.unprotect", ".on_rtp")) for n in names):
        return "receive_rtp"
    if any(n.endswith(("datagram_received", "Connection.recv", "Connection.recvfrom", "_recv_next",
                       "data_received")) for n in names):
        return "receive_ice_dtls"
    return "python_other"


REST_PARTS = ("layer_choice", "router_timers", "stun", "control_plane", "loop", "other")


def rest_part(stack: str) -> str:
    """Which part of the rest one sample of it is: the per-subscriber layer choice (every 200 ms), the router's
    other timers (NACKs to publishers, TWCC feedback, reports), STUN consent answers, the control plane (its
    Python under control/, its database threads), the event loop's bare frame, or something else."""
    frames = stack.split(";")
    names = [_where(f)[0] for f in frames]
    paths = [_where(f)[1] for f in frames]
    if "SfuParticipant.select_layers" in names:
        return "layer_choice"
    if "Router._reports" in names:
        return "router_timers"
    if any(n.endswith(("RtcServer.received", "RtcServer._stun")) for n in names):
        return "stun"
    if any((p.startswith("control/") and not p.startswith("control/cli.py")) or "aiosqlite/" in p
           or "sqlalchemy/" in p for p in paths):
        return "control_plane"
    if classify(stack) is None:
        return "loop"
    return "other"


def split(path: str, rate: float, cpu_s: float | None = None, packets: int | None = None) -> dict[str, object]:
    """Samples per category, and the measured CPU shared out in proportion to them (µs per forwarded packet).

    py-spy counts a thread as active when it is not waiting in a known blocking call, also while the kernel has
    it runnable but not running (on a loaded machine, about half the time): samples over-count CPU, so only their
    proportions are used. The bare event-loop frame (uvloop's native work, or a wait py-spy did not recognise)
    counts with the rest."""
    counts: Counter[str] = Counter()
    rest: Counter[str] = Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            stack, _, n = raw.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            category = classify(stack) or "loop"
            counts[category] += int(n)
            if category in ("python_other", "loop"):
                rest[rest_part(stack)] += int(n)
    total = sum(counts.values())
    out: dict[str, object] = {"samples": total, "sampled_seconds": round(total / rate, 2),
                              "share": {c: round(counts[c] / total, 3) for c in (*CATEGORIES, "loop")} if total else {}}
    if cpu_s is not None and total:
        send = counts["send_engine_push"] / total
        receive = (counts["receive_native"] + counts["receive_rtp"] + counts["receive_rtcp"]
                   + counts["receive_ice_dtls"]) / total
        out["cpu_s"] = round(cpu_s, 3)
        out["percent_of_cpu"] = {"send": round(100 * send, 1), "receive": round(100 * receive, 1),
                                 "receive_rtcp": round(100 * counts["receive_rtcp"] / total, 1),
                                 "rest": round(100 * (1 - send - receive), 1)}
        if packets:
            us = 1e6 * cpu_s / packets
            out["us_per_packet"] = {"send": round(send * us, 2), "receive": round(receive * us, 2),
                                    "receive_native": round(counts["receive_native"] / total * us, 2),
                                    "receive_rtp": round(counts["receive_rtp"] / total * us, 2),
                                    "receive_rtcp": round(counts["receive_rtcp"] / total * us, 2),
                                    "receive_ice_dtls": round(counts["receive_ice_dtls"] / total * us, 2),
                                    "rest": round((1 - send - receive) * us, 2),
                                    "rest_by_part": {part: round(rest[part] / total * us, 2) for part in REST_PARTS}}
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
