"""An SFU worker process: one event loop, one engine, one UDP port, the rooms the control plane placed here.

Started by control/workers.py as `python -m sfu.worker FD`, FD being its end of a Unix socketpair; everything it
hears and says is in sfu/wire.py. It never sees HTTP, SQL or a token. When the control plane goes away (the
socket closes) the worker exits: no orphan keeps a UDP port.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import socket
import time
from typing import Any

from sfu import wire
from sfu.errors import SignalingError
from sfu.router import Sfu
from sfu.rtcserver import rtc_server_for

log = logging.getLogger("classcast.sfu.worker")


class RelayTap:
    """A sink of the control side (recorder feed, transcriber), reached through this worker's link; or, for a sink by
    address (`feed`: the recorder's socket and job), its packets go straight to that socket."""

    def __init__(self, link: wire.Channel, tap_id: int, wants_video: bool, feed: wire.Channel | None = None,
                 job: str = "", hear_since: float | None = None) -> None:
        self.link, self.id, self.wants_video = link, tap_id, wants_video
        self.feed, self.job = feed, job
        self.hear_since = hear_since

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        self.link.send({"ev": "tap", "tap": self.id, "f": "added", "room": room_sid, "track": track})

    def track_removed(self, room_sid: str, track_id: str) -> None:
        self.link.send({"ev": "tap", "tap": self.id, "f": "removed", "room": room_sid, "track": track_id})

    def track_muted(self, room_sid: str, track_id: str, muted: bool) -> None:
        self.link.send({"ev": "tap", "tap": self.id, "f": "muted", "room": room_sid, "track": track_id,
                        "muted": muted})

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        if self.feed is not None:  # the recorder feed's message (control/sinks/feed.py), to the recorder itself
            self.feed.send_media({"t": "rtp", "j": self.job, "id": track_id, "d": data, "a": arrival})
        else:
            self.link.send_media({"ev": "tap", "tap": self.id, "f": "rtp", "track": track_id, "data": data,
                                  "at": arrival})

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
        if self.feed is not None:
            self.feed.send_media({"t": "sr", "j": self.job, "id": track_id, "ntp": ntp, "rtp": rtp_timestamp,
                                  "a": arrival, "c": clock})
        else:
            self.link.send_media({"ev": "tap", "tap": self.id, "f": "sr", "track": track_id, "ntp": ntp,
                                  "ts": rtp_timestamp, "at": arrival, "c": clock})


class Worker:
    def __init__(self) -> None:
        self.sfu: Sfu | None = None
        self.link = wire.Channel(self._on_message, self._on_lost)
        self.taps: dict[int, tuple[str, RelayTap]] = {}
        self.feeds: dict[str, wire.Channel] = {}  # sink sockets by path (sinks by address)
        self.index = -1
        self.done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        await self.link.open(sock)
        await self.done.wait()
        if self.sfu is not None:
            await self.sfu.close()

    def _on_lost(self) -> None:
        self.done.set()

    def _on_message(self, m: dict[str, Any]) -> None:
        op = m.get("op")
        if op == "config":
            self._spawn(self._configure(m))
        elif self.sfu is None:
            log.error("worker: %r before config", op)
        elif op == "add_tap":
            feed = m.get("feed") or {}
            since = m.get("since")
            tap = RelayTap(self.link, int(m["tap"]), bool(m.get("video", True)),
                           self._feed(str(feed["path"])) if feed.get("path") else None, str(feed.get("job", "")),
                           float(since) if isinstance(since, int | float) else None)
            self.taps[tap.id] = (m["room"], tap)
            self.sfu.add_tap(m["room"], tap)
        elif op == "remove_tap":
            room_tap = self.taps.pop(int(m["tap"]), None)
            if room_tap is not None:
                self.sfu.remove_tap(*room_tap)
        elif op in wire.PIPE_OPS:  # in arrival order: a pipe exists before any later op of its room
            self._pipe(m)
        elif op in wire.OPS:
            self._spawn(self._request(m))
        else:
            self._reply(m.get("id"), err=("BAD_MESSAGE", f"unknown op {op!r}"))

    def _pipe(self, m: dict[str, Any]) -> None:
        sfu = self.sfu
        assert sfu is not None
        op, rid = m["op"], m.get("id")
        try:
            # a worker's index, or a node's id (a relay between nodes: its host address and SRTP keys come along)
            room, peer = str(m["room"]), m["peer"] if isinstance(m["peer"], str) else int(m["peer"])
            if op == "pipe_open":
                keys = m.get("keys")
                self._reply(rid, {"port": sfu.open_pipe(room, peer, float(m.get("loss", 0.0)),
                                                        str(m.get("host") or "127.0.0.1"),
                                                        (bytes(keys[0]), bytes(keys[1])) if keys else None)})
            elif op == "pipe_connect":
                self._reply(rid, sfu.connect_pipe(room, peer, int(m["port"]), m.get("host")))
            elif op == "pipe_track":
                sfu.pipe_track(room, peer, m)
            else:
                sfu.close_pipe(room, peer)
        except SignalingError as exc:
            self._reply(rid, err=(exc.code, exc.message))
        except (KeyError, TypeError, ValueError) as exc:
            self._reply(rid, err=("BAD_MESSAGE", f"{op}: {exc!r}"))
        except OSError as exc:
            self._reply(rid, err=("PIPE_FAILED", str(exc)))

    def _feed(self, path: str) -> wire.Channel:
        """One connection per sink socket (the recorder's), opened on first use and again after it was lost;
        packets sent before it is open are dropped and counted like a slow sink's."""
        channel = self.feeds.get(path)
        if channel is None or channel.closed:
            channel = self.feeds[path] = wire.Channel(lambda m: None, lambda: None)
            channel.closed = True  # until connected: send_media drops

            async def connect() -> None:
                try:
                    reader, writer = await asyncio.open_unix_connection(path)
                except OSError as exc:
                    log.warning("worker %d: sink %s unreachable (%s): its packets go through the control process",
                                self.index, path, exc)
                    for _, tap in self.taps.values():
                        if tap.feed is channel:
                            tap.feed = None
                    return
                await channel.attach(reader, writer)

            self._spawn(connect())
        return channel

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reply(self, request_id: Any, ok: Any = None, err: tuple[str, str] | None = None) -> None:
        if request_id is None:
            return
        if err is not None:
            self.link.send({"re": request_id, "err": {"code": err[0], "message": err[1]}})
        else:
            self.link.send({"re": request_id, "ok": ok})

    async def _request(self, m: dict[str, Any]) -> None:
        sfu = self.sfu
        assert sfu is not None
        op, rid, room = m["op"], m.get("id"), m.get("room", "")
        try:
            if op == "join":
                key = m["key"]
                tracks = await sfu.join(room, key, m["info"], lambda msg: self.link.send(
                    {"ev": "signal", "key": key, "m": msg}))
                self._reply(rid, tracks)
            elif op == "oneway":
                key = m["key"]
                answer = await sfu.open_one_way(room, key, m["info"], lambda msg: self.link.send(
                    {"ev": "signal", "key": key, "m": msg}), str(m["kind"]), str(m["offer"]), list(m["tracks"]),
                    str(m["quality"]))
                self._reply(rid, answer)
            elif op == "handle":
                await sfu.handle(room, m["key"], m["m"])
                self._reply(rid)
            elif op == "leave":
                await sfu.leave(room, m["key"])
                self._reply(rid)
            elif op == "close_room":
                await sfu.close_room(room)
                self._reply(rid)
            elif op == "set_blocked":
                await sfu.set_blocked(room, m["uid"], bool(m["blocked"]))
                self._reply(rid)
            elif op == "keyframe":
                self._reply(rid, await sfu.request_keyframe(room, m["track"]))
            elif op == "stats":
                self._reply(rid, sfu.stats(room))
        except SignalingError as exc:
            self._reply(rid, err=(exc.code, exc.message))
        except Exception:
            log.exception("worker %d: %s failed", self.index, op)
            self._reply(rid, err=("SERVER_ERROR", "internal error"))

    async def _configure(self, m: dict[str, Any]) -> None:
        self.index = int(m["index"])
        ice = wire.ice_from_wire(m["ice"])
        self.sfu = Sfu(ice)
        self.sfu.on_track = lambda room, event: self.link.send({"ev": "pipe_track", "room": room, **event})
        server = rtc_server_for(ice, self.sfu.bridge.engine)
        if server is not None:
            await server.start()
        self.link.send({"ev": "hello", "pid": os.getpid(), "port": server.port if server is not None else 0,
                        "engine": self.sfu.bridge.kind})
        gc.freeze()  # start-up objects live as long as the process: full collections need not walk them again
        self._spawn(self._report_load())

    async def _report_load(self) -> None:
        """Measured load for placement and for operators: packets forwarded per second and CPU share."""
        sfu = self.sfu
        assert sfu is not None
        last_t, last_cpu, last_out = time.monotonic(), _cpu_seconds(), 0
        while not self.done.is_set():
            await asyncio.sleep(wire.LOAD_PERIOD)
            now, cpu = time.monotonic(), _cpu_seconds()
            metrics = sfu.metrics()
            pipes = [pipe for r in sfu.routers.values() for pipe in r.pipes.values()]
            metrics.update(pipes=len(pipes), pipe_packets_out=sum(p.rtp_sent for p in pipes),
                           pipe_packets_in=sum(p.rtp_received for p in pipes))
            out = int(metrics["forwarded_packets"])
            dt = max(1e-3, now - last_t)
            self.link.send({"ev": "load", "pps": (out - last_out) / dt, "cpu": (cpu - last_cpu) / dt,
                            "cpu_seconds": cpu, "rooms": len(sfu.routers),
                            "participants": sum(len(r.participants) for r in sfu.routers.values()),
                            "tap_dropped": self.link.dropped, "metrics": metrics})
            last_t, last_cpu, last_out = now, cpu, out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sfu.worker")
    parser.add_argument("fd", type=int, help="this worker's end of the control plane's socketpair")
    parser.add_argument("--log-level", default=os.environ.get("CLASSCAST_LOG_LEVEL", "INFO"))
    parser.add_argument("--index", type=int, default=-1)
    args = parser.parse_args(argv)
    # The control process owns a worker's life. A terminal's Ctrl-C (SIGINT) and a service manager's SIGTERM reach
    # every process of the group or cgroup; they are the control process's to act on (stop, or drain while the
    # classes go on), and it ends the worker by closing the link (the worker exits when its link closes: the control
    # process's death included). Killed alone (SIGKILL), the worker is restarted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _setup_logging(args.log_level, args.index)
    import uvloop  # the same loop as the in-process SFU (`classcast serve`): asyncio's own costs more per datagram

    uvloop.run(Worker().run(args.fd))


def _setup_logging(level: str, index: int) -> None:
    """The server's format and level (`classcast serve --log-level`: one JSON object per line, as the control,
    recorder and transcriber processes write), each line naming its worker and pid."""
    from control.logs import setup_logging

    setup_logging(level)
    pid = os.getpid()

    def stamp(record: logging.LogRecord) -> bool:
        record.sfu_worker, record.pid = index, pid
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(stamp)


if __name__ == "__main__":
    main()
