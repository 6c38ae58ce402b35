"""The live transcriber: a tap beside the recorder that turns the teacher's microphone into transcript lines.

The SFU calls the tap synchronously on its forwarding path, so `rtp` only appends to a bounded queue and counts
what it drops when the queue is full. A worker task on the loop drains it; Opus decoding runs on a single decode
thread and Whisper on the speech thread, so neither the forwarding path nor the event loop ever decodes.
Audio is cut into utterances on pauses (or at `chunk_s` at the latest) and each becomes one stored segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from control.tutor.speech import SAMPLE_RATE
from sfu.rtp import parse_rtp

log = logging.getLogger("classcast.transcriber")

QUEUE_LIMIT = 3000  # packets: a minute of one Opus track at 50 packets/s
SILENCE_RMS = 0.01
PAUSE_S = 0.7  # this much quiet after speech ends an utterance
MIN_UTTERANCE_S = 1.0

# (room_sid, uid, text, started_at_ms, ended_at_ms)
SegmentSink = Callable[[str, str, str, int, int], Awaitable[None]]
Transcribe = Callable[[np.ndarray], Awaitable[str]]
IsSpeaker = Callable[[str, str], Awaitable[bool]]  # (room_sid, uid): whose audio gets transcribed


class OpusDecoder:
    """One track's Opus packets to 16 kHz mono float32. Blocking: lives on the decode thread only."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("opus", "r")
        self._codec.sample_rate = 48_000
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.errors = 0

    def decode(self, payloads: list[bytes]) -> np.ndarray:
        out: list[np.ndarray] = []
        for payload in payloads:
            try:
                frames = self._codec.decode(av.Packet(payload))
            except (av.FFmpegError, ValueError):
                self.errors += 1  # a damaged packet costs 20 ms of audio, never the track
                continue
            for frame in frames:
                for res in self._resampler.resample(frame):
                    out.append(res.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


@dataclass
class _Track:
    track_id: str
    uid: str
    speaker: bool | None = None  # None until the role is looked up
    decoder: OpusDecoder | None = None
    pcm: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    voiced: bool = False
    quiet_samples: int = 0
    started_at: int | None = None


class RoomTranscriber:
    """The tap for one room. `start` runs its worker; `stop` flushes what was heard and ends it."""

    wants_video = False  # audio only: the SFU's dynacast need not keep a camera's top layer on for it (sfu/taps.py)

    def __init__(self, room_sid: str, *, transcribe: Transcribe, sink: SegmentSink, is_speaker: IsSpeaker,
                 now_ms: Callable[[], int], decode_executor: ThreadPoolExecutor, chunk_s: float = 15.0) -> None:
        self.room_sid = room_sid
        self._transcribe = transcribe
        self._sink = sink
        self._is_speaker = is_speaker
        self._now_ms = now_ms
        self._executor = decode_executor
        self.chunk_s = chunk_s
        self.tracks: dict[str, _Track] = {}
        self.queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.segments = 0
        self._task: asyncio.Task[None] | None = None

    # ---- Tap: synchronous, on the forwarding path -------------------------------------------------------------

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        codec = track.get("codec") or {}
        if track.get("kind") == "audio" and str(codec.get("mimeType", "")).lower() == "audio/opus":
            self.tracks[str(track["trackId"])] = _Track(track_id=str(track["trackId"]), uid=str(track["uid"]))

    def track_removed(self, room_sid: str, track_id: str) -> None:
        if track_id in self.tracks:
            self._put((track_id, None))  # flush what this track said

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        if track_id in self.tracks:
            self._put((track_id, data))

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float) -> None:
        return None

    def _put(self, item: tuple[str, bytes | None]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    # ---- the worker ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"transcriber-{self.room_sid}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        for track_id in list(self.tracks):
            self._put((track_id, None))
        self._put(("", None))  # the end marker
        try:
            await asyncio.wait_for(task, timeout=60)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            batch: dict[str, list[bytes]] = {}
            ends: list[str] = []
            item = await self.queue.get()
            finished = False
            while True:
                track_id, data = item
                if not track_id:
                    finished = True
                elif data is None:
                    ends.append(track_id)
                else:
                    batch.setdefault(track_id, []).append(data)
                if self.queue.empty():
                    break
                item = self.queue.get_nowait()
            for track_id, packets in batch.items():
                try:
                    await self._feed(track_id, packets)
                except Exception:
                    log.exception("transcriber failed on a batch of %s", track_id)
            for track_id in ends:
                await self._flush(track_id)
            if finished:
                return

    async def _feed(self, track_id: str, packets: list[bytes]) -> None:
        track = self.tracks.get(track_id)
        if track is None:
            return
        if track.speaker is None:
            track.speaker = await self._is_speaker(self.room_sid, track.uid)
        if not track.speaker:
            return
        payloads = []
        for data in packets:
            try:
                header = parse_rtp(data)
            except ValueError:
                continue
            if header.payload_end > header.payload_offset:
                payloads.append(bytes(data[header.payload_offset:header.payload_end]))
        if track.decoder is None:
            track.decoder = OpusDecoder()
        pcm = await asyncio.get_running_loop().run_in_executor(self._executor, track.decoder.decode, payloads)
        if pcm.size:
            await self._append(track, pcm)

    async def _append(self, track: _Track, pcm: np.ndarray) -> None:
        loud = float(np.sqrt(np.mean(pcm * pcm))) >= SILENCE_RMS
        if not track.voiced and not loud:
            return  # silence before speech is not kept
        if not track.voiced:
            track.voiced = True
            track.started_at = self._now_ms()
        track.pcm.append(pcm)
        track.samples += pcm.size
        track.quiet_samples = 0 if loud else track.quiet_samples + pcm.size
        paused = track.quiet_samples >= PAUSE_S * SAMPLE_RATE and track.samples >= MIN_UTTERANCE_S * SAMPLE_RATE
        if paused or track.samples >= self.chunk_s * SAMPLE_RATE:
            await self._flush(track.track_id)

    async def _flush(self, track_id: str) -> None:
        track = self.tracks.get(track_id)
        if track is None or not track.pcm:
            return
        pcm = np.concatenate(track.pcm)
        started = track.started_at or self._now_ms()
        track.pcm, track.samples, track.voiced, track.quiet_samples, track.started_at = [], 0, False, 0, None
        try:
            text = await self._transcribe(pcm)
        except Exception:
            log.exception("transcription failed in room %s", self.room_sid)
            return
        if text:
            self.segments += 1
            await self._sink(self.room_sid, track.uid, text, started, started + int(pcm.size * 1000 / SAMPLE_RATE))
