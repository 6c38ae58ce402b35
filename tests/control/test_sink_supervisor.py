"""control/sinks/supervisor.py with a real sink process (a tiny one): a killed sink is started again, and a start
that fails is tried again, with a growing back-off, until one succeeds (a transcriber that failed once used to
leave its rooms without captions until the next class started)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from control.sinks import supervisor as module
from control.sinks.supervisor import SinkSupervisor

FAKE_SINK = '''
import argparse, asyncio, sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--socket")
parser.add_argument("--fail-file")
args = parser.parse_args()
fail = Path(args.fail_file)
left = int(fail.read_text() or 0)
if left > 0:  # this start fails before it says ready
    fail.write_text(str(left - 1))
    sys.exit(3)


async def main():
    closed = asyncio.Event()

    async def serve(reader, writer):
        await reader.read()  # until the server closes the feed
        closed.set()

    server = await asyncio.start_unix_server(serve, args.socket)
    print("ready", flush=True)
    async with server:
        await closed.wait()

asyncio.run(main())
'''


async def test_a_sink_that_cannot_start_is_tried_again_until_it_does(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fakesink.py").write_text(FAKE_SINK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(module, "RESTART_DELAY", 0.05)
    fail = tmp_path / "fail"
    fail.write_text("0")
    exits: list[int | None] = []

    async def on_exit(code: int | None) -> None:
        exits.append(code)

    sink = SinkSupervisor("fakesink", tmp_path / "data", lambda event: None, on_exit, ["--fail-file", str(fail)])
    await sink.ensure()
    first = sink.pid
    assert sink.running and first is not None
    fail.write_text("3")  # the next three starts fail
    os.kill(first, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (sink.running and sink.pid != first) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    try:
        assert sink.running and sink.pid not in (None, first)
        assert exits == [-signal.SIGKILL]
        assert sink.restarts == 4  # three failed starts, then the one that worked
        assert fail.read_text() == "0"
    finally:
        await sink.stop(timeout=5)
    assert not sink.running
