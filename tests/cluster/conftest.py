"""Several real `classcast serve` processes on 127.0.0.1 (different ports) on one PostgreSQL and one Redis that the
test session starts (tests/pg.py, tests/redis_server.py), with one shared secret and one shared recordings folder:
what docs/operations.md's "Running several nodes" tells an operator to run."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from sfu.client import Client
from tests.control.serverproc import Server
from tests.pg import PostgresCluster
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    from playwright.async_api import Page

SECRET = "district-9-shared-secret-0123456789abcdef"


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    nodes: list[Server] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None

    def start_node(self, **env: str) -> Server:
        i = len(self.nodes)
        node = Server(self.root / f"node{i}", self.root / f"node{i}.log", {**self.env, **env})
        self.nodes.append(node)
        return node

    def kill(self, node: Server) -> None:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    async def rest(self, node: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.request(method, node.base + path, json=body, headers={"VF-ORG-ID": node.org}) as r:
            return r.status, await r.json()

    async def ok(self, node: Server, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.rest(node, method, path, body)
        assert status == 200, payload
        return payload["data"]

    def log(self, node: Server) -> str:
        return (self.root / f"node{self.nodes.index(node)}.log").read_text(errors="replace")


@pytest.fixture
async def cluster(tmp_path: Path, postgres_cluster: PostgresCluster, redis_server: RedisServer
                  ) -> AsyncIterator[Cluster]:
    name = await postgres_cluster.create_database()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    (tmp_path / "recordings").mkdir()
    env = {
        "CLASSCAST_DATABASE_URL": postgres_cluster.url(name),
        "CLASSCAST_REDIS_URL": redis_server.url,
        "CLASSCAST_SECRET": SECRET,
        "CLASSCAST_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "CLASSCAST_RTC_PORT": "0",
        "CLASSCAST_SFU_WORKERS": "0",  # media in each node's own process: the nodes are what is under test
        "CLASSCAST_LLM_BACKEND": "fake",
    }
    c = Cluster(tmp_path, env)
    c.http = aiohttp.ClientSession()
    try:
        yield c
    finally:
        await c.http.close()
        for node in c.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGINT)
        for node in c.nodes:
            try:
                node.proc.wait(30)
            except Exception:
                node.proc.kill()
                node.proc.wait(10)
        await postgres_cluster.drop_database(name)


async def plays_camera(client: Client, teacher: Client, width: int, timeout: float = 20) -> None:
    """`client` plays `teacher`'s camera as it is published now (its current track id, so a track a reconnect or a
    move of the class replaced does not count): a frame decoded after this call (frames queued before are dropped
    first), `width` wide."""
    deadline = time.monotonic() + timeout
    while True:
        current = (teacher.published.get("camera") or {}).get("trackId")
        remote = next((r for r in client.remote.values() if current and r.info.get("trackId") == current), None)
        if remote is not None:
            break
        assert time.monotonic() < deadline, (client.name, client.state, client.node_url, "teacher", teacher.node_url,
                                             current, [r.info.get("trackId") for r in client.remote.values()])
        await asyncio.sleep(0.1)
    queue = getattr(remote.track, "_queue", None)  # aiortc's RemoteStreamTrack: frames decoded before now
    while queue is not None and not queue.empty():
        queue.get_nowait()
    try:
        frame = await asyncio.wait_for(remote.track.recv(), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        raise AssertionError(("no frame", client.name, client.state, client.node_url, "teacher", teacher.name,
                              teacher.state, teacher.node_url, current, await _media_seen(client, remote.mid),
                              await _media_seen(teacher, None))) from None
    assert frame.width == width, (client.name, frame.width)


async def _media_seen(client: Client, mid: str | None) -> dict[str, Any]:
    """What a client's connection says of its media (for a failure's message): its states, and the RTP packets of
    the receiver of `mid` (or of every sender when None)."""
    pc = client.pc
    if pc is None:
        return {"pc": None}
    seen: dict[str, Any] = {"pc": pc.connectionState, "ice": pc.iceConnectionState}
    for transceiver in pc.getTransceivers():
        if mid is not None and transceiver.mid == mid:
            receiver = transceiver.receiver
            stats = await receiver.getStats()
            seen["received"] = [(getattr(s, "ssrc", None), getattr(s, "packetsReceived", None))
                                for s in stats.values() if s.type == "inbound-rtp"]
            thread = getattr(receiver, "_RTCRtpReceiver__decoder_thread", None)
            seen["decoder"] = None if thread is None else thread.is_alive()
            buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
            packets = [p for p in getattr(buffer, "_packets", []) if p is not None]
            seen["jitter"] = (getattr(buffer, "_origin", None), len(packets),
                              sorted(p.sequence_number for p in packets)[:3])
            seen["codecs"] = sorted(getattr(receiver, "_RTCRtpReceiver__codecs", {}))
            queue = getattr(receiver.track, "_queue", None)
            seen["queued"] = queue.qsize() if queue is not None else None
        elif mid is None and transceiver.sender.track is not None:
            stats = await transceiver.sender.getStats()
            seen[f"sent {transceiver.mid}"] = [getattr(s, "packetsSent", None) for s in stats.values()
                                               if s.type == "outbound-rtp"]
    return seen


async def plays_320_wide(page: Page, tries: int = 200) -> bool:
    """A video element of the page shows the 320-pixel-wide test camera and has played past 0.3 s (20 s at most)."""
    for _ in range(tries):
        if await page.evaluate("() => [...document.querySelectorAll('video')]"
                               ".some((v) => v.videoWidth === 320 && v.currentTime > 0.3)"):
            return True
        await page.wait_for_timeout(100)
    return False
