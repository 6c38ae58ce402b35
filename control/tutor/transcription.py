"""Live transcription seen from the control plane: the transcriber process, its taps, and the utterances it sends.

The work (Opus decoding, Whisper) runs in the transcriber process (transcriber/), started and restarted here like
the recorder. Each room being transcribed is one job there and one `TranscriberTap` here: a sink by address, so the
SFU worker holding the room sends the room's packets straight to the transcriber's socket; with the SFU in this
process the tap writes them into the feed itself. What crosses the control plane is plain data: track dicts (with
the server's decision whose audio becomes captions) and, back, finished utterances, which the tutor stores and
sends to the room as captions. The transcriber dates an utterance on CLOCK_MONOTONIC (its voice's arrival at the
SFU); here it is placed on the server's clock.

A dead transcriber is restarted; the rooms it was transcribing get a new job and a new tap (the SFU announces their
tracks again), so captions resume after the restart. A new tap is also given what the microphones said before it
(sfu/taps.py `hear_since`, up to `SPOKEN_KEPT_S`): a class's first words, said while the process was starting, and
what was said while a dead one was restarted (what the dead one held but had not transcribed is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control.clock import Clock
from control.config import TutorConfig
from control.ids import new_id
from control.sinks.feed import FeedLink, FeedTap
from control.sinks.supervisor import SinkSupervisor

if TYPE_CHECKING:
    from control.workers import WorkerPool
    from sfu.router import Sfu

log = logging.getLogger("classcast.transcription")

STOP_TIMEOUT_S = 60.0  # a stopped job transcribes what it still holds (Whisper may be an utterance or two behind)
IsSpeaker = Callable[[str, str], Awaitable[bool]]  # (room_sid, uid): whose audio becomes captions
SegmentSink = Callable[[str, str, str, int, int], Awaitable[None]]  # (room_sid, uid, text, started_ms, ended_ms)


def is_opus_audio(track: dict[str, Any]) -> bool:
    codec = track.get("codec") or {}
    return track.get("kind") == "audio" and str(codec.get("mimeType", "")).lower() == "audio/opus"


class TranscriberTap(FeedTap):
    """One room's tap. Track calls become feed messages in order, each microphone with its `speaker` flag (a role
    lookup, so the messages wait on each other, never the SFU's call); media go as a FeedTap's, straight away (the
    transcriber holds a track's packets until its message comes: transcriber/room.py `EARLY_PACKETS`)."""

    wants_video = False  # audio only: the SFU's dynacast need not keep a camera's top layer on for it (sfu/taps.py)

    def __init__(self, link: FeedLink, job_id: str, room_sid: str, is_speaker: IsSpeaker) -> None:
        super().__init__(link, job_id, {})
        self.room_sid = room_sid
        self._is_speaker = is_speaker
        self._chain: asyncio.Task[None] | None = None  # the last of the ordered track messages
        self.finished: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.segments = 0
        # What the SFU replays to it when added (sfu/taps.py): a first job hears all the microphones still hold
        # (said before the process was up); a restarted one what they heard since the old process died.
        self.hear_since = 0.0

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        # Every track is announced, a camera too: until its track comes, the transcriber holds a track's packets
        # (they can come first), and it need not hold a camera's.
        if is_opus_audio(track):
            self._then(self._announce(track))
        else:
            self._then(self._send({"t": "track", "j": self.job_id, "track": track, "speaker": False}))

    def track_removed(self, room_sid: str, track_id: str) -> None:
        self._then(self._send({"t": "untrack", "j": self.job_id, "id": track_id}))

    def track_muted(self, room_sid: str, track_id: str, muted: bool) -> None:
        return None  # a muted microphone sends silence or nothing: there is nothing to transcribe either way

    def _then(self, step: Awaitable[None]) -> None:
        previous = self._chain

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await previous
            await step

        self._chain = asyncio.get_running_loop().create_task(run())

    async def _announce(self, track: dict[str, Any]) -> None:
        try:
            speaker = await self._is_speaker(self.room_sid, str(track.get("uid")))
        except Exception:
            log.exception("transcriber: whose track %s is could not be looked up", track.get("trackId"))
            speaker = False
        self.link.send({"t": "track", "j": self.job_id, "track": track, "speaker": speaker})

    async def _send(self, message: dict[str, Any]) -> None:
        self.link.send(message)

    async def stop(self) -> None:
        """Asks the transcriber for what it still holds and waits until it said `stopped` (or gave up)."""
        if self._chain is not None:
            with contextlib.suppress(Exception):
                await self._chain
        if not self.link.send({"t": "stop", "j": self.job_id}):
            self.abandon()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.finished), STOP_TIMEOUT_S)

    def abandon(self) -> None:
        if not self.finished.done():
            self.finished.set_result({})
        if self._chain is not None:
            self._chain.cancel()


class Transcription:
    """The transcriber process and the rooms it transcribes (`taps`, by room sid)."""

    def __init__(self, cfg: TutorConfig, data_dir: Path, clock: Clock, is_speaker: IsSpeaker,
                 store_segment: SegmentSink) -> None:
        self.clock = clock
        self.is_speaker = is_speaker
        self.store_segment = store_segment
        args = ["--threads", str(cfg.speech_threads), "--chunk-s", str(cfg.transcribe_chunk_s)]
        if cfg.whisper_model:
            args += ["--whisper-model", cfg.whisper_model]
        self.supervisor = SinkSupervisor("transcriber", data_dir, self._on_event, self._on_exit, args=args,
                                         on_start=self._started)
        self.sfu: Sfu | WorkerPool | None = None
        self.taps: dict[str, TranscriberTap] = {}
        self._jobs: dict[str, TranscriberTap] = {}  # by job id, until the transcriber said `stopped`
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._died_at = 0.0  # when the process last exited (CLOCK_MONOTONIC): its restart's taps hear from then on

    async def start(self, room_sid: str) -> None:
        """Starts transcribing the room (raises OSError/TimeoutError when the process cannot start)."""
        assert self.sfu is not None
        await self.supervisor.ensure()
        if room_sid in self.taps:
            return
        if self._consumer is None:
            self._consumer = asyncio.get_running_loop().create_task(self._consume())
        tap = self._new_tap(room_sid)
        self.sfu.add_tap(room_sid, tap)

    def _new_tap(self, room_sid: str, hear_since: float = 0.0) -> TranscriberTap:
        link = self.supervisor.link
        tap = TranscriberTap(link, new_id("TJ_"), room_sid, self.is_speaker)
        tap.hear_since = hear_since
        tap.address = str(self.supervisor.socket_path)  # an SFU worker sends the room's media straight there
        self.taps[room_sid] = self._jobs[tap.job_id] = tap
        link.send({"t": "start", "j": tap.job_id, "room": room_sid})
        return tap

    async def stop(self, room_sid: str) -> TranscriberTap | None:
        tap = self.taps.pop(room_sid, None)
        if tap is None:
            return None
        if self.sfu is not None:
            self.sfu.remove_tap(room_sid, tap)
        await tap.stop()
        self._jobs.pop(tap.job_id, None)
        return tap

    def _started(self) -> None:
        """After a restart: the rooms still being transcribed start again in the new process, with new taps (a
        worker's connection to the dead process is gone; the SFU announces the tracks to the new tap)."""
        for room_sid, old in list(self.taps.items()):
            if old.link is self.supervisor.link or self.sfu is None:
                continue
            self.sfu.remove_tap(room_sid, old)
            self._jobs.pop(old.job_id, None)
            old.abandon()
            self.sfu.add_tap(room_sid, self._new_tap(room_sid, self._died_at))
            log.info("transcribing room %s again after the transcriber's restart", room_sid)

    async def _on_exit(self, code: int | None) -> None:
        self._died_at = time.monotonic()
        log.error("transcriber process exited (%s): %d rooms lose what was not transcribed yet", code,
                  len(self.taps))
        for tap in list(self._jobs.values()):
            if tap not in self.taps.values():  # stopping: nothing more will come
                tap.abandon()

    def _on_event(self, m: dict[str, Any]) -> None:
        if m.get("t") == "segment":
            # placed on the server's clock now, while the event is fresh: the store may be slower than Whisper
            offset_ms = self.clock.now_ms() - time.monotonic() * 1000
            try:
                m["started_ms"] = round(float(m["started"]) * 1000 + offset_ms)
                m["ended_ms"] = round(float(m["ended"]) * 1000 + offset_ms)
            except (KeyError, TypeError, ValueError):
                log.error("transcriber sent a bad segment: %r", m)
                return
        self._events.put_nowait(m)

    async def _consume(self) -> None:
        """One at a time, in the order the transcriber said them: captions never overtake each other."""
        while True:
            m = await self._events.get()
            try:
                kind, tap = m.get("t"), self._jobs.get(str(m.get("j")))
                if kind == "segment":
                    if tap is not None:
                        tap.segments += 1
                    await self.store_segment(str(m.get("room")), str(m.get("uid")), str(m.get("text")),
                                             m["started_ms"], m["ended_ms"])
                elif kind == "stopped" and tap is not None and not tap.finished.done():
                    tap.finished.set_result(m)
            except Exception:
                log.exception("transcriber event failed: %s", m.get("t"))

    async def close(self) -> None:
        for room_sid in list(self.taps):
            await self.stop(room_sid)
        await self.supervisor.stop()
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
