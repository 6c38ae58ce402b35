"""Helpers for tests that run the real server process and a real webhook receiver."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from aiohttp import web

SLOW_S = 2.0  # the receiver's slow answers: longer than the tests' CLASSCAST_WEBHOOK_TIMEOUT


def demo_org(stdout: IO[str], timeout: float = 60) -> str:
    """The demo organization id `classcast serve` prints in its banner ("" if it ended or timed out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stdout.readline()
        if not line:
            return ""
        match = re.search(r"Demo organization.*?: ([A-Za-z0-9]{16})", line)
        if match:
            return match.group(1)
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A webhook receiver in its own thread and event loop (so the test's blocking steps never stall it).

    `plan` is how it answers its next requests ("slow", "500"); after the plan it answers 200."""

    def __init__(self, port: int, plan: list[str]) -> None:
        self.port, self.plan = port, list(plan)
        self.got: list[tuple[str, dict[str, str], bytes]] = []  # (how it answered, headers, body)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            with self._lock:
                mode = self.plan.pop(0) if self.plan else "ok"
                self.got.append((mode, dict(request.headers), body))
            if mode == "slow":
                await asyncio.sleep(SLOW_S)
            return web.Response(status=500 if mode == "500" else 200)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, handler_cancellation=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(h, b) for mode, h, b in self.got if mode == "ok"]


class Server:
    """`classcast serve` as a real process on 127.0.0.1; `org` is the demo organization its banner names."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {**os.environ, **(env or {}), "CLASSCAST_PORT": str(self.port), "CLASSCAST_DATA_DIR": str(data_dir)}
        self.proc = subprocess.Popen([sys.executable, "-m", "control.cli", "serve"], env=env,
                                     stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
        assert self.proc.stdout is not None
        self.org = demo_org(self.proc.stdout)
        assert self.org, log.read_text()

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
