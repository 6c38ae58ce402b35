"""A Python classroom client: joins with a token, publishes, subscribes, follows events, reconnects.

Tests and bench/ use it. It is a normal aiortc peer (it decodes what it receives, like a browser would), with ICE
pinned to the configured addresses so that nothing leaves the machine. States follow the concepts seed:
idle -> connecting -> connected <-> reconnecting -> ended | kicked | error.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, VIDEO_PTIME, MediaStreamError
from aiortc.sdp import candidate_from_sdp

from sfu import nack_retry
from sfu.ice import IceConfig
from sfu.peer import restrict_pc_gathering

log = logging.getLogger("classcast.client")


class State(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    KICKED = "kicked"
    ERROR = "error"


TERMINAL = (State.ENDED, State.KICKED, State.ERROR)


MAX_REDIRECTS = 3  # a node that does not host the class answers join with REDIRECT and the host's URL


class ClientError(Exception):
    def __init__(self, code: str, message: str, url: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.url = url  # REDIRECT's: the signaling URL of the node hosting the class


@dataclass
class RemoteTrack:
    mid: str
    info: dict[str, Any]
    track: MediaStreamTrack


class Client:
    def __init__(self, base_url: str, token: str, *, ice: IceConfig | None = None, reconnect: bool = True,
                 backoff: tuple[float, float] = (0.2, 5.0), name: str = "client") -> None:
        self.url = base_url.rstrip("/").replace("http", "ws", 1) + "/v1/rtc"
        self.node_url: str | None = None  # where the current connection went (after any redirect)
        self.token = token
        self.ice = ice or IceConfig()
        self.reconnect_enabled = reconnect
        self.backoff = backoff
        self.name = name
        self.state = State.IDLE
        self.states: list[State] = [State.IDLE]
        self.joined: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self.remote: dict[str, RemoteTrack] = {}
        self.published: dict[str, dict[str, Any]] = {}  # source -> track info
        self.local_tracks: dict[str, MediaStreamTrack] = {}
        # aiortc stops a sender's track when its connection closes; publishing relayed copies keeps the
        # source alive for the next connection after a reconnect or a transport restart.
        self._relay = MediaRelay()
        self.on_message: Callable[[dict[str, Any]], None] | None = None
        self.pc: RTCPeerConnection | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._negotiation = asyncio.Lock()
        self._arrived = asyncio.Condition()
        self._state_changed = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.socket_closed = asyncio.Event()  # set when the current WebSocket is gone
        self.nacks_repeated = 0  # packets asked for again, as a browser does (sfu/nack_retry.py)
        self._asking_again = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        """A background step's failure is this client's to report, not the event loop's ('Task exception was
        never retrieved'): an answer whose socket closed meanwhile, for one, is redone by the reconnect."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("%s: %s failed: %r", self.name, task.get_coro().__qualname__, exc)

    # ---- state --------------------------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.states.append(state)
            self._state_changed.set()

    async def wait_state(self, *states: State, timeout: float = 10) -> State:
        """Wakes on the state's change itself: a reconnect ends in `connected` after its last message arrived."""
        async def check() -> State:
            while self.state not in states:
                self._state_changed.clear()
                await self._state_changed.wait()
            return self.state
        return await asyncio.wait_for(check(), timeout)

    # ---- connection ---------------------------------------------------------------------------------------

    async def connect(self, timeout: float = 10) -> dict[str, Any]:
        self._set_state(State.CONNECTING)
        self._session = self._session or aiohttp.ClientSession()
        try:
            await self._open(timeout)
        except ClientError as exc:
            self._set_state(State.KICKED if exc.code == "PARTICIPANT_REMOVED" else State.ERROR)
            raise
        self._set_state(State.CONNECTED)
        if not self._asking_again:
            self._asking_again = True
            self._spawn(self._ask_again())
        assert self.joined is not None
        return self.joined

    async def _ask_again(self) -> None:
        """For the client's life: ask again for video packets still missing (sfu/nack_retry.py), whichever
        connection is the current one."""
        while True:
            await asyncio.sleep(nack_retry.RETRY_S / 2)
            pc = self.pc
            if pc is None:
                continue
            for receiver in pc.getReceivers():
                self.nacks_repeated += await nack_retry.ask_again(receiver)

    async def _open(self, timeout: float) -> None:
        """Joins through `url` (every connection, reconnects too, starts there: the host may have changed),
        following REDIRECTs to the node that hosts the class."""
        url = self.url
        for _ in range(MAX_REDIRECTS):
            try:
                await self._open_at(url, timeout)
                self.node_url = url
                return
            except ClientError as exc:
                if exc.code != "REDIRECT" or not (exc.url or "").startswith(("ws://", "wss://")):
                    raise
                url = exc.url
                old, self._ws = self._ws, None  # its close is the redirect's, not a lost connection
                if old is not None:
                    await old.close()
                if self.pc is not None:
                    await self.pc.close()
        await self._open_at(url, timeout)
        self.node_url = url

    async def _open_at(self, url: str, timeout: float) -> None:
        assert self._session is not None
        self._ws = await self._session.ws_connect(f"{url}?token={self.token}", heartbeat=20)
        self.socket_closed = asyncio.Event()
        self.pc = self._new_pc([])
        count = len(self.messages)
        self._reader = asyncio.create_task(self._read(self._ws))
        await self.send({"type": "join"})
        joined = await self.wait_for("joined", timeout=timeout, since=count, errors=True)
        self.joined = joined
        servers = joined.get("iceServers") or []
        if servers:
            await self.pc.close()
            self.pc = self._new_pc(servers)

    def _new_pc(self, servers: list[dict[str, Any]]) -> RTCPeerConnection:
        ice_servers = [RTCIceServer(**s) for s in servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        restrict_pc_gathering(pc, self.ice)
        return pc

    async def send(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ClientError("NOT_CONNECTED", "not connected")
        await self._ws.send_str(json.dumps(message))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        redirected = False
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    message = json.loads(msg.data)
                    redirected = message.get("type") == "error" and message.get("code") == "REDIRECT"
                    await self._on_message(message, ws)
        except Exception:
            log.exception("%s: reader failed", self.name)
        finally:
            if ws is self._ws and not redirected:  # a redirect's close is followed by _open, not a reconnect
                self.socket_closed.set()
                await self._on_closed()
            elif redirected:
                async with self._arrived:
                    self._arrived.notify_all()

    async def _on_message(self, message: dict[str, Any], ws: aiohttp.ClientWebSocketResponse | None = None) -> None:
        kind = message.get("type")
        self.messages.append(message)
        if self.on_message is not None:
            self.on_message(message)
        if kind == "offer":
            self._spawn(self._answer(message, ws))
        elif kind == "candidate":
            self._spawn(self._add_candidate(message.get("candidate")))
        elif kind == "class_ended":
            self._set_state(State.ENDED)
        elif kind == "participant_removed" and message.get("self"):
            self._set_state(State.KICKED)
        elif kind == "reconnecting" and self.state == State.CONNECTED:
            # The server lost this connection's media (a worker died) and closes the socket next: the reconnect
            # that follows joins again on a live worker and publishes again.
            self._set_state(State.RECONNECTING)
        elif kind == "restarted":
            self.remote = {}  # at once: the old connection's tracks are dead, nobody may pick one up meanwhile
            self._spawn(self._after_restart())
        async with self._arrived:
            self._arrived.notify_all()

    async def _on_closed(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()
        if self._closing or self.state in TERMINAL or not self.reconnect_enabled:
            if self.state not in TERMINAL and not self._closing:
                self._set_state(State.ERROR)
            return
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        """A lost WebSocket: back off, join again with the same token, publish the same tracks again."""
        self._set_state(State.RECONNECTING)
        delay, cap = self.backoff
        old_pc = self.pc
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                if old_pc is not None:
                    await old_pc.close()
                    old_pc = None
                self.remote = {}
                await self._open(timeout=10)
                self._set_state(State.CONNECTED)
                await self._republish()
                return
            except ClientError as exc:
                if exc.code in ("PARTICIPANT_REMOVED", "ROOM_ENDED", "TOKEN_EXPIRED", "INVALID_TOKEN",
                                "ROOM_NOT_FOUND"):
                    self._set_state(State.KICKED if exc.code == "PARTICIPANT_REMOVED" else State.ENDED
                                    if exc.code == "ROOM_ENDED" else State.ERROR)
                    return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            delay = min(cap, delay * 2)

    async def restart(self) -> None:
        """The media path failed but signaling is fine: ask for a fresh transport."""
        await self.send({"type": "restart"})

    async def _after_restart(self) -> None:
        async with self._negotiation:
            if self.pc is not None:
                await self.pc.close()
            self.pc = self._new_pc((self.joined or {}).get("iceServers") or [])
            self.remote = {}
        await self._republish()

    async def _republish(self) -> None:
        tracks = dict(self.local_tracks)
        self.published = {}
        if tracks:
            await self.publish(tracks)

    async def leave(self) -> None:
        with contextlib.suppress(ClientError, ConnectionError):
            await self.send({"type": "leave"})
        await self.close()
        self._set_state(State.IDLE)

    async def close(self) -> None:
        self._closing = True
        # A reconnect (or an answer) under way would go on with a closed session and end in an exception nobody
        # retrieves: they end here, with the client.
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 2)
        if self.pc is not None:
            await self.pc.close()
        for track in self.local_tracks.values():
            track.stop()  # a file player's reading thread ends with its tracks
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drop(self) -> None:
        """Test helper: lose the WebSocket abruptly, as a network failure would."""
        if self._ws is not None:
            await self._ws.close()

    # ---- waiting for messages -----------------------------------------------------------------------------

    async def wait_for(self, kind: str, predicate: Callable[[dict[str, Any]], bool] | None = None,
                       timeout: float = 10, since: int = 0, errors: bool = False) -> dict[str, Any]:
        """The first message of `kind` (after index `since`); with errors=True an error message raises."""
        async def find() -> dict[str, Any]:
            seen = since
            while True:
                for message in self.messages[seen:]:
                    if message.get("type") == kind and (predicate is None or predicate(message)):
                        return message
                    if errors and message.get("type") == "error":
                        raise ClientError(message.get("code", "ERROR"), message.get("message", ""), message.get("url"))
                seen = len(self.messages)
                if self._ws is None or self._ws.closed:
                    raise ClientError("CLOSED", f"connection closed while waiting for {kind}")
                async with self._arrived:
                    await self._arrived.wait()
        return await asyncio.wait_for(find(), timeout)

    async def request(self, message: dict[str, Any], reply: str, timeout: float = 10,
                      predicate: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        since = len(self.messages)
        await self.send(message)
        return await self.wait_for(reply, predicate, timeout=timeout, since=since, errors=True)

    # ---- media --------------------------------------------------------------------------------------------

    async def publish(self, tracks: dict[str, MediaStreamTrack], timeout: float = 15,
                      video_codec: str | None = None) -> list[dict[str, Any]]:
        """Publish {source: track}; returns the server's track infos. Raises ClientError when refused.

        `video_codec` ("video/VP8", "video/H264") offers only that codec, as a browser without the other would.
        """
        self.local_tracks.update(tracks)
        # Not under the negotiation lock: the server may first offer us the room's existing tracks and sends
        # publish_ready only once we answered, which takes that lock.
        await self.request({"type": "publish", "tracks": [{"source": s} for s in tracks]}, "publish_ready", timeout)
        async with self._negotiation:
            assert self.pc is not None
            mids = {}
            for source, track in tracks.items():
                transceiver = self.pc.addTransceiver(self._relay.subscribe(track, buffered=False),
                                                     direction="sendonly")
                if video_codec is not None and track.kind == "video":
                    caps = RTCRtpSender.getCapabilities("video").codecs
                    transceiver.setCodecPreferences([c for c in caps if c.mimeType in (video_codec, "video/rtx")])
                mids[source] = transceiver
            await self.pc.setLocalDescription(await self.pc.createOffer())
            since = len(self.messages)
            await self.send({"type": "offer", "sdp": self.pc.localDescription.sdp,
                             "tracks": [{"source": s, "mid": t.mid} for s, t in mids.items()]})
            answer = await self.wait_for("answer", timeout=timeout, since=since, errors=True)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            published = await self.wait_for("published", timeout=timeout, since=since, errors=True)
        for info in published["tracks"]:
            self.published[info["source"]] = info
        return published["tracks"]

    async def _answer(self, message: dict[str, Any], ws: aiohttp.ClientWebSocketResponse | None = None) -> None:
        async with self._negotiation:
            pc = self.pc
            if pc is None or (ws is not None and (ws is not self._ws or ws.closed)):
                return  # the offer's socket is gone: its connection is over, the reconnect negotiates afresh
            await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            for transceiver in pc.getTransceivers():
                nack_retry.install(transceiver.receiver)  # before its first packet: the answer is not sent yet
                info = message.get("tracks", {}).get(transceiver.mid)
                if info is not None and transceiver.receiver.track is not None:
                    self.remote[transceiver.mid] = RemoteTrack(transceiver.mid, info, transceiver.receiver.track)
            await self.send({"type": "answer", "sdp": pc.localDescription.sdp})
        async with self._arrived:
            self._arrived.notify_all()

    async def _add_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Trickled server candidates, applied after the description they belong to (same lock)."""
        async with self._negotiation:
            pc = self.pc
            if pc is None or pc.remoteDescription is None:
                return
            if candidate is None:
                await pc.addIceCandidate(None)
                return
            line = candidate.get("candidate", "")
            if line and f"a={line}" not in pc.remoteDescription.sdp:
                ice = candidate_from_sdp(line.removeprefix("candidate:"))
                ice.sdpMid, ice.sdpMLineIndex = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
                await pc.addIceCandidate(ice)

    async def remote_track(self, source: str, uid: str | None = None, timeout: float = 10) -> MediaStreamTrack:
        async def find() -> MediaStreamTrack:
            while True:
                for remote in self.remote.values():
                    if remote.info.get("source") == source and (uid is None or remote.info.get("uid") == uid):
                        return remote.track
                async with self._arrived:
                    await self._arrived.wait()
        return await asyncio.wait_for(find(), timeout)


# ---- media sources ------------------------------------------------------------------------------------------


def file_tracks(path: str) -> dict[str, MediaStreamTrack]:
    """A recorded lesson as {source: track}: its encoded packets are sent as they are, paced in real time.

    The file's video must be H.264 in Annex B form (MPEG-TS, or a raw .h264 stream) or VP8 (WebM), and its
    audio Opus, for this: aiortc packetizes such packets without encoding them, and the SFU forwards them to
    every subscriber without any re-encoding either. (MP4 stores H.264 length-prefixed, which aiortc cannot
    packetize as it is.)
    """
    player = MediaPlayer(path, decode=False)
    tracks: dict[str, MediaStreamTrack] = {}
    if player.video is not None:
        tracks["camera"] = player.video
    if player.audio is not None:
        tracks["microphone"] = player.audio
    return tracks


# ---- synthetic media (tests and demos) -------------------------------------------------------------------


class SyntheticVideoTrack(MediaStreamTrack):
    """A moving test picture of a fixed size, so that subscribers can check what they decode."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count / self.fps
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        image = np.zeros((self.height, self.width, 3), np.uint8)
        bar = (self._count * 4) % self.width
        image[:, : self.width // 2] = (255, 255, 255)
        image[:, bar : bar + 8] = (255, 0, 0)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._count += 1
        return frame


class PacedAudioTrack(MediaStreamTrack):
    """Mono 16-bit audio in 20 ms frames, paced in real time; subclasses say what the samples are."""

    kind = "audio"

    def __init__(self, rate: int = 48000) -> None:
        super().__init__()
        self.rate = rate
        self._start: float | None = None
        self._samples = 0

    def samples(self, offset: int, count: int) -> np.ndarray:
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._samples / self.rate - time.monotonic()))
        n = int(AUDIO_PTIME * self.rate)
        pcm = self.samples(self._samples, n).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self._samples += n
        return frame


class ToneAudioTrack(PacedAudioTrack):
    """A 440 Hz tone: subscribers can check they hear something, not silence."""

    def __init__(self, rate: int = 48000, frequency: float = 440.0) -> None:
        super().__init__(rate)
        self.frequency = frequency

    def samples(self, offset: int, count: int) -> np.ndarray:
        t = (np.arange(count) + offset) / self.rate
        return np.sin(2 * math.pi * self.frequency * t) * 8000


__all__ = ["VIDEO_PTIME", "Client", "ClientError", "PacedAudioTrack", "RemoteTrack", "State",
           "SyntheticVideoTrack", "ToneAudioTrack", "file_tracks"]
