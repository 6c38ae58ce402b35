"""The control plane <-> SFU worker link: the one schema of what crosses the process boundary, and its framing.

A worker process (sfu/worker.py) holds an `Sfu`; the control plane (control/workers.py) holds a proxy with the same
surface. Between them runs a Unix stream socket (a socketpair made at spawn) carrying a plain sequence of msgpack
maps, nothing else: no HTTP, SQL or JWT reaches a worker; signaling JSON crosses as the dicts it already is.

Control -> worker, requests (`id` is echoed in the reply; `op` names the Sfu call):
    {"op": "config", "index": int, "ice": ICE}                    first message; the worker answers with `hello`
    {"op": "join", "id", "room", "key", "info": {...}}            -> ok: the room's tracks (list of dicts)
    {"op": "handle", "id", "room", "key", "m": {signaling msg}}   -> ok: None, or err {code, message}
    {"op": "oneway", "id", "room", "key", "info", "kind": "whip"|"whep", "offer": sdp, "tracks": [{source, mid}],
     "quality"}                                                   -> ok: the answer SDP (Sfu.open_one_way)
    {"op": "leave", "id", "room", "key"}
    {"op": "close_room", "id", "room"}
    {"op": "set_blocked", "id", "room", "uid", "blocked": bool}
    {"op": "keyframe", "id", "room", "track"}                     -> ok: bool (asked, or throttled)
    {"op": "stats", "id", "room"}                                 -> ok: Sfu.stats(room)
    {"op": "add_tap", "room", "tap": int, "video": bool,          no reply: a sink wants the room's packets;
     ["feed": {"path", "job"}]}                                   with `feed` (a sink by address, the recorder) the
                                                                  worker sends rtp/sr to that Unix socket itself
    {"op": "remove_tap", "room", "tap": int}                      no reply
  One room over several workers (sfu/pipe.py; the control plane decides, control/workers.py):
    {"op": "pipe_open", "id", "room", "peer": int, ["loss": float]} -> ok: {"port": int}, this end's UDP port on
                                                                  127.0.0.1 for the room's pipe to worker `peer`
                                                                  (`loss`: a share of RTP dropped, tests/bench only)
    {"op": "pipe_open", "id", "room", "peer": str, "host": str,   the same to NODE `peer` (a lecture across nodes,
     "keys": [tx bytes, rx bytes], ["loss"]}                      control/relay.py): bound to `host`, SRTP with
                                                                  `keys`; sent to the room's origin worker only
    {"op": "pipe_connect", "id", "room", "peer", "port": int,     -> ok: [track description] crossing this pipe; this
     ["host": str]}                                               end now sends to the other's port (and host)
    {"op": "pipe_track", "room", "peer", "f": "added", "track": description}   no reply: a track of worker `peer`,
    {"op": "pipe_track", "room", "peer", "f": "removed" | "muted", "track": id, "muted": bool}  fed by its pipe
    {"op": "pipe_close", "room", "peer"}                          no reply: both directions end, the peer's tracks
                                                                  leave this router
  A track description (sfu/pipe.py describe): {"trackId", "uid", "source", "mid", "codec": CodecInfo.as_dict(),
  "layers": [rid, ...] | None, "ssrc": int | None, "muted", "blocked"}.
Worker -> control:
    {"re": id, "ok": value} | {"re": id, "err": {"code", "message"}}
    {"ev": "hello", "pid", "port", "engine"}                      once, after `config`
    {"ev": "signal", "key", "m": {signaling msg}}                 an offer, candidate, track event... for one key
    {"ev": "load", "pps", "cpu", "cpu_seconds", "rooms", "participants", "metrics": Sfu.metrics()}  every LOAD_PERIOD
    {"ev": "tap", "tap", "f": "added", "room", "track": {...}}    the Tap protocol (sfu/taps.py), one `f` per call:
    {"ev": "tap", "tap", "f": "removed" | "muted", "room", "track": id, ["muted": bool]}
    {"ev": "tap", "tap", "f": "rtp", "track": id, "data": bytes, "at": monotonic}
    {"ev": "tap", "tap", "f": "sr", "track": id, "ntp", "ts", "at": monotonic, "c": clock}
    {"ev": "pipe_track", "room", "f": "added", "track": description}   a track published, unpublished or muted here
    {"ev": "pipe_track", "room", "f": "removed" | "muted", "track": id, ["muted"]}  in a room with pipes; the
                                                                  control plane relays it to the room's other workers
                                                                  and, from the origin, to the other nodes; with
                                                                  ["scope": "workers" | "nodes"] only to those (a
                                                                  track that came by a pipe of the other kind)

Times are CLOCK_MONOTONIC seconds, one clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from sfu.ice import IceConfig

log = logging.getLogger("classcast.sfu.wire")

LOAD_PERIOD = 0.5  # seconds between a worker's load reports: placement and the death check read them
MEDIA_QUEUE_LIMIT = 8000  # tap packets waiting for the socket; beyond that a sink is too slow and packets drop
# requests a worker answers in a task (`id` echoed); the others (config, taps, pipes) are handled in arrival order
OPS = frozenset({"config", "join", "oneway", "handle", "leave", "close_room", "set_blocked", "keyframe", "stats",
                 "add_tap", "remove_tap"})
PIPE_OPS = frozenset({"pipe_open", "pipe_connect", "pipe_track", "pipe_close"})
EVENTS = frozenset({"hello", "signal", "load", "tap", "pipe_track"})


def pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)


def ice_to_wire(ice: IceConfig) -> dict[str, Any]:
    return {"hosts": list(ice.hosts), "port_min": ice.port_min, "port_max": ice.port_max,
            "servers": [dict(s) for s in ice.servers], "allowed": [str(n) for n in ice.allowed_networks],
            "rtc_port": ice.rtc_port, "announced": ice.announced, "media_reader": ice.media_reader,
            "reader_priority": ice.reader_priority}


def ice_from_wire(data: dict[str, Any]) -> IceConfig:
    return IceConfig(hosts=tuple(data["hosts"]), port_min=int(data["port_min"]), port_max=int(data["port_max"]),
                     servers=tuple(data["servers"]),
                     allowed_networks=tuple(ipaddress.ip_network(n) for n in data["allowed"]),
                     rtc_port=int(data["rtc_port"]), announced=data.get("announced"),
                     media_reader=data.get("media_reader", "thread"),
                     reader_priority=int(data.get("reader_priority", IceConfig.reader_priority)))


class Channel:
    """One end of the link: ordered sends (media ones droppable, never waited for), messages to a callback.

    Sends never block: control messages always queue (they are few), tap media is dropped and counted once
    MEDIA_QUEUE_LIMIT wait, so a slow reader can never slow the forwarding loop of the worker."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.dropped = 0
        self._queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._media_queued = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def open(self, sock: Any) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        await self.attach(reader, writer)

    async def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.closed = False
        self._writer = writer
        self._tasks = [asyncio.create_task(self._write_loop(writer)), asyncio.create_task(self._read_loop(reader))]

    def send(self, message: dict[str, Any]) -> bool:
        if self.closed:
            return False
        self._queue.append((pack(message), False))
        self._wake.set()
        return True

    def send_media(self, message: dict[str, Any]) -> bool:
        if self.closed or self._media_queued >= MEDIA_QUEUE_LIMIT:
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
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._lost()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = unpacker()
        try:
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                decoder.feed(chunk)
                for message in decoder:
                    if isinstance(message, dict):
                        try:
                            self.on_message(message)
                        except Exception:
                            log.exception("worker link message failed: %r", message.get("op") or message.get("ev"))
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._media_queued = 0
        self._wake.set()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.on_lost()

    async def close(self) -> None:
        self._lost()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

