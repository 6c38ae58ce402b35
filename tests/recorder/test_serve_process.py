"""`classcast serve` starts the recorder as its own process, restarts it when it dies, and takes it down with it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import requests

from control.recordings import NOTHING_RECORDED
from tests.control.test_server_process import server  # noqa: F401  (the real `classcast serve` fixture)


def _recorder_children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"recorder" in cmdline:
            pids.append(int(entry.name))
    return pids


def _wait_child(parent: int, not_pid: int | None = None, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in _recorder_children(parent) if p != not_pid]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("no recorder process")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_supervises_the_recorder(server: tuple[str, str, subprocess.Popen[str]],  # noqa: F811
                                       tmp_path: Path) -> None:
    base, org, proc = server
    data_dir = tmp_path / "data"  # the fixture's CLASSCAST_DATA_DIR
    first = _wait_child(proc.pid)  # started with the server, before any recording
    r = requests.post(f"{base}/v1/room/create", headers={"VF-ORG-ID": org}, timeout=10, json={
        "roomId": "r1", "title": "T", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    assert r.status_code == 200
    os.kill(first, signal.SIGKILL)
    second = _wait_child(proc.pid, not_pid=first)  # restarted
    assert second != first and _alive(second)
    deadline = time.monotonic() + 20  # and usable: a recording starts on the new process
    while True:
        r = requests.post(f"{base}/v1/room/r1/recording/start", headers={"VF-ORG-ID": org}, timeout=30, json={})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    proc.terminate()
    proc.wait(timeout=40)
    # A normal stop finishes the running recording before the recorder exits: the room was empty, so it ends
    # saying so (no file to offer), not as a recorder that died.
    with sqlite3.connect(data_dir / "classcast.db") as db:
        statuses = [row for row in db.execute("SELECT status, error FROM recordings")]
    assert statuses == [("EGRESS_FAILED", NOTHING_RECORDED)], statuses
    deadline = time.monotonic() + 10
    while _alive(second) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(second)  # the recorder never outlives its server
