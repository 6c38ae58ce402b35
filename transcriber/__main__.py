"""The live transcriber process: `python -m transcriber --socket DATA_DIR/transcriber.sock`.

Started and supervised by `classcast serve` (control/tutor/transcription.py through control/sinks/supervisor.py),
like the recorder. It listens on a Unix socket: the first connection is the server's (jobs, tracks; utterances go
back on it), every further one is a media-only connection from the SFU worker process that holds a room's tracks
(`rtp`, `sr`: control/sinks/feed.py lists every message). It decodes the teacher's Opus and runs Whisper, so the
control process never parses a packet nor runs speech recognition for a live class. When the server's connection
ends the process exits: a transcriber never outlives its server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sfu import wire
from transcriber import room as rooms
from transcriber.room import RoomTranscriber

log = logging.getLogger("classcast.transcriber")

Transcribe = rooms.Transcribe


class Transcriber:
    """The process's state: one RoomTranscriber per job, the server's channel, the media channels."""

    def __init__(self, transcribe: Transcribe, chunk_s: float) -> None:
        self.transcribe = transcribe
        self.chunk_s = chunk_s
        self.jobs: dict[str, RoomTranscriber] = {}
        self.server: wire.Channel | None = None
        self.media: set[wire.Channel] = set()
        self.decode = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opus-decode")
        self.done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.server is None:  # the server's connection comes first: it starts jobs, and its end ends us
            self.server = wire.Channel(self.on_server, self.done.set)
            await self.server.attach(reader, writer)
            return
        channel = wire.Channel(self.on_media, lambda: self.media.discard(channel))
        self.media.add(channel)
        await channel.attach(reader, writer)

    def on_server(self, m: dict[str, Any]) -> None:
        kind, job_id = m.get("t"), str(m.get("j"))
        if kind in ("rtp", "sr"):  # the SFU runs in the server's process (CLASSCAST_SFU_WORKERS=0)
            self.on_media(m)
        elif kind == "start":
            if job_id not in self.jobs:
                job = RoomTranscriber(str(m.get("room", "")), transcribe=self.transcribe,
                                      sink=lambda room, uid, text, started, ended: self._segment(
                                          job_id, room, uid, text, started, ended),
                                      decode_executor=self.decode, chunk_s=self.chunk_s)
                self.jobs[job_id] = job
                job.start()
        elif kind == "track" and job_id in self.jobs and isinstance(m.get("track"), dict):
            job = self.jobs[job_id]
            job.track_added(job.room_sid, {**m["track"], "speaker": bool(m.get("speaker"))})
        elif kind == "untrack" and job_id in self.jobs:
            job = self.jobs[job_id]
            job.track_removed(job.room_sid, str(m.get("id")))
        elif kind == "stop":
            job = self.jobs.pop(job_id, None)
            if job is not None:
                self._spawn(self._stop(job_id, job))

    def on_media(self, m: dict[str, Any]) -> None:
        if m.get("t") != "rtp":
            return  # sender reports: an utterance is dated by its packets' arrival, not by the publisher's clock
        job = self.jobs.get(str(m.get("j")))
        data, arrival = m.get("d"), m.get("a")
        if job is not None and isinstance(data, bytes) and isinstance(arrival, int | float):
            job.rtp(str(m.get("id")), data, float(arrival))

    async def _segment(self, job_id: str, room_sid: str, uid: str, text: str, started_ms: int, ended_ms: int,
                       ) -> None:
        if self.server is not None:
            self.server.send({"t": "segment", "j": job_id, "room": room_sid, "uid": uid, "text": text,
                              "started": started_ms / 1000, "ended": ended_ms / 1000})

    async def _stop(self, job_id: str, job: RoomTranscriber) -> None:
        await job.stop()
        if self.server is not None:
            self.server.send({"t": "stopped", "j": job_id, "segments": job.segments, "dropped": job.dropped,
                              "utterances_dropped": job.utterances_dropped})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """The server is gone: nobody could store what is still being transcribed, so the jobs simply end."""
        for task in list(self._tasks):
            task.cancel()
        for job in self.jobs.values():
            job.cancel()
        for channel in list(self.media):
            await channel.close()
        self.decode.shutdown(wait=False, cancel_futures=True)


async def serve(path: Path, transcribe: Transcribe, chunk_s: float, warm: Any = None) -> None:
    transcriber = Transcriber(transcribe, chunk_s)
    server = await asyncio.start_unix_server(transcriber.connected, path=str(path))
    os.chmod(path, 0o600)
    print("ready", flush=True)  # the supervisor waits for this line
    if warm is not None:
        warm()  # the model loads while the server's first tracks come: the first utterance need not wait for it
    try:
        await transcriber.done.wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await transcriber.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transcriber")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--whisper-model", default="", help="a model folder (CLASSCAST_WHISPER_MODEL); empty: the "
                        "packaged one")
    parser.add_argument("--threads", type=int, default=1, help="Whisper's threads (CLASSCAST_SPEECH_THREADS)")
    parser.add_argument("--chunk-s", type=float, default=15.0, help="longest utterance (CLASSCAST_TRANSCRIBE_CHUNK)")
    parser.add_argument("--pause-s", type=float, default=rooms.PAUSE_S, help="quiet that ends an utterance")
    args = parser.parse_args(argv)
    from control.logs import setup_logging  # the server's one-JSON-object-per-line format
    from control.tutor.speech import Speech  # the same Whisper setup as the tutor's REST transcription

    setup_logging(args.log_level)
    rooms.PAUSE_S = args.pause_s
    speech = Speech(threads=args.threads, whisper_dir=args.whisper_model or None)

    args.socket.unlink(missing_ok=True)  # a dead predecessor's
    try:
        asyncio.run(serve(args.socket, speech.transcribe_samples, args.chunk_s, speech.warm_whisper))
    finally:
        speech.close()
        args.socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
