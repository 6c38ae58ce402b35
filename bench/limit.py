"""Runs bench/limit.c, the physical limit of fan-out on this machine (SRTP protect with libsrtp + sendmmsg to N
loopback sockets, in C, nothing else), and compares the fan-out targets' CPU per forwarded packet with it.

`python -m bench.limit --subscribers 25,50,100 --seconds 5` prints its figures alone; `classcast-bench fanout
--limit ...` adds them to a run. The binary is built on first use with Debian's gcc against the libsrtp the media
engine loaded (setup.py: pylibsrtp's OpenSSL build, or Debian's libsrtp2), so the limit's SRTP costs what the
engine's does; each figure names it (`srtp`)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "limit.c"
PROFILE_AES_256_GCM = 8  # what aiortc (the bench's subscribers) and the servers negotiate first


def engine_srtp() -> list[str]:
    """Linker arguments for the libsrtp the native engine loaded: the file in this process's memory map once the
    engine is imported (pylibsrtp's binding needs the Python library for its own, unused, Python symbols)."""
    try:
        from sfu.engine import _native  # noqa: F401 (loads its libsrtp)
    except ImportError:
        return ["-lsrtp2"]
    with open("/proc/self/maps", encoding="utf-8") as maps:
        files = {line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}
    binding = next((f for f in files if f.endswith("/pylibsrtp/_binding.abi3.so")), None)
    if binding is None:
        return ["-lsrtp2"]
    where = str(Path(binding).parent)
    pylib = [f"-L{sysconfig.get_config_var('LIBDIR')}", f"-l:{sysconfig.get_config_var('LDLIBRARY')}",
             f"-Wl,-rpath,{sysconfig.get_config_var('LIBDIR')}"]
    return [f"-L{where}", "-l:_binding.abi3.so", f"-Wl,-rpath,{where}", *pylib]


def binary() -> Path:
    link = engine_srtp()
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(link).encode()).hexdigest()[:12]
    path = HERE.parent / "build" / f"limit-{digest}"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", str(SOURCE), *link, "-o", str(path)], check=True)
    return path


def measure(subscribers: list[int], seconds: float, profile: int = PROFILE_AES_256_GCM) -> list[dict[str, Any]]:
    exe = binary()
    out = []
    for n in subscribers:
        run = subprocess.run([str(exe), "--subscribers", str(n), "--seconds", str(seconds), "--profile",
                              str(profile)], capture_output=True, text=True, check=True)
        out.append(json.loads(run.stdout))
    return out


def table(results: list[dict[str, Any]], figures: list[dict[str, Any]]) -> str:
    """µs per forwarded packet of each target and of the limit, and each target's ratio to the limit."""
    limit = {f["subscribers"]: f["cpu_us_per_datagram"] for f in figures}
    head = ["N", "limit µs/pkt"] + [f"{r['target']} {h}" for r in results for h in ("µs/pkt", "/ limit")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, floor in limit.items():
        cells = [str(n), f"{floor:.2f}"]
        for r in results:
            theirs = next((s["cpu_us_per_packet"] for s in r["steps"] if s["subscribers"] == n), None)
            cells += [str(theirs), f"{theirs / floor:.2f}x" if theirs and floor else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limit", description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", default="25,50,100,150")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--profile", type=int, default=PROFILE_AES_256_GCM, help="libsrtp profile: 1, 7 or 8")
    args = parser.parse_args()
    for figure in measure([int(n) for n in args.subscribers.split(",")], args.seconds, args.profile):
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
