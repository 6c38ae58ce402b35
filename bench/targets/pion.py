"""pion as a benchmark target: the minimal broadcast SFU of bench/peers/pion, built here in GOPATH mode from
Debian's golang-go and golang-github-pion-webrtc.v3-dev (no module downloads), cached by its source's hash."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from bench.clip import cache_dir
from bench.targets import browser_answer, stop
from sfu.peer import Peer

SOURCE = Path(__file__).resolve().parent.parent / "peers" / "pion"
GOPATH = "/usr/share/gocode"  # where Debian's golang-*-dev packages put their sources
PACKAGES = "golang-go golang-github-pion-webrtc.v3-dev"


def missing() -> str | None:
    """Why the pion SFU cannot be built here, or None."""
    if shutil.which("go") is None or not Path(GOPATH, "src/github.com/pion/webrtc/go.mod").exists():
        return f"the pion target needs Debian's {PACKAGES} (apt-get install {PACKAGES}); make test installs them"
    return None


def build() -> Path:
    """The SFU's binary, compiled once per version of its source (a few seconds; Go caches the libraries)."""
    if why := missing():
        raise RuntimeError(why)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(SOURCE.glob("*.go")))).hexdigest()[:12]
    binary = cache_dir() / f"pion-sfu-{digest}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pion-gopath-") as gopath:
        # GOPATH mode resolves .../webrtc/v3 imports to Debian's tree only for code inside a GOPATH with a go.mod
        # ("minimal module compatibility"): the source is copied into a throw-away GOPATH.
        link = Path(gopath, "src", "pion-sfu")
        shutil.copytree(SOURCE, link)
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GOPATH}", "GOFLAGS": "",
               "GOCACHE": str(cache_dir() / "go-build"), "CGO_ENABLED": "0"}
        tmp = binary.with_suffix(".tmp")
        run = subprocess.run(["go", "build", "-o", str(tmp), "."], cwd=link, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"building the pion SFU failed:\n{run.stderr[-3000:]}")
        tmp.replace(binary)
    return binary


class PionTarget:
    """`pion` as pion's default interceptors leave it (no transport-wide numbers stamped, so no feedback comes back);
    `pion-twcc` stamps them and runs pion's congestion control estimator per subscriber, as classcast does."""

    rids = ("q", "h", "f")  # told apart by name (-layer)

    def __init__(self, ice_host: str, twcc: bool = False) -> None:
        self.name = "pion-twcc" if twcc else "pion"
        self.twcc = twcc
        self.ice_host = ice_host
        self.base = ""
        self.pid = 0
        self.proc: subprocess.Popen[str] | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        self.proc = await loop.run_in_executor(None, self._launch)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), 30)
        if not line.startswith("listening "):
            raise RuntimeError(f"the pion SFU did not start: {line!r}")
        self.base, self.pid = line.split()[1], self.proc.pid

    def _launch(self) -> subprocess.Popen[str]:
        return subprocess.Popen([str(build()), "-listen", "127.0.0.1:0", "-ice-host", self.ice_host,
                                 *(["-twcc"] if self.twcc else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    async def publish(self, session: aiohttp.ClientSession, peer: Peer, sdp: str,
                      tracks: list[tuple[str, str]]) -> str:
        return (await post(session, self.base + "/publish", {"sdp": sdp}))["sdp"]

    async def join_infos(self, session: aiohttp.ClientSession, first: int, last: int) -> list[Any]:
        return [self.base] * (last - first)

    async def close(self) -> None:
        stop(self.proc)


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
        return await resp.json()


class _Left:
    """pion's subscribers need no open signaling: leaving is closing the peer connection."""

    async def close(self) -> None:
        return None


async def subscribe(session: aiohttp.ClientSession, base: str, peer: Peer) -> _Left:
    offer = await post(session, base + "/subscribe", {})
    answer = await peer.accept_offer(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
    await post(session, base + "/answer", {"id": offer["id"], "sdp": browser_answer(offer["sdp"], answer.sdp)})
    return _Left()
