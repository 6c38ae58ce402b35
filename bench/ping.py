"""The signaling round trip while the media plane is loaded (issue 15 req 5): a spare participant's WebSocket sends
`{"type": "ping", "ts": N}` every 100 ms and times each `{"type": "pong", "ts": N}` (docs/signaling.md).

The pinger runs in a process of its own with its own event loop, so that the bench's publisher and coordinators
(whose event loop is busy encrypting and pacing media) add nothing to the figure: what it measures is the server's
WebSocket path, loaded or not. It sends open loop (every interval whether or not the last pong came back), so a
stall shows as many slow pings rather than one (no coordinated omission); a ping unanswered after `TIMEOUT` counts
as lost. Sends are stamped with time.monotonic(), which is one clock for every process of the machine, so the
bench can pick the pings of a step's measuring window.

    python -m bench.ping URL TOKEN --seconds 10     # a one-off look at a running server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

INTERVAL = 0.1
TIMEOUT = 5.0
Sample = tuple[float, float | None]  # (sent at, monotonic seconds; round trip in ms, None = lost)


async def ping_for(url: str, token: str, stop: Any, interval: float = INTERVAL) -> list[Sample]:
    """Pings over one WebSocket until `stop()` is true; every ping sent, answered or not (None)."""
    sent: dict[int, float] = {}
    samples: list[Sample] = []
    ws_url = url.rstrip("/").replace("http", "ws", 1) + f"/v1/rtc?token={token}"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, heartbeat=20) as ws:
        async def read() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                message = json.loads(msg.data)
                if message.get("type") == "pong" and isinstance(message.get("ts"), int):
                    at = sent.pop(message["ts"], None)
                    if at is not None:
                        samples.append((at, (time.monotonic() - at) * 1000))
                elif message.get("type") == "error":
                    raise RuntimeError(f"signaling error: {message}")

        reader = asyncio.create_task(read())
        seq, next_at = 0, time.monotonic()
        try:
            while not stop() and not reader.done():
                seq += 1
                sent[seq] = time.monotonic()
                await ws.send_str(json.dumps({"type": "ping", "ts": seq}))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            deadline = time.monotonic() + TIMEOUT  # the last pongs
            while sent and time.monotonic() < deadline and not reader.done():  # noqa: ASYNC110 - polls a dict
                await asyncio.sleep(0.02)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # an error the server sent is raised here
    return sorted(samples + [(at, None) for at in sent.values()])


def _child(url: str, token: str, interval: float, conn: Any) -> None:
    """The pinger process: pings until the parent says stop (or goes away), then sends its samples back."""
    def stop() -> bool:
        try:
            return bool(conn.poll())
        except (EOFError, OSError):
            return True

    try:
        samples: Any = asyncio.run(ping_for(url, token, stop, interval))
    except Exception as exc:  # the parent reports it, with the samples it has none of
        samples = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(OSError, EOFError):
        conn.send(samples)


class Pinger:
    """`start()`, then `stop()` -> the samples: a spare signaling connection in a process of its own."""

    def __init__(self, url: str, token: str, interval: float = INTERVAL) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(url, token, interval, child), daemon=True)

    def start(self) -> Pinger:
        self.proc.start()
        return self

    def stop(self, timeout: float = TIMEOUT + 10) -> list[Sample]:
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        try:
            if not self.conn.poll(timeout):
                raise RuntimeError("the pinger did not answer")
            result = self.conn.recv()
        finally:
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
        if isinstance(result, str):
            raise RuntimeError(f"the pinger failed: {result}")
        return [(float(at), None if ms is None else float(ms)) for at, ms in result]


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (the fan-out bench's), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summary(samples: Iterable[Sample], windows: Iterable[tuple[float, float]] | None = None) -> dict[str, Any]:
    """p50/p99/max of the round trips of the pings sent inside any of `windows` (all when None). A lost ping counts
    in `lost` and, in the percentiles, as the timeout (it took at least that long): never as a fast one."""
    spans = list(windows) if windows is not None else None
    picked = [ms for at, ms in samples if spans is None or any(a <= at <= b for a, b in spans)]
    ranked = [TIMEOUT * 1000 if ms is None else ms for ms in picked]

    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {"count": len(picked), "lost": sum(1 for ms in picked if ms is None),
            "p50_ms": rounded(percentile(ranked, 50)), "p99_ms": rounded(percentile(ranked, 99)),
            "max_ms": rounded(max(ranked, default=None))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ping", description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("token", help="a join token of any room (the spare connection does not join)")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--interval", type=float, default=INTERVAL)
    args = p.parse_args(argv)
    pinger = Pinger(args.url, args.token, args.interval).start()
    time.sleep(args.seconds)
    print(json.dumps(summary(pinger.stop())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
