"""Operator commands and the drain against a real `classcast serve` (issue 17, requirements 4 and 6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from standardwebhooks import Webhook

from control.cli import main
from tests.control.serverproc import Receiver, Server, free_port

ENV = {"CLASSCAST_LLM_BACKEND": "fake", "CLASSCAST_RECONNECT_GRACE": "0", "CLASSCAST_DRAIN_TIMEOUT": "120"}


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    s = Server(tmp_path / "data", tmp_path / "server.log", ENV)
    monkeypatch.setenv("CLASSCAST_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("CLASSCAST_PORT", str(s.port))  # the commands find the server from the configuration
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(10)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def create(server: Server, room: str) -> dict[str, Any]:
    r = requests.post(f"{server.base}/v1/room/create", headers={"VF-ORG-ID": server.org}, timeout=10, json={
        "roomId": room, "title": room.title(), "participant": {"uid": "t1", "name": "Ada", "role": "TEACHER"}})
    assert r.status_code == 200, r.text
    return r.json()["data"]


class Joined:
    """A participant connected over signaling, held open in its own event loop thread."""

    def __init__(self, server: Server, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._run(self._join(server, token))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _join(self, server: Server, token: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"{server.base.replace('http', 'ws')}/v1/rtc?token={token}")
        await self.ws.send_json({"type": "join"})
        while json.loads((await self.ws.receive(timeout=20)).data)["type"] != "joined":
            pass

    def leave(self) -> None:
        async def go() -> None:
            assert self.ws is not None and self.session is not None
            with contextlib.suppress(ConnectionError):  # the server may have closed it already (a kick)
                await self.ws.send_json({"type": "leave"})
            while not self.ws.closed:
                await self.ws.receive(timeout=20)
            await self.session.close()

        self._run(go())
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_operator_commands(server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "token", "issue", "algebra", "s1")
    assert code == 1 and "404 Room not found" in err
    create(server, "algebra")
    code, out, _ = cli(capsys, "rooms", "list")
    assert code == 0 and out.split()[:2] == ["algebra", "created"]  # nobody joined yet
    code, out, _ = cli(capsys, "rooms", "list", "--status", "live")
    assert code == 0 and "algebra" not in out
    code, out, _ = cli(capsys, "rooms", "show", "algebra")
    shown = json.loads(out)
    assert shown["status"]["title"] == "Algebra" and shown["summary"]["roomId"] == "algebra"
    code, out, _ = cli(capsys, "token", "issue", "algebra", "s1", "--name", "Sam", "--ttl", "600")
    token, iframe = out.split()
    assert code == 0 and iframe.endswith(f"/iframe/live?token={token}")

    sam = Joined(server, token)  # the issued token really joins the class
    code, out, _ = cli(capsys, "participants", "list", "algebra", "--json")
    roster = {p["uid"]: p for p in json.loads(out)}
    assert roster["s1"]["connected"] is True and roster["s1"]["name"] == "Sam" and roster["t1"]["connected"] is False
    code, out, _ = cli(capsys, "participants", "kick", "algebra", "s1", "--reason", "spam")
    assert code == 0 and "removed s1" in out
    sam.leave()
    roster = {p["uid"]: p for p in json.loads(cli(capsys, "participants", "list", "algebra", "--json")[1])}
    assert roster["s1"]["removed"] is True and roster["s1"]["connected"] is False
    code, _, err = cli(capsys, "token", "issue", "algebra", "s1")
    assert code == 1 and "removed" in err

    # A finished recording (its row and file written as the recorder would) is listed and downloaded.
    db = sqlite3.connect(server.data_dir / "classcast.db")
    sid = db.execute("SELECT sid FROM rooms WHERE room_id = 'algebra'").fetchone()[0]
    folder = server.data_dir / "recordings" / "EG_cliTest0001"
    folder.mkdir(parents=True)
    (folder / "composite.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    now = int(time.time() * 1000)
    with db:
        db.execute("INSERT INTO recordings (id, room_sid, status, options, started_at, ended_at, size, duration) "
                   "VALUES ('EG_cliTest0001', ?, 'EGRESS_COMPLETE', '{}', ?, ?, 10256, 3.0)", (sid, now, now))
        db.execute("INSERT INTO recording_files (id, recording_id, path, label, size, duration, created_at) "
                   "VALUES ('RF_cliTest00001', 'EG_cliTest0001', 'EG_cliTest0001/composite.mp4', 'composite', "
                   "10256, 3.0, ?)", (now,))
    db.close()
    code, out, _ = cli(capsys, "recordings", "list", "algebra")
    assert code == 0 and out.split()[:2] == ["EG_cliTest0001", "EGRESS_COMPLETE"]
    code, out, _ = cli(capsys, "recordings", "download", "algebra", "--out", str(tmp_path / "dl"))
    [got] = list((tmp_path / "dl").iterdir())
    assert code == 0 and got.name.startswith("recording-") and got.name.endswith(".mp4")
    assert got.read_bytes() == (folder / "composite.mp4").read_bytes()

    receiver = Receiver(free_port(), [])
    receiver.start()
    try:
        code, out, _ = cli(capsys, "webhooks", "add", f"http://127.0.0.1:{receiver.port}/hook",
                           "--event", "room_finished", "--description", "LMS")
        hook_id, secret = out.split("\n")[0], out.split()[-1]
        assert code == 0 and hook_id.startswith("WH_") and secret.startswith("whsec_")
        code, out, _ = cli(capsys, "webhooks", "list")
        assert hook_id in out and "room_finished" in out and secret not in out
        code, out, _ = cli(capsys, "webhooks", "test", hook_id)
        assert code == 0 and out.strip() == "delivered (200)"
        assert Webhook(secret).verify(receiver.got[0][2], receiver.got[0][1])["type"] == "webhook_test"
        code, out, _ = cli(capsys, "rooms", "end", "algebra")
        assert code == 0 and out.startswith("ended algebra")
        deadline = time.monotonic() + 20
        while len(receiver.got) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        finished = Webhook(secret).verify(receiver.got[1][2], receiver.got[1][1])
        assert finished["type"] == "room_finished" and finished["data"]["roomId"] == "algebra"
        assert cli(capsys, "webhooks", "remove", hook_id)[0] == 0
        assert cli(capsys, "webhooks", "remove", hook_id)[0] == 1
    finally:
        receiver.stop()
    code, out, _ = cli(capsys, "rooms", "list", "--status", "finished")
    assert "algebra" in out
    code, _, err = cli(capsys, "rooms", "list", "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach the server" in err


def test_drain_lets_the_class_finish_then_stops(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = Joined(server, create(server, "live")["token"])
    code, out, _ = cli(capsys, "drain")
    assert code == 0 and f"pid {server.proc.pid}" in out
    deadline = time.monotonic() + 10
    while requests.get(f"{server.base}/readyz", timeout=5).status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = requests.post(f"{server.base}/v1/room/create", headers={"VF-ORG-ID": server.org}, timeout=10, json={
        "roomId": "late", "title": "Late", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0 and r.json()["code"] == "SERVER_DRAINING"
    time.sleep(1.5)
    assert server.proc.poll() is None  # the class is still running: the server waits for it
    assert requests.get(f"{server.base}/v1/room/live/status", headers={"VF-ORG-ID": server.org},
                        timeout=5).json()["data"]["isActive"] is True
    teacher.leave()
    assert server.proc.wait(30) == 0
    with sqlite3.connect(server.data_dir / "classcast.db") as db:
        ended = db.execute("SELECT end_reason, credits_debited FROM rooms WHERE room_id = 'live'").fetchone()
        open_sessions = db.execute("SELECT COUNT(*) FROM sessions WHERE left_at IS NULL").fetchone()[0]
    assert ended[0] == "server_drain" and open_sessions == 0
    code, _, err = cli(capsys, "drain")
    assert code == 2 and "no running server" in err  # the pid file went with the server


def test_second_sigterm_stops_at_once(server: Server, tmp_path: Path) -> None:
    teacher = Joined(server, create(server, "live")["token"])
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while requests.get(f"{server.base}/readyz", timeout=5).status_code != 503:  # the drain has begun
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert server.proc.poll() is None  # draining: the class is still running
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0 and time.monotonic() - started < 15
    teacher.leave()
    with sqlite3.connect(server.data_dir / "classcast.db") as db:
        assert db.execute("SELECT ended_at FROM rooms WHERE room_id = 'live'").fetchone()[0] is None
    again = Server(server.data_dir, tmp_path / "server2.log", ENV)  # the next start closes what was left open
    try:
        with sqlite3.connect(server.data_dir / "classcast.db") as db:
            reasons = [r[0] for r in db.execute("SELECT leave_reason FROM sessions")]
        assert reasons == ["server_restart"]
    finally:
        again.stop()
