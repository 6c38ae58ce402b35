"""classcast as a benchmark target: `classcast serve` started here (or a running one at a URL), the REST API for
the room and join tokens, the signaling WebSocket of docs/signaling.md for offers and answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from bench.targets import browser_answer, stop
from sfu.peer import Peer


class Signal:
    """One participant's signaling WebSocket (the subset of docs/signaling.md the bench needs)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.url = session, base.replace("http", "ws", 1) + f"/v1/rtc?token={token}"
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.handler: Any = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> dict[str, Any]:
        self.ws = await self.session.ws_connect(self.url, heartbeat=20)
        self.task = asyncio.create_task(self._read())
        await self.send({"type": "join"})
        return await self.wait("joined")

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            if self.handler is not None and message.get("type") in ("offer", "candidate"):
                await self.handler(message)
            else:
                self.queue.put_nowait(message)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def wait(self, kind: str, timeout: float = 20) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                message = await self.queue.get()
                if message.get("type") == kind:
                    return message
                if message.get("type") == "error":
                    raise RuntimeError(f"signaling error: {message}")
        return await asyncio.wait_for(find(), timeout)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def add_candidate(peer: Peer, candidate: dict[str, Any] | None) -> None:
    if peer.pc.remoteDescription is None:
        return
    if candidate is None:
        await peer.pc.addIceCandidate(None)
        return
    line = candidate.get("candidate", "")
    if line and f"a={line}" not in peer.pc.remoteDescription.sdp:
        ice = candidate_from_sdp(line.removeprefix("candidate:"))
        ice.sdpMid, ice.sdpMLineIndex = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
        await peer.pc.addIceCandidate(ice)


class Server:
    """`classcast serve` on 127.0.0.1 with a throw-away data folder; media candidates on ice_host."""

    def __init__(self, ice_host: str, entry: str = "control.cli", env: dict[str, str] | None = None,
                 data_dir: str | None = None, tree: str = "") -> None:
        """`entry`: the module whose `main` runs `serve` (the soak's runtime probe wraps the real one); `data_dir`:
        an existing data folder to serve (a restart after a crash) instead of a new one; `tree`: run the server
        from that checkout (its code on PYTHONPATH, same virtualenv) instead of this one."""
        self.dir = data_dir or tempfile.mkdtemp(prefix="classcast-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CLASSCAST_HOST": "127.0.0.1", "CLASSCAST_PORT": str(self.port),
               "CLASSCAST_DATA_DIR": self.dir, "CLASSCAST_LLM_BACKEND": "fake", "CLASSCAST_ICE_HOSTS": ice_host,
               "CLASSCAST_ICE_ALLOWED_NETWORKS": f"{ice_host}/32", **(env or {})}
        if tree:
            env["PYTHONPATH"] = os.path.abspath(tree)
        # CLASSCAST_BENCH_SERVER_LOG=FILE: the server's log (INFO: ICE/consent/DTLS state changes) goes there
        log_path = os.environ.get("CLASSCAST_BENCH_SERVER_LOG", "")
        level = "INFO" if log_path else "WARNING"
        self.log = open(log_path, "a") if log_path else None
        self.proc = subprocess.Popen([sys.executable, "-c", f"import sys; from {entry} import main; "
                                      f"sys.exit(main(['serve', '--log-level', '{level}']))"],
                                     env=env, stdout=subprocess.PIPE, stderr=self.log or subprocess.DEVNULL, text=True,
                                     cwd=os.path.abspath(tree) if tree else None)
        self.org = ""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("classcast serve exited before serving")
            m = re.match(r"Demo organization[^:]*: (\S+)", line)
            if m:
                self.org = m.group(1)
                break
        if not self.org:
            raise RuntimeError("classcast serve did not print its demo organization")

    def stop(self) -> None:
        stop(self.proc)
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


async def server_settings(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """How the server runs its media, from its /readyz: `sfu_workers` N worker processes, or 0 = in the server
    process (CLASSCAST_SFU_WORKERS=0). A bench started here inherits CLASSCAST_SFU_WORKERS from its environment;
    unset, the server's default (one worker per core) runs."""
    with contextlib.suppress(aiohttp.ClientError, ValueError, KeyError, TypeError):
        async with session.get(base + "/readyz") as resp:
            workers = (await resp.json())["checks"]["sfu"]["workers"]
        return {"sfu_workers": 0 if workers == "in-process" else int(workers)}
    return {"sfu_workers": None}


class ClasscastTarget:
    name = "classcast"
    rids = ("q", "h", "f")  # as Chrome offers them, low to high

    def __init__(self, ice_host: str, url: str = "", org: str = "", server_pid: int = 0, tree: str = "") -> None:
        self.ice_host = ice_host
        self.tree = tree
        self.base, self.org, self.pid = url.rstrip("/"), org, server_pid
        self.server: Server | None = None
        self.room = f"bench-{os.getpid()}"
        self.signal: Signal | None = None
        self.settings: dict[str, Any] = {}  # what the server runs (its SFU workers), for the run's JSON

    async def rest(self, session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with session.post(self.base + path, json=body, headers={"VF-ORG-ID": self.org}) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{path}: {resp.status} {data}")
            return data["data"]

    async def start(self, session: aiohttp.ClientSession) -> None:
        if not self.base:
            self.server = await asyncio.get_running_loop().run_in_executor(
                None, lambda: Server(self.ice_host, tree=self.tree))
            self.base, self.org, self.pid = self.server.base, self.server.org, self.server.proc.pid
        self.settings = await server_settings(session, self.base)
        n = self.settings["sfu_workers"]
        where = "the server process" if n == 0 else f"{n} SFU worker processes" if n else "unknown processes"
        print(f"{self.name}: media in {where}; CPU and RSS figures cover the server's whole process tree",
              file=sys.stderr, flush=True)

    async def publish(self, session: aiohttp.ClientSession, peer: Peer, sdp: str,
                      tracks: list[tuple[str, str]]) -> str:
        teacher = await self.rest(session, "/v1/room/create", {
            "roomId": self.room, "title": "Fan-out benchmark", "settings": {"maxParticipants": 5000},
            "participant": {"uid": "teacher", "name": "Teacher", "role": "TEACHER"}})
        self.signal = Signal(session, self.base, teacher["token"])

        async def on_signal(message: dict[str, Any]) -> None:
            if message.get("type") == "candidate":
                await add_candidate(peer, message.get("candidate"))
            # the teacher receives nothing: a server offer (none in these scenarios) is not answered

        self.signal.handler = on_signal
        await self.signal.open()
        await self.signal.send({"type": "publish", "tracks": [{"source": s} for s, _ in tracks]})
        await self.signal.wait("publish_ready")
        await self.signal.send({"type": "offer", "sdp": sdp,
                                "tracks": [{"source": s, "mid": mid} for s, mid in tracks]})
        return (await self.signal.wait("answer"))["sdp"]

    async def join_infos(self, session: aiohttp.ClientSession, first: int, last: int) -> list[Any]:
        tokens = []
        for i in range(first, last):
            data = await self.rest(session, f"/v1/room/{self.room}/join",
                                   {"participant": {"uid": f"s{i}", "name": f"Student {i}", "role": "STUDENT"}})
            tokens.append((self.base, data["token"]))
        return tokens

    async def close(self) -> None:
        if self.signal is not None:
            await self.signal.close()
        if self.server is not None:
            self.server.stop()


async def subscribe(session: aiohttp.ClientSession, info: tuple[str, str], peer: Peer) -> Signal:
    base, token = info
    signal = Signal(session, base, token)

    async def on_signal(message: dict[str, Any]) -> None:
        if message["type"] == "offer":
            answer = await peer.accept_offer(RTCSessionDescription(sdp=message["sdp"], type="offer"))
            await signal.send({"type": "answer", "sdp": browser_answer(message["sdp"], answer.sdp)})
        else:
            await add_candidate(peer, message.get("candidate"))

    signal.handler = on_signal
    await signal.open()
    return signal
