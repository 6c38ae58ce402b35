"""One room's live transcription, inside the transcriber process: Opus packets in, finished utterances out.

`rtp` only appends to a bounded queue and counts what it drops when the queue is full. A worker task drains it;
Opus decoding runs on a single decode thread and Whisper on the speech thread, so reading the sockets never waits
for either. Audio is cut into utterances on pauses (or at `chunk_s` at the latest) and each goes to the sink (the
server, which stores it and sends the caption). Only final captions: a partial result would run Whisper again over
the growing utterance every few hundred milliseconds, several times the work of the final pass on a 2-core server
that also records and forwards; an utterance ends 0.5 s after the speaker pauses, so the final caption is already
close behind the voice. Only tracks the server marked `speaker` (the teacher's) are decoded at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
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
PAUSE_S = 0.5  # this much quiet after speech ends an utterance (and is the floor of a caption's delay)
MIN_UTTERANCE_S = 1.0
PREROLL_S = 0.3  # quiet kept before the first loud window: a soft onset ("Clouds", "fifty") is below SILENCE_RMS
UTTERANCE_BACKLOG = 32  # cut utterances waiting for Whisper (<= 15 s each); past it the oldest are dropped, counted
FEED_PACKETS = 10  # 200 ms of Opus: the cutting's resolution when the worker works through a backlog
# A track's packets can come before the track does: its `track` message waits on the server's role lookup (and from
# an SFU worker takes another connection), while its media come straight away. They are held, the latest
# EARLY_PACKETS of at most EARLY_TRACKS tracks, until the track says whether they are to be heard: dropped, they
# were the first words of a teacher who spoke as soon as they were live (ci76 lost "Today we").
EARLY_PACKETS = 500  # 10 s of one Opus track: what the SFU replays of it (SPOKEN_KEPT_S) and more
EARLY_TRACKS = 4

# (room_sid, uid, text, started_at_ms, ended_at_ms), times on `now_ms`'s clock
SegmentSink = Callable[[str, str, str, int, int], Awaitable[None]]
Transcribe = Callable[[np.ndarray], Awaitable[str]]


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
    speaker: bool  # whose audio gets transcribed: the server decides by role (teacher, moderator, admin)
    decoder: OpusDecoder | None = None
    pcm: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    voiced: bool = False
    quiet_samples: int = 0
    started_at: int | None = None
    preroll: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # the latest quiet, if any
    lead: int = 0  # samples of pre-roll at the start of `pcm`: heard, but not part of the caption's time


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class RoomTranscriber:
    """One room's job: the Tap calls (sfu/taps.py) as the feed delivers them. `start` runs its worker; `stop`
    flushes what was heard and ends it."""

    def __init__(self, room_sid: str, *, transcribe: Transcribe, sink: SegmentSink, decode_executor: ThreadPoolExecutor,
                 now_ms: Callable[[], int] = monotonic_ms, chunk_s: float = 15.0) -> None:
        self.room_sid = room_sid
        self._transcribe = transcribe
        self._sink = sink
        self._now_ms = now_ms
        self._executor = decode_executor
        self.chunk_s = chunk_s
        self.tracks: dict[str, _Track] = {}
        # (track_id, packet or None for "flush", monotonic time it arrived): the arrival time, not the time the
        # worker gets to it, dates an utterance; the worker may lag behind by a Whisper pass.
        self.queue: asyncio.Queue[tuple[str, bytes | None, float]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.segments = 0
        self._task: asyncio.Task[None] | None = None
        # Cut utterances wait here for Whisper, so that cutting (and dating) the next one never waits for it.
        self._utterances: asyncio.Queue[tuple[str, np.ndarray, int, int] | None] = asyncio.Queue()
        self.utterances_dropped = 0  # Whisper far behind (a machine too slow for the room): memory stays bounded
        self._speaker: asyncio.Task[None] | None = None
        self.early: dict[str, deque[tuple[bytes, float]]] = {}  # track id -> packets that came before the track
        self.ignored: set[str] = set()  # tracks announced that are not transcribed (video): their packets are not held

    # ---- the feed's calls: synchronous, never waiting ---------------------------------------------------------

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        """`track`: the SFU's track dict plus `speaker` (the server's decision: transcribe this one or not)."""
        track_id = str(track["trackId"])
        held = self.early.pop(track_id, None)
        codec = track.get("codec") or {}
        if track.get("kind") != "audio" or str(codec.get("mimeType", "")).lower() != "audio/opus":
            self.ignored.add(track_id)
            return
        self.tracks[track_id] = _Track(track_id=track_id, uid=str(track["uid"]), speaker=bool(track.get("speaker")))
        if held and self.tracks[track_id].speaker:
            log.info("room %s: %d packets of %s came before the track, heard now", self.room_sid, len(held), track_id)
            for data, arrival in held:
                self._put((track_id, data, arrival))

    def track_removed(self, room_sid: str, track_id: str) -> None:
        self.early.pop(track_id, None)
        self.ignored.discard(track_id)
        if track_id in self.tracks:
            self._put((track_id, None, 0.0))  # flush what this track said

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        """`arrival`: when the SFU received it (CLOCK_MONOTONIC seconds; 0 = now): it dates the utterance."""
        arrival = arrival if arrival > 0 else time.monotonic()
        track = self.tracks.get(track_id)
        if track is not None:
            if track.speaker:
                self._put((track_id, data, arrival))
        elif track_id not in self.ignored:
            self._hold(track_id, data, arrival)

    def _hold(self, track_id: str, data: bytes, arrival: float) -> None:
        held = self.early.get(track_id)
        if held is None:
            if len(self.early) >= EARLY_TRACKS:
                del self.early[next(iter(self.early))]  # the longest unannounced: most likely never to be
            held = self.early[track_id] = deque(maxlen=EARLY_PACKETS)
        held.append((data, arrival))

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
        return None

    def _put(self, item: tuple[str, bytes | None, float]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    # ---- the worker ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"transcriber-{self.room_sid}")
            self._speaker = asyncio.create_task(self._speak(), name=f"transcriber-whisper-{self.room_sid}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        for track_id in list(self.tracks):
            self._put((track_id, None, 0.0))
        self._put(("", None, 0.0))  # the end marker
        try:
            await asyncio.wait_for(task, timeout=60)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        speaker, self._speaker = self._speaker, None
        self._utterances.put_nowait(None)
        if speaker is not None:
            try:
                await asyncio.wait_for(speaker, timeout=60)
            except TimeoutError:
                speaker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await speaker

    def cancel(self) -> None:
        """Ends the job at once, dropping what was not transcribed yet (nobody is left to store it)."""
        for task in (self._task, self._speaker):
            if task is not None:
                task.cancel()
        self._task = self._speaker = None

    async def _run(self) -> None:
        while True:
            batch: dict[str, list[tuple[bytes, float]]] = {}
            ends: list[str] = []
            item = await self.queue.get()
            finished = False
            while True:
                track_id, data, arrived = item
                if not track_id:
                    finished = True
                elif data is None:
                    ends.append(track_id)
                else:
                    batch.setdefault(track_id, []).append((data, arrived))
                if self.queue.empty():
                    break
                item = self.queue.get_nowait()
            for track_id, packets in batch.items():
                # In pieces of FEED_PACKETS, so a pause inside a backlog still ends an utterance where it was.
                for i in range(0, len(packets), FEED_PACKETS):
                    piece = packets[i : i + FEED_PACKETS]
                    try:
                        await self._feed(track_id, [p for p, _ in piece], piece[0][1])
                    except Exception:
                        log.exception("transcriber failed on a batch of %s", track_id)
            for track_id in ends:
                await self._flush(track_id)
            if finished:
                return

    async def _feed(self, track_id: str, packets: list[bytes], arrived: float) -> None:
        track = self.tracks.get(track_id)
        if track is None or not track.speaker:
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
            await self._append(track, pcm, self._now_ms() - int((time.monotonic() - arrived) * 1000))

    async def _append(self, track: _Track, pcm: np.ndarray, at_ms: int) -> None:
        """`at_ms`: when the first of these samples arrived (class clock). Loudness is judged per 20 ms window so
        that an utterance starts and ends on the window where the voice does, whatever the batch size."""
        window = SAMPLE_RATE // 50
        n = pcm.size // window
        rms = np.sqrt(np.mean(pcm[: n * window].reshape(n, window) ** 2, axis=1)) if n else np.zeros(0)
        loud_at = np.flatnonzero(rms >= SILENCE_RMS)
        preroll = int(PREROLL_S * SAMPLE_RATE)
        if not track.voiced and not loud_at.size:  # quiet before speech: only its last PREROLL_S is kept
            track.preroll = np.concatenate([track.preroll, pcm])[-preroll:]
            return
        trailing_quiet = pcm.size - (int(loud_at[-1]) + 1) * window if loud_at.size else pcm.size
        if not track.voiced:
            # Whisper hears the word's quiet start too; the caption is still dated by the first loud window.
            track.voiced = True
            skip = int(loud_at[0]) * window
            lead = np.concatenate([track.preroll, pcm[:skip]])[-preroll:]
            pcm = np.concatenate([lead, pcm[skip:]])
            track.preroll, track.lead = track.preroll[:0], lead.size
            track.started_at = at_ms + skip * 1000 // SAMPLE_RATE
        track.pcm.append(pcm)
        track.samples += pcm.size
        track.quiet_samples = trailing_quiet if loud_at.size else track.quiet_samples + pcm.size
        paused = (track.quiet_samples >= PAUSE_S * SAMPLE_RATE
                  and track.samples - track.lead >= MIN_UTTERANCE_S * SAMPLE_RATE)
        if paused or track.samples >= self.chunk_s * SAMPLE_RATE:
            await self._flush(track.track_id)

    async def _flush(self, track_id: str) -> None:
        track = self.tracks.get(track_id)
        if track is None or not track.pcm:
            return
        pcm = np.concatenate(track.pcm)
        started = track.started_at or self._now_ms()
        # neither the pre-roll nor the pause that ended the utterance is in its caption's time
        spoken = max(0, pcm.size - track.quiet_samples - track.lead)
        track.pcm, track.samples, track.voiced, track.quiet_samples, track.started_at = [], 0, False, 0, None
        track.lead = 0
        if self._utterances.qsize() >= UTTERANCE_BACKLOG:
            self._utterances.get_nowait()  # the oldest: its caption would come far too late anyway
            self.utterances_dropped += 1
            log.warning("transcriber of room %s is behind: dropped an utterance", self.room_sid)
        self._utterances.put_nowait((track.uid, pcm, started, started + int(spoken * 1000 / SAMPLE_RATE)))

    async def _speak(self) -> None:
        """Transcribes the cut utterances one at a time, in order (one speech thread), into segments/captions."""
        while (item := await self._utterances.get()) is not None:
            uid, pcm, started, ended = item
            try:
                text = await self._transcribe(pcm)
                if text:
                    self.segments += 1
                    await self._sink(self.room_sid, uid, text, started, ended)
            except Exception:
                log.exception("transcription failed in room %s", self.room_sid)
