"""The feed: msgpack messages between the server and the recorder process over a Unix socket in the data dir.

Server -> recorder (one map per message, key `t` is the kind, `j` the job id):
  start {j, room, mode, layout, preset, logo, dir, t0, names}   a job begins (t0: the SFU's monotonic clock)
  track {j, track}        a track is in the room (the SFU's track dict with codec details, plus name and role)
  untrack {j, id}         the track is gone
  tmute {j, id, muted}    the publisher muted (unmuted) the track: its tile shows the name, its sound is left out
  rtp {j, id, d, a}       one packet as the publisher sent it, `a` its arrival (monotonic seconds)
  sr {j, id, ntp, rtp, a} the publisher's sender-report NTP <-> RTP mapping for the track
  mute {j, uid, muted}    a moderator muted (unmuted) the participant: their microphone is left out (in again)
  stop {j}                finish the job's files
Recorder -> server:
  file {j, path, label}   a file was opened (so a crash still knows what to keep)
  keyframe {j, id}        a video track needs a keyframe (to start, or after loss): the server asks the publisher
  active {j}              the first media reached a file
  done {j, files: [{path, label, size, duration}]}
  failed {j, error}

`FeedLink` is the server's side of the socket: it never blocks the caller. Media messages go into a bounded
queue and are dropped and counted when the queue is full or the recorder is not connected; a slow or dead recorder
never slows forwarding. `FeedTap` is the SFU tap (sfu/taps.py) for one job that writes into the link.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger("classcast.recorder.feed")

SOCKET_NAME = "recorder.sock"
MEDIA_QUEUE_LIMIT = 4000  # packets: about 2 s of a 720p class; beyond that the recorder is too slow


def pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpacker() -> msgpack.Unpacker:
    """A streaming decoder: the socket carries a plain sequence of msgpack maps, no extra framing."""
    return msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)


class FeedLink:
    """The server's connection to the recorder process: fire-and-forget sends, events back through a callback."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.on_event = on_event
        self.dropped = 0  # media messages the recorder could not take
        self.sent = 0
        self._queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._media_queued = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.closed.is_set()

    async def connect(self, path: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        self._writer = writer
        self.closed.clear()
        self._tasks = [asyncio.create_task(self._write_loop(writer)), asyncio.create_task(self._read_loop(reader))]

    def send(self, message: dict[str, Any]) -> bool:
        """Control messages (start, stop, tracks) are always queued while connected: they are few and ordered."""
        if not self.connected:
            return False
        self._queue.append((pack(message), False))
        self._wake.set()
        return True

    def send_media(self, message: dict[str, Any]) -> bool:
        """RTP and sender reports: dropped (and counted) rather than ever making the forwarding path wait."""
        if not self.connected or self._media_queued >= MEDIA_QUEUE_LIMIT:
            self.dropped += 1
            return False
        self._queue.append((pack(message), True))
        self._media_queued += 1
        self._wake.set()
        return True

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    data, media = self._queue.popleft()
                    if media:
                        self._media_queued -= 1
                    writer.write(data)
                    self.sent += 1
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
                await writer.drain()
        except (ConnectionError, OSError):
            log.warning("recorder feed lost while writing")
        finally:
            self._lost()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = unpacker()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                decoder.feed(chunk)
                for message in decoder:
                    if isinstance(message, dict):
                        try:
                            self.on_event(message)
                        except Exception:
                            log.exception("recorder event failed: %s", message.get("t"))
        except (ConnectionError, OSError):
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.dropped += self._media_queued
        self._queue.clear()
        self._media_queued = 0
        self._wake.set()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def close(self) -> None:
        self._lost()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class FeedTap:
    """The SFU tap of one recording job: plain-data calls in, feed messages out; never blocks, never raises."""

    def __init__(self, link: FeedLink, job_id: str, people: dict[str, dict[str, str]]) -> None:
        self.link = link
        self.job_id = job_id
        self.people = people  # uid -> {"name", "role"}, kept current by the recording service
        self.dropped = 0  # this job's packets and reports the recorder could not take
        # The recorder's socket: an SFU worker process sends this job's `rtp`/`sr` there itself (sfu/taps.py)
        self.address: str | None = None

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        person = self.people.get(str(track.get("uid")), {})
        self.link.send({"t": "track", "j": self.job_id, "track": {**track, **person}})

    def track_removed(self, room_sid: str, track_id: str) -> None:
        self.link.send({"t": "untrack", "j": self.job_id, "id": track_id})

    def track_muted(self, room_sid: str, track_id: str, muted: bool) -> None:
        self.link.send({"t": "tmute", "j": self.job_id, "id": track_id, "muted": muted})

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        if not self.link.send_media({"t": "rtp", "j": self.job_id, "id": track_id, "d": data, "a": arrival}):
            self.dropped += 1

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float) -> None:
        if not self.link.send_media({"t": "sr", "j": self.job_id, "id": track_id, "ntp": ntp, "rtp": rtp_timestamp,
                                     "a": arrival}):
            self.dropped += 1
