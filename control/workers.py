"""SFU worker processes seen from the control plane: spawn, place rooms, relay calls, notice deaths, restart.

`WorkerPool` has the surface of `sfu.router.Sfu` that signaling, recordings and the transcriber use (join, handle,
leave, add_tap, ...), so the Hub does not know whether media runs in-process (CLASSCAST_SFU_WORKERS=0) or in worker
processes. Each call becomes one message of sfu/wire.py to the worker that holds the room.

Placement: a room goes, when first needed, to the live worker with the least measured load (packets forwarded per
second in its last report, then participants, then rooms): its origin. A participant joins the first worker serving
the room that is under `capacity` participants (CLASSCAST_SFU_WORKER_CAPACITY, all rooms counted); when all are full
the room spreads to the least loaded other worker: the pool opens a pipe (sfu/pipe.py) between the room's router
there and on every worker already serving it, and each side's published tracks cross it once (mediasoup's
pipeToRouter). A worker left with no participant of a spread room (and, for the origin, no sink) leaves it again:
its pipes close.

Death: the socketpair closes the instant a worker dies (SIGKILL included), so the loss is seen at once; the worker
is restarted, its rooms are forgotten (the next join places them again) and `on_lost` gets the connection keys it
held, so the Hub can tell those participants to reconnect. Its rooms' sinks have their tracks retracted and are told
why (`media_lost`, with GAP_LOST or GAP_HUNG): a recording keeps its file and records the gap in its status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sfu import wire
from sfu.errors import SignalingError
from sfu.ice import IceConfig
from sfu.taps import Tap

log = logging.getLogger("classcast.workers")

START_TIMEOUT = 15.0
REQUEST_TIMEOUT = 10.0
RESTART_BACKOFF = (0.1, 5.0)
LOAD_LOG_INTERVAL = 60.0
HUNG_AFTER = 10.0  # seconds without a load report (sent every wire.LOAD_PERIOD) nor CPU used: killed and restarted
HUNG_ALWAYS = 60.0  # seconds without a load report, CPU or not (a loop spinning on one task)
# The cumulative counters in a worker's load report (`Sfu.metrics`), summed over the workers by `WorkerPool.metrics`
COUNTERS = ("forwarded_packets", "forwarded_bytes", "retransmitted", "layer_switches", "packets_in", "nacks_sent",
            "plis_sent", "nacks_received")
# Participants per worker before a room spreads (CLASSCAST_SFU_WORKER_CAPACITY): one worker's knee in bench/RESULTS.md
# ("Every core", run B: 300 subscribers under 1% loss with one worker, where this 2-core machine's clients broke first)
DEFAULT_CAPACITY = 300
Signal = Callable[[dict[str, Any]], None]
# Why a sink lost its media (the optional tap call `media_lost`, a recording's gap reason in its status)
GAP_LOST = "sfu_worker_lost"  # the worker process died (SIGKILL, crash)
GAP_HUNG = "sfu_worker_hung"  # the watchdog killed a worker that stopped answering


def cores() -> int:
    """The cores this process may use: the default number of SFU workers, one event loop per core. Its CPU affinity
    (a cpuset, `taskset`, `docker run --cpuset-cpus`), capped by its cgroup's CPU quota rounded up (`docker run
    --cpus 2`, a Kubernetes CPU limit): a worker per core it cannot use would only add processes that share it."""
    try:
        n = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(n, math.ceil(quota))) if quota else n


def cgroup_cpu_quota(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """This process's CPU limit in cores from its cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cfs_period_us`),
    the tightest along its path; None when unlimited or unknown."""
    try:
        lines = open(proc_cgroup).read().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2, the unified hierarchy
            files, read = [(root, "cpu.max")], _v2_quota
        elif "cpu" in controllers.split(","):
            files, read = [(f"{root}/{c}", "") for c in ("cpu", "cpu,cpuacct", "cpuacct,cpu")], _v1_quota
        else:
            continue
        for base, _ in files:
            folder = base + path.rstrip("/")
            while folder.startswith(base):  # the process's group and each parent: the smallest limit holds
                quota = read(folder)
                if quota:
                    limits.append(quota)
                if folder == base:
                    break
                folder = folder.rsplit("/", 1)[0] or base
    return min(limits) if limits else None


def _v2_quota(folder: str) -> float | None:
    try:
        quota, period = open(f"{folder}/cpu.max").read().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: str) -> float | None:
    try:
        quota = int(open(f"{folder}/cpu.cfs_quota_us").read())
        period = int(open(f"{folder}/cpu.cfs_period_us").read())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def worker_count(value: str | int | None) -> int:
    """CLASSCAST_SFU_WORKERS: unset, empty or `auto` = one per core (the default); a number N = N workers; 0 = media
    in the control process (one process, as before issue 15)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return cores()
    n = int(value)
    if not 0 <= n <= 256:
        raise ValueError("CLASSCAST_SFU_WORKERS must be 0..256 or 'auto'")
    return n


@dataclass(eq=False)
class WorkerHandle:
    index: int
    pool: WorkerPool
    pid: int = 0
    port: int = 0
    engine: str = ""
    alive: bool = False
    started_at: float = 0.0
    heard: float = 0.0  # when its last load report came: a worker that stops reporting is hung
    cpu_ticks: int = -1  # its CPU time in /proc (clock ticks) at `progressed`
    progressed: float = 0.0
    restarts: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    link: wire.Channel | None = None
    process: asyncio.subprocess.Process | None = None
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    hello: asyncio.Future[dict[str, Any]] | None = None
    down: asyncio.Event = field(default_factory=asyncio.Event)  # set while the process is lost, until restarted
    lost_reason: str = ""  # why the pool ended it (the hang watchdog), else it simply died: a recording's gap reason

    @property
    def pps(self) -> float:
        return float(self.load.get("pps", 0.0))

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # `serve --log-level`
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sfu.worker", str(child.fileno()), "--index", str(self.index),
                "--log-level", str(level), pass_fds=(child.fileno(),))
        finally:
            child.close()
        loop = asyncio.get_running_loop()
        self.hello = loop.create_future()
        self.load = {}
        self.link = wire.Channel(self._on_message, self._on_lost)
        await self.link.open(parent)
        self.link.send({"op": "config", "index": self.index,
                        "ice": wire.ice_to_wire(self.pool.ice_for(self.index))})
        hello = await asyncio.wait_for(self.hello, START_TIMEOUT)
        self.pid, self.port, self.engine = int(hello["pid"]), int(hello["port"]), str(hello["engine"])
        self.alive, self.started_at = True, time.monotonic()
        self.lost_reason = ""
        self.heard = self.progressed = self.started_at
        self.down.clear()
        log.info("SFU worker %d: pid %d, UDP port %d, engine %s", self.index, self.pid, self.port, self.engine)

    def _on_message(self, m: dict[str, Any]) -> None:
        if "re" in m:
            future = self.pending.pop(m["re"], None)
            if future is not None and not future.done():
                if "err" in m:
                    err = m["err"] or {}
                    future.set_exception(SignalingError(str(err.get("code")), str(err.get("message"))))
                else:
                    future.set_result(m.get("ok"))
            return
        ev = m.get("ev")
        if ev == "signal":
            self.pool.deliver(str(m.get("key")), m.get("m") or {})
        elif ev == "tap":
            self.pool.tap_event(m)
        elif ev == "pipe_track":
            self.pool.pipe_event(self, m)
        elif ev == "load":
            self.load = m
            self.heard = time.monotonic()
        elif ev == "hello" and self.hello is not None and not self.hello.done():
            self.hello.set_result(m)

    def _on_lost(self) -> None:
        was_alive = self.alive
        self.alive = False
        self.down.set()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(SignalingError("MEDIA_WORKER_LOST", "the media worker restarted; reconnect"))
        self.pending.clear()
        if self.hello is not None and not self.hello.done():
            self.hello.set_exception(ConnectionError(f"SFU worker {self.index} exited while starting"))
        if was_alive:
            self.pool.worker_lost(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.link is not None:
            self.link.send(message)

    async def request(self, op: str, **args: Any) -> Any:
        if not self.alive or self.link is None:
            raise SignalingError("MEDIA_WORKER_LOST", "the media worker restarted; reconnect")
        rid = next(self.pool.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        try:  # the send too: one that raises must not leave its future behind
            try:
                self.link.send({"op": op, "id": rid, **args})
            except OverflowError:  # msgpack takes integers of 64 bits; a client's JSON may hold any
                raise SignalingError("BAD_MESSAGE", "a number in the message is out of range") from None
            return await asyncio.wait_for(future, REQUEST_TIMEOUT)
        finally:
            self.pending.pop(rid, None)

    async def stop(self) -> None:
        """Closes the link, which ends the worker (it ignores SIGINT and SIGTERM: those are the control process's);
        killed if it has not exited within 5 s, or at once if it was still starting (it holds nothing yet, and
        would only notice the closed link once its imports are done)."""
        running = self.alive
        self.alive = False
        if self.link is not None:
            await self.link.close()
        if self.process is not None and self.process.returncode is None:
            try:
                if not running:
                    raise TimeoutError
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, from /proc (-1 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])


def _add_tap(room_sid: str, tap_id: int, tap: Tap) -> dict[str, Any]:
    """The add_tap op; a sink by address (the recorder: `address`, `job_id`) gets its media from the worker itself."""
    message: dict[str, Any] = {"op": "add_tap", "room": room_sid, "tap": tap_id,
                               "video": bool(getattr(tap, "wants_video", True))}
    since = getattr(tap, "hear_since", None)
    if since is not None:
        message["since"] = float(since)
    address = getattr(tap, "address", None)
    if address:
        message["feed"] = {"path": str(address), "job": str(getattr(tap, "job_id", ""))}
    return message


@dataclass(eq=False)
class _TapEntry:
    room: str
    tap: Tap
    tracks: set[str] = field(default_factory=set)  # what the sink was told exists, to retract on a worker's death
    worker: WorkerHandle | None = None


class WorkerPool:
    """The `Sfu` surface over N worker processes (control/signaling.py builds one when CLASSCAST_SFU_WORKERS > 0)."""

    def __init__(self, count: int, ice: IceConfig, capacity: int = DEFAULT_CAPACITY) -> None:
        self.ice = ice
        self.workers = [WorkerHandle(i, self) for i in range(count)]
        self.ids = itertools.count(1)
        self.capacity = capacity  # participants per worker before a room spreads to another; <= 0: never
        self.pipe_loss = 0.0  # tests and bench only: share of RTP each new pipe drops on its way (NACKs repair it)
        self.rooms: dict[str, WorkerHandle] = {}  # room sid -> its origin worker (its sinks are there)
        self.serving: dict[str, list[WorkerHandle]] = {}  # room sid -> every worker holding it, the origin first
        self._spreading: dict[str, asyncio.Lock] = {}
        self.members: dict[str, tuple[str, WorkerHandle, Signal]] = {}  # connection key -> (room, worker, signal)
        self.taps: dict[int, _TapEntry] = {}
        self._tap_ids: dict[int, int] = {}  # id(tap object) -> tap id
        self.on_lost: Callable[[list[str]], None] = lambda keys: None  # set by the Hub
        # A lecture across nodes (control/relay.py): the room's pipes to other nodes sit on its origin worker, this
        # node's gateway; their track events and their loss (the origin died) go to the relay.
        self.node_pipes: dict[str, set[str]] = {}  # room sid -> peer node ids
        self.on_relay_track: Callable[[str, dict[str, Any]], None] = lambda room, event: None
        self.on_relay_lost: Callable[[str], None] = lambda room: None
        self.lost_total = 0
        # cumulative counters of worker processes that are gone: /metrics must never fall when one restarts
        self.retired: collections.Counter[str] = collections.Counter()
        self.retired_drops: collections.Counter[str] = collections.Counter()
        self.hung_after = HUNG_AFTER
        self.relayed_media = 0  # tap packets that crossed the control process (sinks without an address)
        self._closing = False
        self._announced = False  # the media ports were logged once every worker had started
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_task: asyncio.Task[None] | None = None

    def ice_for(self, index: int) -> IceConfig:
        """Worker i listens on CLASSCAST_RTC_PORT + i (or the next free one); port 0 stays any free port."""
        import dataclasses

        port = self.ice.rtc_port + index if self.ice.rtc_port else 0
        return dataclasses.replace(self.ice, rtc_port=port)

    async def start(self) -> None:
        """Starts every worker at once and returns without waiting for them (`ready` waits): the control plane
        serves REST meanwhile, a join waits for a live worker (`_place`), /readyz says `sfu` not ok until they are
        up. A worker that fails to start is retried with backoff, as after a death."""
        for w in self.workers:
            self._spawn(self._run_start(w))
        self._log_task = asyncio.create_task(self._log_load())
        self._spawn(self._watch())

    async def ready(self, timeout: float = START_TIMEOUT) -> bool:
        """Waits until every worker is running (at most `timeout` seconds); False if some are not."""
        deadline = time.monotonic() + timeout
        while not all(w.alive for w in self.workers):
            if time.monotonic() > deadline or self._closing:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _watch(self) -> None:
        """A hung worker (a stuck loop, SIGSTOP) keeps its socket open: its silence gives it away. Silence alone is
        not enough (a loaded worker's loop can be busy for seconds with a burst of joins): it must also have used no
        CPU for `hung_after` seconds, or have been silent for HUNG_ALWAYS. It is killed, and the socket's close does
        the rest, as for any death."""
        while not self._closing:
            await asyncio.sleep(wire.LOAD_PERIOD)
            now = time.monotonic()
            for w in self.workers:
                if not w.alive or w.process is None:
                    continue
                ticks = _cpu_ticks(w.pid)
                if ticks != w.cpu_ticks:
                    w.cpu_ticks, w.progressed = ticks, now
                silent = now - w.heard
                if (silent > self.hung_after and now - w.progressed > self.hung_after) or silent > HUNG_ALWAYS:
                    log.error("SFU worker %d (pid %d) silent for %.1f s, %.1f s without CPU: killed", w.index,
                              w.pid, silent, now - w.progressed)
                    w.heard = now
                    w.lost_reason = GAP_HUNG
                    with contextlib.suppress(ProcessLookupError):
                        w.process.kill()

    def workers_alive(self) -> tuple[int, int]:
        """For /readyz (control/health.py)."""
        return sum(1 for w in self.workers if w.alive), len(self.workers)

    # ---- placement ----------------------------------------------------------------------------------------

    def _score(self, w: WorkerHandle) -> tuple[float, int, int]:
        members = sum(1 for _, worker, _ in self.members.values() if worker is w)
        rooms = sum(1 for worker in self.rooms.values() if worker is w)
        return (w.pps, members, rooms)

    async def _place(self, room_sid: str) -> WorkerHandle:
        worker = self.rooms.get(room_sid)
        if worker is not None and worker.alive:
            return worker
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            live = [w for w in self.workers if w.alive]
            if live:
                break
            if time.monotonic() > deadline or self._closing:
                raise SignalingError("MEDIA_UNAVAILABLE", "no media worker is running; try again shortly")
            await asyncio.sleep(0.05)
        worker = self.rooms.get(room_sid)
        if worker is not None and worker.alive:
            return worker
        worker = min(live, key=self._score)
        self.rooms[room_sid] = worker
        self.serving[room_sid] = [worker]
        log.info("room %s placed on SFU worker %d (%.0f packets/s, pid %d)", room_sid, worker.index, worker.pps,
                 worker.pid)
        for tap_id, entry in self.taps.items():  # sinks of the room follow it (a restart's re-placement)
            if entry.room == room_sid and entry.worker is not worker:
                entry.worker = worker
                worker.send(_add_tap(room_sid, tap_id, entry.tap))
        return worker

    def _members_on(self, worker: WorkerHandle) -> int:
        return sum(1 for _, w, _ in self.members.values() if w is worker)

    async def _place_member(self, room_sid: str) -> WorkerHandle:
        """The worker a new participant of the room goes to: the first serving it with room under `capacity`,
        else a worker the room spreads to now (its pipes opened before the participant joins there)."""
        origin = await self._place(room_sid)
        if self.capacity <= 0 or len(self.workers) < 2:
            return origin
        async with self._spreading.setdefault(room_sid, asyncio.Lock()):
            serving = [w for w in self.serving.get(room_sid, [origin]) if w.alive]
            if not serving:
                return await self._place(room_sid)
            for w in serving:
                if self._members_on(w) < self.capacity:
                    return w
            others = [w for w in self.workers if w.alive and w not in serving and self._members_on(w) < self.capacity]
            if not others:  # every worker is full: the least full of the room's
                return min(serving, key=self._members_on)
            new = min(others, key=self._score)
            await self._spread(room_sid, new)
            return new

    async def _spread(self, room_sid: str, new: WorkerHandle) -> None:
        """Adds `new` to the room: a pipe to every worker serving it, each side's tracks announced to the other."""
        serving = self.serving.setdefault(room_sid, [])
        peers = [w for w in serving if w.alive]
        serving.append(new)  # from now on tracks published elsewhere in the room are relayed to it too
        log.info("room %s spreads to SFU worker %d (pid %d): %d participants on worker(s) %s, capacity %d",
                 room_sid, new.index, new.pid, sum(self._members_on(w) for w in peers),
                 ",".join(str(w.index) for w in peers), self.capacity)
        try:
            for peer in peers:
                await self._open_pipe(room_sid, peer, new)
        except BaseException:
            self._retire(room_sid, new)
            raise

    async def _open_pipe(self, room_sid: str, a: WorkerHandle, b: WorkerHandle) -> None:
        port_b = (await b.request("pipe_open", room=room_sid, peer=a.index, loss=self.pipe_loss))["port"]
        port_a = (await a.request("pipe_open", room=room_sid, peer=b.index, loss=self.pipe_loss))["port"]
        tracks_a, tracks_b = await asyncio.gather(
            a.request("pipe_connect", room=room_sid, peer=b.index, port=port_b),
            b.request("pipe_connect", room=room_sid, peer=a.index, port=port_a))
        for src, dst, tracks in ((a, b, tracks_a), (b, a, tracks_b)):
            for track in tracks:
                dst.send({"op": "pipe_track", "room": room_sid, "peer": src.index, "f": "added", "track": track})
        log.info("room %s piped between SFU workers %d and %d (%d + %d tracks)", room_sid, a.index, b.index,
                 len(tracks_a), len(tracks_b))

    def _retire(self, room_sid: str, worker: WorkerHandle) -> None:
        """`worker` no longer serves a spread room: its pipes close at both ends (its tracks leave the others)."""
        serving = self.serving.get(room_sid)
        if not serving or worker not in serving:
            return
        serving.remove(worker)
        for other in serving:
            other.send({"op": "pipe_close", "room": room_sid, "peer": worker.index})
            worker.send({"op": "pipe_close", "room": room_sid, "peer": other.index})
        if serving and self.rooms.get(room_sid) is worker:
            self.rooms[room_sid] = serving[0]
        log.info("room %s left SFU worker %d", room_sid, worker.index)

    def _leave_if_unused(self, room_sid: str, worker: WorkerHandle) -> None:
        """A worker of a spread room with none of its participants (and, for the origin, none of its sinks)."""
        serving = self.serving.get(room_sid)
        if not serving or len(serving) < 2 or worker not in serving:
            return
        if any(room == room_sid and w is worker for room, w, _ in self.members.values()):
            return
        if worker is serving[0] and (any(e.room == room_sid for e in self.taps.values()) or
                                     room_sid in self.node_pipes):
            return
        self._retire(room_sid, worker)

    def pipe_event(self, worker: WorkerHandle, m: dict[str, Any]) -> None:
        """A track published, unpublished or muted on one worker of a spread room: to every other one's pipe; from
        the origin, also to the nodes its pipes reach (`scope` limits it to one kind: sfu/router.py _scope)."""
        room_sid, scope = str(m.get("room")), m.get("scope")
        if scope != "nodes":
            for other in self.serving.get(room_sid, ()):
                if other is not worker and other.alive:
                    other.send({"op": "pipe_track", "room": room_sid, "peer": worker.index, "f": m.get("f"),
                                "track": m.get("track"), "muted": bool(m.get("muted"))})
        if scope != "workers" and self.node_pipes.get(room_sid) and self.rooms.get(room_sid) is worker:
            self.on_relay_track(room_sid, {"f": m.get("f"), "track": m.get("track"), "muted": bool(m.get("muted"))})

    # ---- pipes to other nodes (control/relay.py), on the room's origin worker ------------------------------

    async def relay_open(self, room_sid: str, peer: str, loss: float, host: str, keys: tuple[bytes, bytes]) -> int:
        origin = await self._place(room_sid)
        self.node_pipes.setdefault(room_sid, set()).add(peer)
        try:
            return int((await origin.request("pipe_open", room=room_sid, peer=peer, loss=loss, host=host,
                                              keys=list(keys)))["port"])
        except BaseException:
            self.relay_close(room_sid, peer)
            raise

    async def relay_connect(self, room_sid: str, peer: str, port: int, host: str) -> list[dict[str, Any]]:
        origin = self.worker_of(room_sid)
        if origin is None:
            raise SignalingError("MEDIA_WORKER_LOST", "the media worker restarted; reconnect")
        return list(await origin.request("pipe_connect", room=room_sid, peer=peer, port=port, host=host))

    def relay_track(self, room_sid: str, peer: str, event: dict[str, Any]) -> None:
        origin = self.worker_of(room_sid)
        if origin is not None:
            origin.send({"op": "pipe_track", "room": room_sid, "peer": peer, "f": event.get("f"),
                         "track": event.get("track"), "muted": bool(event.get("muted"))})

    def relay_close(self, room_sid: str, peer: str) -> None:
        peers = self.node_pipes.get(room_sid)
        if peers is None or peer not in peers:
            return
        peers.discard(peer)
        if not peers:
            del self.node_pipes[room_sid]
        origin = self.worker_of(room_sid)
        if origin is not None:
            origin.send({"op": "pipe_close", "room": room_sid, "peer": peer})
        self._forget_if_empty(room_sid)

    def relay_held(self, room_sid: str) -> bool:
        """Whether a participant of the room is on this node."""
        return any(room == room_sid for room, _, _ in self.members.values())

    def workers_of(self, room_sid: str) -> list[WorkerHandle]:
        """Every live worker serving the room, the origin first."""
        return [w for w in self.serving.get(room_sid, ()) if w.alive]

    def worker_of(self, room_sid: str) -> WorkerHandle | None:
        worker = self.rooms.get(room_sid)
        return worker if worker is not None and worker.alive else None

    # ---- the Sfu surface ----------------------------------------------------------------------------------

    async def join(self, room_sid: str, key: str, info: dict[str, Any], signal: Signal) -> list[dict[str, Any]]:
        worker = await self._place_member(room_sid)
        self.members[key] = (room_sid, worker, signal)
        try:
            return list(await worker.request("join", room=room_sid, key=key, info=info))
        except BaseException:
            if self.members.get(key, (None, None))[1] is worker:
                self.members.pop(key, None)
                self._leave_if_unused(room_sid, worker)
            raise

    async def open_one_way(self, room_sid: str, key: str, info: dict[str, Any], signal: Signal, kind: str,
                           offer: str, tracks: list[dict[str, str]], quality: str) -> str:
        """WHIP/WHEP (`Sfu.open_one_way`) on the room's worker; the session's later calls are handle/leave."""
        worker = await self._place_member(room_sid)
        self.members[key] = (room_sid, worker, signal)
        try:
            return str(await worker.request("oneway", room=room_sid, key=key, info=info, kind=kind, offer=offer,
                                            tracks=tracks, quality=quality))
        except BaseException:
            if self.members.get(key, (None, None))[1] is worker:
                self.members.pop(key, None)
                self._leave_if_unused(room_sid, worker)
            self._forget_if_empty(room_sid)
            raise

    async def handle(self, room_sid: str, key: str, message: dict[str, Any]) -> None:
        member = self.members.get(key)
        if member is None or member[0] != room_sid:
            raise SignalingError("NOT_JOINED", "join the room first")
        await member[1].request("handle", room=room_sid, key=key, m=message)

    async def leave(self, room_sid: str, key: str) -> None:
        member = self.members.pop(key, None)
        if member is None or not member[1].alive:
            return
        with contextlib.suppress(SignalingError, TimeoutError):
            await member[1].request("leave", room=room_sid, key=key)
        self._leave_if_unused(room_sid, member[1])
        self._forget_if_empty(room_sid)

    def _forget_if_empty(self, room_sid: str) -> None:
        if not any(room == room_sid for room, _, _ in self.members.values()) and \
                not any(e.room == room_sid for e in self.taps.values()) and room_sid not in self.node_pipes:
            self.rooms.pop(room_sid, None)
            self.serving.pop(room_sid, None)
            self._spreading.pop(room_sid, None)

    def add_tap(self, room_sid: str, tap: Tap) -> None:
        tap_id = next(self.ids)
        self._tap_ids[id(tap)] = tap_id
        self.taps[tap_id] = entry = _TapEntry(room_sid, tap)
        worker = self.worker_of(room_sid)
        if worker is not None:
            entry.worker = worker
            worker.send(_add_tap(room_sid, tap_id, tap))
        else:  # placed with the room's first participant, or now if the room has none yet
            self._spawn(self._place(room_sid))

    def remove_tap(self, room_sid: str, tap: Tap) -> None:
        tap_id = self._tap_ids.pop(id(tap), None)
        entry = self.taps.pop(tap_id, None) if tap_id is not None else None
        if entry is not None and entry.worker is not None and entry.worker.alive:
            entry.worker.send({"op": "remove_tap", "room": room_sid, "tap": tap_id})
        self._forget_if_empty(room_sid)

    async def request_keyframe(self, room_sid: str, track_id: str) -> bool:
        worker = self.worker_of(room_sid)
        if worker is None:
            return False
        with contextlib.suppress(SignalingError, TimeoutError):
            return bool(await worker.request("keyframe", room=room_sid, track=track_id))
        return False

    async def set_blocked(self, room_sid: str, uid: str, blocked: bool) -> None:
        """On every worker of the room: the publisher's own, and the pipes' copies of its microphone."""
        for worker in self.workers_of(room_sid):
            with contextlib.suppress(SignalingError, TimeoutError):
                await worker.request("set_blocked", room=room_sid, uid=uid, blocked=blocked)

    async def close_room(self, room_sid: str) -> None:
        workers = self.workers_of(room_sid)
        self.node_pipes.pop(room_sid, None)
        self.rooms.pop(room_sid, None)
        self.serving.pop(room_sid, None)
        self._spreading.pop(room_sid, None)
        for key in [k for k, (room, _, _) in self.members.items() if room == room_sid]:
            self.members.pop(key, None)
        for worker in workers:  # each closes its pipes with its router
            with contextlib.suppress(SignalingError, TimeoutError):
                await worker.request("close_room", room=room_sid)

    async def room_stats(self, room_sid: str, worker_index: int | None = None) -> dict[str, Any]:
        """`Sfu.stats(room)` from the room's origin worker, or from `worker_index` of a spread room (asynchronous
        here: it is a round trip); `workers` lists every worker serving the room."""
        worker = self.worker_of(room_sid) if worker_index is None else \
            next((w for w in self.workers_of(room_sid) if w.index == worker_index), None)
        if worker is None:
            return {"participants": 0, "tracks": []}
        return dict(await worker.request("stats", room=room_sid)) | {
            "worker": worker.index, "workers": [w.index for w in self.workers_of(room_sid)]}

    def metrics(self) -> dict[str, Any]:
        """Sums of the workers' last reports (cumulative counters) plus one entry per worker (issue 15 req 6)."""
        total: dict[str, Any] = {"engine": "", "estimated_bitrates_bps": []}
        counts, drops = self.retired.copy(), self.retired_drops.copy()
        per_worker = []
        for w in self.workers:
            m = w.load.get("metrics") or {}
            total["engine"] = total["engine"] or m.get("engine", "")
            _add_counts(counts, drops, m)
            total["estimated_bitrates_bps"] += list(m.get("estimated_bitrates_bps") or [])
            per_worker.append({"id": w.index, "pid": w.pid, "port": w.port, "alive": w.alive,
                               "restarts": w.restarts, "pps": w.pps, "cpu": float(w.load.get("cpu", 0.0)),
                               "cpu_seconds": float(w.load.get("cpu_seconds", 0.0)),
                               "rooms": int(w.load.get("rooms", 0)),
                               "participants": int(w.load.get("participants", 0)),
                               "forwarded_packets": int(m.get("forwarded_packets", 0)),
                               # one lecture over several workers: its pipes here and what crossed them
                               "pipes": int(m.get("pipes", 0)), "pipe_packets_out": int(m.get("pipe_packets_out", 0)),
                               "pipe_packets_in": int(m.get("pipe_packets_in", 0))})
        total |= {key: counts[key] for key in COUNTERS}
        total["drops"] = dict(drops)
        total["workers"] = per_worker
        return total

    # ---- events from workers ------------------------------------------------------------------------------

    def deliver(self, key: str, message: dict[str, Any]) -> None:
        member = self.members.get(key)
        if member is not None:
            member[2](message)

    def tap_event(self, m: dict[str, Any]) -> None:
        entry = self.taps.get(int(m.get("tap", -1)))
        if entry is None:
            return
        f, tap = m.get("f"), entry.tap
        if f in ("rtp", "sr"):
            self.relayed_media += 1
        if f == "rtp":
            tap.rtp(m["track"], m["data"], float(m["at"]))
        elif f == "sr":
            tap.sender_report(m["track"], int(m["ntp"]), int(m["ts"]), float(m["at"]), int(m.get("c", 0)))
        elif f == "added":
            entry.tracks.add(str(m["track"].get("trackId")))
            tap.track_added(m["room"], m["track"])
        elif f == "removed":
            entry.tracks.discard(str(m["track"]))
            tap.track_removed(m["room"], m["track"])
        elif f == "muted":
            notify = getattr(tap, "track_muted", None)
            if notify is not None:
                notify(m["room"], m["track"], bool(m["muted"]))

    def worker_lost(self, worker: WorkerHandle) -> None:
        """Seen the instant its socket closes: retract its tracks from sinks, forget its rooms, restart it."""
        if self._closing:
            return
        self.lost_total += 1
        # its counts up to its last load report (at most wire.LOAD_PERIOD old) stay in the totals
        _add_counts(self.retired, self.retired_drops, worker.load.get("metrics") or {})
        worker.load = {}
        rooms = [sid for sid, w in self.rooms.items() if w is worker]
        keys = [k for k, (_, w, _) in self.members.items() if w is worker]
        log.error("SFU worker %d (pid %d) lost: %d rooms, %d participants to reconnect", worker.index, worker.pid,
                  len(rooms), len(keys))
        for sid in rooms:
            self.rooms.pop(sid, None)
        relays_lost = [sid for sid in rooms if self.node_pipes.pop(sid, None)]  # the gateway's pipes died with it
        for sid, serving in list(self.serving.items()):  # a spread room goes on on its other workers
            if worker not in serving:
                continue
            serving.remove(worker)
            for other in serving:
                other.send({"op": "pipe_close", "room": sid, "peer": worker.index})
            if not serving:
                self.serving.pop(sid, None)
            elif sid in rooms:
                self.rooms[sid] = serving[0]  # the new origin; the room's sinks follow it (below)
        for key in keys:
            _, _, signal = self.members.pop(key)
            # what the participant's transport would say: a one-way (WHIP/WHEP) session ends on it (its client
            # POSTs again); a WebSocket participant is told to reconnect by the Hub (on_lost) right after
            with contextlib.suppress(Exception):
                signal({"type": "connection_state", "state": "failed", "reason": "media_worker_lost"})
        for entry in self.taps.values():
            if entry.worker is worker:
                entry.worker = None
                had_media = bool(entry.tracks)
                for track_id in sorted(entry.tracks):
                    with contextlib.suppress(Exception):
                        entry.tap.track_removed(entry.room, track_id)
                entry.tracks.clear()
                # the sink's media stops for a known reason until the room's tracks come back (a recording
                # records this as a gap in its status); optional, like track_muted. A room with no track had no
                # media to lose.
                media_lost = getattr(entry.tap, "media_lost", None)
                if media_lost is not None and had_media:
                    with contextlib.suppress(Exception):
                        media_lost(entry.room, worker.lost_reason or GAP_LOST)
        for tap_id, entry in self.taps.items():  # sinks of a spread room follow its new origin at once
            origin = self.rooms.get(entry.room)
            if entry.worker is None and origin is not None and origin.alive:
                entry.worker = origin
                origin.send(_add_tap(entry.room, tap_id, entry.tap))
        self._spawn(self._restart(worker))
        self.on_lost(keys)
        for sid in relays_lost:
            self.on_relay_lost(sid)

    async def _restart(self, worker: WorkerHandle) -> None:
        if worker.process is not None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            code = await worker.process.wait()
            log.info("SFU worker %d (pid %d) exit status %s; restarting", worker.index, worker.pid, code)
        worker.restarts += 1
        await self._run_start(worker)

    async def _run_start(self, worker: WorkerHandle) -> None:
        """Starts `worker`, again and again with backoff until it runs (or the pool closes)."""
        delay, cap = RESTART_BACKOFF
        while not self._closing:
            try:
                await worker.start()
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.error("SFU worker %d failed to start: %s", worker.index, exc)
                await worker.stop()
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
                worker.restarts += 1
                continue
            if not self._announced and all(w.alive for w in self.workers):
                self._announced = True
                ports = ", ".join(str(w.port) for w in self.workers)
                log.info("media on UDP ports %s (one per SFU worker, CLASSCAST_SFU_WORKERS=%d): a firewall, NAT "
                         "or `docker run -p` must let every one of them through", ports, len(self.workers))
            # a room kept only by a sink (a recording while everybody reconnects) is placed again now
            for room_sid in {e.room for e in self.taps.values() if e.worker is None and e.room not in self.rooms}:
                self._spawn(self._place(room_sid))
            return

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _log_load(self) -> None:
        while True:
            await asyncio.sleep(LOAD_LOG_INTERVAL)
            self.log_load()

    def log_load(self) -> None:
        """One line per worker (every LOAD_LOG_INTERVAL): what an operator needs to see the spread."""
        for w in self.workers:
            log.info("SFU worker %d: pid %d, UDP port %d, %s, %.0f packets/s, CPU %.0f%%, %d rooms, "
                     "%d participants, %d pipes", w.index, w.pid, w.port, "alive" if w.alive else "DOWN", w.pps,
                     100 * float(w.load.get("cpu", 0.0)), int(w.load.get("rooms", 0)),
                     int(w.load.get("participants", 0)), int((w.load.get("metrics") or {}).get("pipes", 0)))

    async def close(self) -> None:
        self._closing = True
        if self._log_task is not None:
            self._log_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)


def _add_counts(counts: collections.Counter[str], drops: collections.Counter[str], metrics: dict[str, Any]) -> None:
    """Adds one worker's cumulative counters (its last load report's `metrics`) to `counts` and `drops`."""
    for key in COUNTERS:
        counts[key] += int(metrics.get(key, 0))
    for reason, n in (metrics.get("drops") or {}).items():
        drops[reason] += int(n)
