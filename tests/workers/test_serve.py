"""`classcast serve` as `make run` starts it (no CLASSCAST_SFU_WORKERS: one worker per core): the log names each
worker's pid and port and the ports to open, /readyz counts them, a signal sent to the workers' group is left to
the control process, and stopping the server leaves no worker behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp

from bench.targets.classcast import Server
from control.workers import cores


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_serve_logs_each_worker_and_stops_them(tmp_path: Path, monkeypatch: Any) -> None:
    log_path = tmp_path / "serve.log"
    monkeypatch.setenv("CLASSCAST_BENCH_SERVER_LOG", str(log_path))
    monkeypatch.delenv("CLASSCAST_SFU_WORKERS", raising=False)
    n = cores()
    loop = asyncio.get_running_loop()
    server = await loop.run_in_executor(None, lambda: Server("127.0.0.1", env={"CLASSCAST_RTC_PORT": "0"}))
    pids: list[int] = []
    try:
        # the banner comes once the workers run: ready at once
        async with aiohttp.ClientSession() as session, session.get(server.base + "/readyz") as resp:
            ready = await resp.json()
        assert resp.status == 200, ready
        assert ready["checks"]["sfu"] == {"ok": True, "workers": n, "alive": n}
        text = log_path.read_text()
        found = re.findall(r"SFU worker (\d+): pid (\d+), UDP port (\d+), engine (\w+)", text)
        assert sorted(int(f[0]) for f in found) == list(range(n)), text
        pids = [int(f[1]) for f in found]
        assert server.proc.pid not in pids and len(set(pids)) == n
        assert all(int(f[2]) > 0 for f in found) and len({f[2] for f in found}) == n
        ports = re.search(r"media on UDP ports ([\d, ]+) \(one per SFU worker", text)
        assert ports and sorted(ports.group(1).split(", ")) == sorted(f[2] for f in found), text
        # Ctrl-C in a terminal and a service manager's SIGTERM reach the whole group: the workers leave them to the
        # control process (which stops, or drains while the classes go on) instead of dying mid-class
        for pid in pids:
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert not any(_gone(pid) for pid in pids)
        async with aiohttp.ClientSession() as session, session.get(server.base + "/readyz") as resp:
            assert (await resp.json())["checks"]["sfu"] == {"ok": True, "workers": n, "alive": n}
        assert ") lost: " not in log_path.read_text()  # the pool saw no death
    finally:
        await loop.run_in_executor(None, server.stop)
    for _ in range(50):
        if all(_gone(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    assert all(_gone(pid) for pid in pids), "the workers exit with the server"
