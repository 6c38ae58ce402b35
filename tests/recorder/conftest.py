"""The recorder's world: a real server on 127.0.0.1, real aiortc publishers, the real recorder process, and
clips with visible and audible markers at known wall-clock times."""

from __future__ import annotations

import asyncio
import dataclasses
import fractions
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, MediaStreamError

from control.api.recordings import RECORDINGS
from control.app import create_app
from control.config import Config
from control.recordings import Recordings
from control.services import SERVICES
from tests.sfu.conftest import Classroom


class MarkerClip:
    """The shared clock of one publisher's clip: markers at fixed offsets from `start` (monotonic seconds)."""

    def __init__(self, markers: tuple[float, ...] = (), color: tuple[int, int, int] = (40, 40, 160),
                 size: tuple[int, int] = (320, 240)) -> None:
        self.start = time.monotonic()
        self.markers = markers
        self.color = color
        self.size = size

    def in_marker(self, t: float, length: float) -> bool:
        return any(m <= t < m + length for m in self.markers)


class ClipVideo(MediaStreamTrack):
    """A solid colour picture; the whole frame turns white for 100 ms at each marker."""

    kind = "video"

    def __init__(self, clip: MarkerClip, fps: int = 30) -> None:
        super().__init__()
        self.clip, self.fps, self.count = clip, fps, 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic() - self.clip.start
        if self.count == 0:
            self.count = max(0, math.ceil(now * self.fps))
        t = self.count / self.fps
        await asyncio.sleep(max(0.0, self.clip.start + t - time.monotonic()))
        w, h = self.clip.size
        color = (255, 255, 255) if self.clip.in_marker(t, 0.1) else self.clip.color
        frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), color, np.uint8), format="rgb24")
        frame.pts = round(t * VIDEO_CLOCK_RATE)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self.count += 1
        return frame


class ClipAudio(MediaStreamTrack):
    """Near silence, with a loud 1 kHz beep of 100 ms at each marker."""

    kind = "audio"

    def __init__(self, clip: MarkerClip, rate: int = 48000) -> None:
        super().__init__()
        self.clip, self.rate, self.samples = clip, rate, -1

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = int(AUDIO_PTIME * self.rate)
        if self.samples < 0:
            self.samples = math.ceil((time.monotonic() - self.clip.start) * self.rate / n) * n
        await asyncio.sleep(max(0.0, self.clip.start + self.samples / self.rate - time.monotonic()))
        t = (np.arange(n) + self.samples) / self.rate
        beep = np.zeros(n, bool)
        for m in self.clip.markers:
            beep |= (t >= m) & (t < m + 0.1)
        samples = np.where(beep, np.sin(2 * math.pi * 1000 * t) * 12000, 0).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self.samples += n
        return frame


@dataclasses.dataclass
class Studio(Classroom):
    """A classroom plus the recording service."""

    @property
    def recordings(self) -> Recordings:
        return self.server.app[RECORDINGS]

    async def wait_status(self, room_id: str, egress_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.rest("GET", f"/v1/room/{room_id}/recordings")
            assert status == 200, body
            job = next(r for r in body["data"]["recordings"] if r["egressId"] == egress_id)
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, f"still {job['status']}"
            await asyncio.sleep(0.2)

    async def let_it_record(self, seconds: float = 2.5) -> None:
        """A moment of the class in the recording. The recorder writes at least half a second behind live, and a
        recording stopped before anything was written is rightly EGRESS_FAILED "Nothing was recorded" (never a
        0-second file): a test that stops at once and expects a file must let it record first."""
        await asyncio.sleep(seconds)

    def file_path(self, egress_id: str, label: str = "composite") -> Path:
        root = self.recordings.root / egress_id
        paths = sorted(root.glob("*.mp4"))
        chosen = [p for p in paths if label in p.name]
        assert chosen, f"no {label} file in {paths}"
        return chosen[0]


@pytest.fixture
async def studio(aiohttp_server: Any, tmp_path: Path, database_url: str, sfu_workers: int) -> AsyncIterator[Studio]:
    config = dataclasses.replace(Config(data_dir=tmp_path / "data", database_url=database_url,
                                        sfu_workers=sfu_workers), reconnect_grace_s=2.0)
    app = await create_app(config, background=False)
    server = await aiohttp_server(app, host="127.0.0.1")
    svc = app[SERVICES]
    org = await svc.store.create_org("Recording School", 100_000, svc.clock.now_ms())
    room = Studio(server=server, svc=svc, org=org)
    yield room
    for c in room.clients:
        await c.close()


def decode_all(path: Path) -> dict[str, Any]:
    """Opens an MP4 with PyAV and decodes every frame of every stream (an undecodable frame raises)."""
    with av.open(str(path)) as container:
        info: dict[str, Any] = {
            "format": container.format.name,
            "codecs": sorted(s.codec_context.name for s in container.streams),
            "video_frames": [], "audio": [],
        }
        media = [s for s in container.streams if s.type in ("video", "audio")]  # a subtitle track is not decoded
        for frame in container.decode(*media):
            if isinstance(frame, av.VideoFrame):
                info["video_frames"].append((float(frame.time), frame.to_ndarray(format="rgb24")))
            else:
                info["audio"].append((float(frame.time), frame.to_ndarray().astype(np.float32), frame.sample_rate))
        return info


def first_bright(frames: list[tuple[float, np.ndarray]], after: float, region: tuple[slice, slice]) -> float:
    """Time of the first video frame after `after` whose region is near white (the visible marker)."""
    for t, image in frames:
        if t >= after and image[region].mean() > 230:
            return t
    raise AssertionError(f"no visible marker after {after}")


def first_loud(audio: list[tuple[float, np.ndarray, int]], after: float) -> float:
    """Time of the first sample after `after` louder than a threshold (the audible marker's onset)."""
    for t, pcm, rate in audio:
        if t + pcm.shape[-1] / rate < after:
            continue
        mono = np.abs(pcm).max(axis=0)
        peak = 0.2 if pcm.dtype.kind == "f" and np.abs(pcm).max() <= 1.5 else 6000
        loud = np.nonzero(mono > peak)[0]
        loud = loud[t + loud / rate >= after]
        if loud.size:
            return t + loud[0] / rate
    raise AssertionError(f"no audible marker after {after}")
