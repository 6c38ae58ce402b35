"""The server's side of a sink process (the recorder, the transcriber): start it, connect the feed, restart it
when it dies.

Runs in the server's event loop. The process is `python -m MODULE --socket DATA_DIR/MODULE.sock ARGS...`; it
prints `ready` once it listens, and exits by itself when the server's connection closes. `on_exit` hears of every
death (with the return code) so that the jobs the dead process had can be failed (the recorder: files kept) or
started again (the transcriber); the next process is started after a short back-off (doubled after each start
that fails, until one succeeds or the server stops), and `on_start` hears of each start, first or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from control.sinks.feed import FeedLink

log = logging.getLogger("classcast.sinks.supervisor")

START_TIMEOUT = 30.0
RESTART_DELAY = 0.5  # before the first restart; doubled after each failed one ...
RESTART_DELAY_MAX = 30.0  # ... up to this: a sink that cannot start is tried again until it does


class SinkSupervisor:
    def __init__(self, module: str, data_dir: Path, on_event: Callable[[dict[str, Any]], None],
                 on_exit: Callable[[int | None], Awaitable[None]], args: Sequence[str] = (),
                 on_start: Callable[[], None] = lambda: None) -> None:
        self.module = module  # "recorder" or "transcriber": the package run with `python -m`
        self.socket_path = data_dir / f"{module}.sock"
        self.args = list(args)
        self.link = FeedLink(on_event)
        self.on_exit = on_exit
        self.on_start = on_start
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None and self.link.connected

    async def ensure(self) -> None:
        """Starts the process if it is not running (raises OSError/TimeoutError when it cannot start)."""
        async with self._lock:
            if self.running:
                return
            self._stopping = False
            await self._spawn()

    async def _spawn(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, "--socket", str(self.socket_path), *self.args,
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            # Its own session: a Ctrl-C or a signal to the server's process group must not kill it mid-file; the
            # server stops it by closing the socket (and it exits by itself if the server dies).
            start_new_session=True)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
            if line.strip() != b"ready":
                raise OSError(f"{self.module} did not start (said {line!r})")
            self.link = FeedLink(self.link.on_event)
            await self.link.connect(self.socket_path)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        self.process = process
        self._watch = asyncio.create_task(self._watch_process(process))
        log.info("%s process %d started", self.module, process.pid)
        try:
            self.on_start()
        except Exception:
            log.exception("%s start handling failed", self.module)

    async def _watch_process(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        await self.link.close()
        if self._stopping:
            return
        log.error("%s process %d exited with %s; restarting", self.module, process.pid, code)
        try:
            await self.on_exit(code)
        except Exception:
            log.exception("%s exit handling failed", self.module)
        delay = RESTART_DELAY
        while True:  # a failed restart is tried again: its jobs (a room's captions) wait for it, not for a new job
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self.ensure()
                return
            except (OSError, TimeoutError) as exc:
                delay = min(RESTART_DELAY_MAX, delay * 2)
                log.error("%s restart failed (%s); trying again in %.1f s", self.module, exc, delay)

    async def stop(self, timeout: float = 30.0) -> None:
        """Closing the feed makes the process finish every job and exit; it is killed if it takes too long."""
        self._stopping = True
        process = self.process
        await self.link.close()
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
