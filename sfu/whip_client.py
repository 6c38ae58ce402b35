"""The Python client in WHIP/WHEP mode: publish or play over plain HTTP, as OBS, GStreamer or a WHEP player do.

A sibling of sfu/client.py (the WebSocket client) rather than a mode inside it: WHIP and WHEP share nothing of the
signaling protocol but the media. One offer, one answer (RFC 9725): candidates are in the offer (aiortc gathers
before it writes the SDP), so nothing is trickled, and DELETE on the session's Location ends it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from sfu.ice import IceConfig
from sfu.peer import restrict_pc_gathering

MAX_REDIRECTS = 3  # several classcast nodes: a 307 to the node hosting the class


class WhipError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class WhipClient:
    """`await publish({"camera": track, "microphone": track})` (WHIP) or `await play()` (WHEP), then `close()`."""

    def __init__(self, endpoint: str, token: str, *, ice: IceConfig | None = None) -> None:
        self.endpoint = endpoint  # e.g. http://127.0.0.1:8080/v1/whip/physics-1
        self.token = token
        self.ice = ice or IceConfig()
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        restrict_pc_gathering(self.pc, self.ice)
        self.location: str | None = None
        self.etag: str | None = None
        self.answer: str | None = None
        self.tracks: dict[str, MediaStreamTrack] = {}  # WHEP: kind -> the received track

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def publish(self, tracks: dict[str, MediaStreamTrack]) -> None:
        """Offer the tracks sendonly (in the order given: camera, then microphone, as an encoder would)."""
        for track in tracks.values():
            self.pc.addTransceiver(track, direction="sendonly")
        await self._negotiate()

    async def play(self, query: str = "") -> None:
        """Offer to receive one video and one audio track."""
        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks[track.kind] = track

        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self._negotiate(query)

    async def _negotiate(self, query: str = "") -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        url = self.endpoint + query
        async with aiohttp.ClientSession() as session:
            for _ in range(MAX_REDIRECTS + 1):
                # Redirects by hand: several classcast nodes answer 307 to the class's host (RFC 9725 4.5), and
                # aiohttp would drop the bearer token on the way to another origin.
                async with session.post(url, data=self.pc.localDescription.sdp.encode(), allow_redirects=False,
                                        headers={**self.headers, "Content-Type": "application/sdp"}) as resp:
                    body = await resp.text()
                    if resp.status in (307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 201:
                        raise WhipError(resp.status, body)
                    self.location = urljoin(url, resp.headers["Location"])  # relative to where it was created
                    self.etag = resp.headers.get("ETag")
                    break
            else:
                raise WhipError(310, f"more than {MAX_REDIRECTS} redirects")
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def wait_connected(self, timeout: float = 10) -> None:
        async def connected() -> None:
            while self.pc.connectionState != "connected":
                if self.pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"connection {self.pc.connectionState}")
                await asyncio.sleep(0.05)

        await asyncio.wait_for(connected(), timeout)

    async def request(self, method: str, body: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A request on the session (PATCH, DELETE): status and text."""
        assert self.location is not None
        async with aiohttp.ClientSession() as session, session.request(
                method, self.location, data=body.encode(), headers={**self.headers, **(headers or {})}) as resp:
            return resp.status, await resp.text()

    async def close(self) -> None:
        if self.location is not None:
            await self.request("DELETE")
            self.location = None
        await self.pc.close()
