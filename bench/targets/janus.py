"""Janus as a benchmark target: Debian's janus with its VideoRoom plugin, configured here (loopback HTTP API, one
room with the run's video codec, VP8 by default), one Janus session per participant as a browser would have.

Janus skips loopback interfaces when it gathers candidates: runs against it happen inside the bench's network
namespace (bench/netns.py), with candidates pinned to the namespace's address by `ice_enforce_list`.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from bench.targets import browser_answer, stop
from sfu.peer import Peer

JANUS = "/usr/bin/janus"
LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGIN = "janus.plugin.videoroom"


def missing() -> str | None:
    if not Path(JANUS).exists() or not (LIBS / "plugins" / "libjanus_videoroom.so").exists():
        return "the janus target needs Debian's janus (apt-get install janus); make test installs it"
    return None


def _config(folder: Path, port: int, ice_host: str) -> None:
    """Only the VideoRoom plugin and the HTTP transport are loaded (their folders hold links to those alone)."""
    for kind, libs in (("plugins", ["libjanus_videoroom.so"]), ("transports", ["libjanus_http.so"]),
                       ("events", []), ("loggers", [])):
        (folder / kind).mkdir()
        for lib in libs:
            (folder / kind / lib).symlink_to(LIBS / kind / lib)
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{folder}/plugins"
    transports_folder = "{folder}/transports"
    events_folder = "{folder}/events"
    loggers_folder = "{folder}/loggers"
    log_to_stdout = true
    debug_level = 3
    session_timeout = 0
}}
certificates: {{}}
media: {{
    ipv6 = false
}}
nat: {{
    ice_enforce_list = "{ice_host}"
    ignore_mdns = true
}}
plugins: {{}}
transports: {{}}
events: {{}}
loggers: {{}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {}\n")


class Session:
    """One Janus session with one VideoRoom handle, over the HTTP API (long polls for events)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.session = self.handle = 0

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": f"{random.getrandbits(48):x}"}
        async with self.http.post(self.base + path, json=body) as resp:
            reply = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply['error']}")
        return reply

    async def open(self) -> Session:
        self.session = (await self._post("/janus", {"janus": "create"}))["data"]["id"]
        self.handle = (await self._post(f"/janus/{self.session}", {"janus": "attach", "plugin": PLUGIN}))["data"]["id"]
        return self

    async def request(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        """A VideoRoom request; synchronous ones return their data, asynchronous ones their event."""
        message: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self._post(f"/janus/{self.session}/{self.handle}", message)
        if reply.get("janus") == "success":
            return self._data(reply)
        return await self.event()

    async def event(self, timeout: float = 30) -> dict[str, Any]:
        """The next plugin event (its data, with the jsep under "jsep" if it carries one)."""
        async def poll() -> dict[str, Any]:
            while True:
                async with self.http.get(f"{self.base}/janus/{self.session}", params={"maxev": "1"}) as resp:
                    reply = await resp.json(content_type=None)
                if reply.get("janus") == "event" and reply.get("sender") == self.handle:
                    return self._data(reply)

        return await asyncio.wait_for(poll(), timeout)

    @staticmethod
    def _data(reply: dict[str, Any]) -> dict[str, Any]:
        data = dict(reply.get("plugindata", {}).get("data", {}))
        if "error" in data:
            raise RuntimeError(f"janus videoroom: {data['error']}")
        if "jsep" in reply:
            data["jsep"] = reply["jsep"]
        return data

    async def close(self) -> None:
        try:
            await self._post(f"/janus/{self.session}", {"janus": "destroy"})
        except (aiohttp.ClientError, RuntimeError):
            pass  # the server may be gone already


class JanusTarget:
    name = "janus"
    rids = ("f", "h", "q")  # Janus takes the a=simulcast order as high to low (RFC 8853)

    def __init__(self, ice_host: str, codec: str) -> None:
        self.ice_host, self.codec = ice_host, codec
        self.base = ""
        self.pid = 0
        self.room = random.randint(1, 2**31)
        self.feed = 0
        self.dir = Path(tempfile.mkdtemp(prefix="janus-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.publisher: Session | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        if why := missing():
            raise RuntimeError(why)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        _config(self.dir, port, self.ice_host)
        self.base = f"http://127.0.0.1:{port}"
        self.proc = await asyncio.get_running_loop().run_in_executor(None, self._launch)
        self.pid = self.proc.pid
        for _ in range(100):
            if self.proc.poll() is not None:
                break
            try:
                async with session.get(self.base + "/janus/info") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"janus did not answer on {self.base}: {self.log_tail()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"janus exited: {self.log_tail()}")

    def _launch(self) -> subprocess.Popen[bytes]:
        with open(self.dir / "janus.log", "wb") as log:
            return subprocess.Popen([JANUS, "-F", str(self.dir), "-C", str(self.dir / "janus.jcfg")],
                                    stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        try:
            return (self.dir / "janus.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    async def publish(self, session: aiohttp.ClientSession, peer: Peer, sdp: str,
                      tracks: list[tuple[str, str]]) -> str:
        self.publisher = await Session(session, self.base).open()
        await self.publisher.request({"request": "create", "room": self.room, "publishers": 1,
                                      "videocodec": self.codec, "audiocodec": "opus", "bitrate": 0,
                                      "notify_joining": False})
        joined = await self.publisher.request({"request": "joinandconfigure", "room": self.room,
                                               "ptype": "publisher", "display": "Teacher"},
                                              {"type": "offer", "sdp": sdp})
        if "jsep" not in joined:
            raise RuntimeError(f"janus did not answer the teacher's offer: {joined}")
        self.feed = joined["id"]
        return joined["jsep"]["sdp"]

    async def join_infos(self, session: aiohttp.ClientSession, first: int, last: int) -> list[Any]:
        return [(self.base, self.room, self.feed)] * (last - first)

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        stop(self.proc)
        if os.environ.get("BENCH_KEEP_JANUS_LOG") is None:
            shutil.rmtree(self.dir, ignore_errors=True)


async def subscribe(session: aiohttp.ClientSession, info: tuple[str, int, int], peer: Peer) -> Session:
    base, room, feed = info
    janus = await Session(session, base).open()
    attached = await janus.request({"request": "join", "room": room, "ptype": "subscriber",
                                    "streams": [{"feed": feed}]})
    if "jsep" not in attached:
        raise RuntimeError(f"janus sent no offer to a subscriber: {attached}")
    answer = await peer.accept_offer(RTCSessionDescription(sdp=attached["jsep"]["sdp"], type="offer"))
    await janus.request({"request": "start"},
                        {"type": "answer", "sdp": browser_answer(attached["jsep"]["sdp"], answer.sdp)})
    return janus
