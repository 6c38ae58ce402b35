"""The real `classcast serve` process, driven by the seed's own Python report example."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    port = _free_port()
    env = {**os.environ, "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "control.cli", "serve"], env=env, stdout=subprocess.PIPE,
        stderr=open(tmp_path / "server.log", "w"), text=True,
    )
    assert proc.stdout is not None
    org_id = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"Demo organization.*?: ([A-Za-z0-9]{16})", line)
        if match:
            org_id = match.group(1)
            break
    assert org_id, (tmp_path / "server.log").read_text()
    try:
        yield f"http://127.0.0.1:{port}", org_id, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    log_lines = (tmp_path / "server.log").read_text().splitlines()
    requests_logged = [json.loads(line) for line in log_lines if '"classcast.http"' in line]
    assert requests_logged and all({"method", "path", "status", "ms", "rid"} <= set(r) for r in requests_logged)


def test_seed_python_report_example(server: tuple[str, str, subprocess.Popen[str]],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base, org_id, _proc = server
    monkeypatch.setenv("VERRIFLO_ORG_ID", org_id)
    headers = {"VF-ORG-ID": org_id}
    r = requests.post(f"{base}/v1/room/create", headers=headers, timeout=10, json={
        "roomId": "math-101", "title": "Calculus I - Morning Session",
        "participant": {"uid": "teacher-1", "name": "Ada", "role": "TEACHER"}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["iframeUrl"].startswith(f"{base}/iframe/live?token=")

    # Seed 001, "Python: Generate Report", verbatim except for the base URL.
    def generate_room_report(room_id: str) -> dict:
        """Generate a summary report for a room."""
        response = requests.get(
            f'{base}/v1/room/{room_id}/summary',
            headers={'VF-ORG-ID': os.environ['VERRIFLO_ORG_ID']}
        )
        data = response.json()['data']
        return {
            'room_name': data['roomName'],
            'status': data['status'],
            'total_participants': data['totalParticipants'],
            'total_credits': data['totalCredits'],
            'avg_stay_minutes': round(data['avgStay'] / 60, 1),
            'started_at': data['timestamps']['startedAt'],
            'ended_at': data['timestamps']['endedAt'],
        }

    report = generate_room_report("math-101")
    assert report == {"room_name": "Calculus I - Morning Session", "status": "created", "total_participants": 0,
                      "total_credits": 0, "avg_stay_minutes": 0.0, "started_at": None, "ended_at": None}
    r = requests.delete(f"{base}/v1/room/math-101", headers=headers, timeout=10)
    assert r.status_code == 200
    report = generate_room_report("math-101")
    assert report["status"] == "finished" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                                                             report["ended_at"])


def test_restart_keeps_the_demo_org(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(tmp_path / "data")}
    ids = []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "control.cli", "serve"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        text = ""
        deadline = time.monotonic() + 30
        while "-d '" not in text and time.monotonic() < deadline:
            text += proc.stdout.readline()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        ids.append(re.search(r"Demo organization.*?: (\w{16})", text).group(1))  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}" in text and "VF-ORG-ID" in text
    assert ids[0] == ids[1]


def test_a_stop_that_hangs_says_where_and_exits() -> None:
    """`serve` bounds its stop (control/cli.py STOP_BOUND_S): past it, the log names what every task was waiting
    for and the process exits with status 1 instead of holding its port and its lease (CI once saw a node keep
    running 30 s after SIGINT, with nothing in its log to say why)."""
    script = """
import asyncio, logging, sys
from control.cli import _stuck
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
async def relay_close_that_never_ends():
    await asyncio.Event().wait()
async def main():
    task = asyncio.get_running_loop().create_task(relay_close_that_never_ends())
    await asyncio.sleep(0.05)
    _stuck(logging.getLogger("classcast"), task)
    print("still running")
asyncio.run(main())
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parents[2])
    assert run.returncode == 1, run.stderr
    assert "still running" not in run.stdout
    assert "the server did not stop within 20 s; exiting now" in run.stderr
    assert "(the stop)" in run.stderr and "relay_close_that_never_ends" in run.stderr
