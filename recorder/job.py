"""One recording job in the recorder process: its own thread, fed from the socket, writing one sink.

Packets go through reorder -> depacketize -> timeline (sender-report sync) -> the sink (track files or the
composite). A moment is written once every active track has delivered media past it (so a loaded machine that
delivers late loses nothing), but never less than MIN_DELAY nor more than MAX_DELAY behind live; `stop` writes
everything up to the moment it arrived and closes the files.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.depacketize import Frame, Reorder, depacketizer
from recorder.mux import CompositeSink, Emit, TrackInfo, TrackSink
from recorder.timeline import Lag, TrackClock

log = logging.getLogger("classcast.recorder.job")

MIN_DELAY, MAX_DELAY = 0.5, 5.0  # how far behind live the output is written (see _advance)
IDLE_S = 1.0  # a track silent for this long (muted, stalled) no longer holds the output back
KEYFRAME_INTERVAL = 1.0  # at most one keyframe request per track per second
# A frame placed this far after its arrival, or BEHIND_S before it (more than any stall queues), has a timestamp
# that jumped: it is left out.
AHEAD_S, BEHIND_S = MAX_DELAY + 5.0, 60.0
QUEUE_LIMIT = 20000
MEDIA = ("rtp", "sr")  # what an SFU worker's own connection may carry, and what a job far behind may drop
# Sender reports kept for tracks not added yet (see `_handle`), newest per track, at most this many tracks.
EARLY_REPORTS = 64


@dataclass
class TrackState:
    info: TrackInfo
    reorder: Reorder
    depacketizer: Any
    clock: TrackClock
    waiting: list[Frame] = field(default_factory=list)  # frames before the first sender report
    asked_keyframe: float = -1e9
    last_seconds: float | None = None  # recording time of the newest frame handed to the sink
    last_arrival: float = -1e9
    frames: int = 0
    muted: bool = False  # the publisher muted it: nothing of it is written
    misplaced: int = 0  # frames left out: placed far from their arrival (see Job._deliver)


class Job:
    def __init__(self, start: dict[str, Any], emit: Emit, threaded: bool = True) -> None:
        """`threaded=False` replays a feed offline (tests): the caller hands messages to `_handle` and ends with
        `_finish`, with no wall clock involved."""
        self.id = str(start["j"])
        self.t0 = float(start["t0"])
        self.mode = start.get("mode", "composite")
        self.dir = Path(start["dir"])
        self.emit = emit
        self.tracks: dict[str, TrackState] = {}
        self.offsets: dict[str, float] = {}
        self.peers: dict[str, list[Lag]] = {}  # how each track's frames arrive, per publisher (TrackClock._holes)
        self.muted: set[str] = set()  # uids a moderator muted: their audio is not forwarded, so not recorded
        self.early_reports: dict[str, dict[str, Any]] = {}  # track id -> its latest "sr" that came before "track"
        self.inbox: queue.Queue[tuple[dict[str, Any], float]] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0  # media messages not queued: the job was QUEUE_LIMIT behind (see `put`)
        self.sink: TrackSink | CompositeSink
        if self.mode == "track":
            self.sink = TrackSink(self.id, self.dir, emit)
        else:
            self.sink = CompositeSink(self.id, self.dir, emit, start.get("layout", "grid"),
                                      start.get("preset", "H264_1080P_30"), start.get("logo"))
        self.thread = threading.Thread(target=self._run, name=f"job-{self.id}", daemon=True)
        if threaded:
            self.thread.start()

    def put(self, message: dict[str, Any]) -> None:
        """From a socket reader. A job QUEUE_LIMIT messages behind drops media (counted) rather than block: the
        reader serves every job of its connection (all rooms of an SFU worker), and one job that fell behind held
        all of them. What is not media (tracks, mutes, the stop) is never dropped: it waits for room."""
        item = (message, time.monotonic())
        if message.get("t") not in MEDIA:
            self.inbox.put(item)
            return
        try:
            self.inbox.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10000 == 0:
                log.warning("job %s is %d messages behind: %d media messages dropped so far", self.id,
                            QUEUE_LIMIT, self.dropped)

    def _run(self) -> None:
        try:
            while True:
                try:
                    message, received = self.inbox.get(timeout=0.02)
                except queue.Empty:
                    self._advance(time.monotonic())
                    continue
                if message["t"] == "stop":
                    files = self._finish(received)
                    self.emit({"t": "done", "j": self.id, "files": files})
                    return
                self._handle(message)
                if self.inbox.empty():
                    self._advance(time.monotonic())
        except Exception as exc:
            log.exception("job %s failed", self.id)
            self.emit({"t": "failed", "j": self.id, "error": str(exc) or type(exc).__name__})

    def _handle(self, m: dict[str, Any]) -> None:
        kind = m["t"]
        if kind == "rtp":
            state = self.tracks.get(m["id"])
            if state is None:
                return
            if state.clock.first_arrival is None:
                state.clock.first_arrival = m["a"]
            for packet, gap in state.reorder.push(m["d"], m["a"]):
                for frame in state.depacketizer.push(packet, gap):
                    self._frame(state, frame)
            if getattr(state.depacketizer, "need_keyframe", False) and m["a"] - state.asked_keyframe > \
                    KEYFRAME_INTERVAL:
                state.asked_keyframe = m["a"]
                self.emit({"t": "keyframe", "j": self.id, "id": state.info.id})
        elif kind == "sr":
            state = self.tracks.get(m["id"])
            if state is not None:
                state.clock.on_sender_report(int(m["ntp"]), int(m["rtp"]), float(m["a"]), int(m.get("c", 0)))
                self._release(state, force=False)
            else:
                # An SFU worker sends a new job each track's latest report at once, straight to this socket,
                # while the track itself comes through the control process: the report can come first.
                self.early_reports.pop(m["id"], None)
                self.early_reports[m["id"]] = m
                if len(self.early_reports) > EARLY_REPORTS:
                    del self.early_reports[next(iter(self.early_reports))]
        elif kind == "track":
            self._add(m["track"])
        elif kind == "tmute":
            state = self.tracks.get(m["id"])
            if state is not None:
                if state.muted and not m.get("muted") and hasattr(state.depacketizer, "need_keyframe"):
                    state.depacketizer.need_keyframe = True  # frames were skipped: restart from a keyframe
                state.muted = bool(m.get("muted"))
        elif kind == "mute":
            (self.muted.add if m.get("muted") else self.muted.discard)(str(m.get("uid")))
        elif kind == "untrack":
            state = self.tracks.pop(m["id"], None)
            if state is not None:
                log.info("job %s: track %s removed (%d packets lost, %d frames written, %d dropped)", self.id,
                         state.info.id, state.reorder.lost, state.frames, getattr(state.depacketizer, "dropped", 0))
                self._release(state, force=True)
                self.sink.track_removed(state.info.id)

    def _add(self, track: dict[str, Any]) -> None:
        info = TrackInfo.from_dict(track)
        if info.id in self.tracks:
            return
        try:
            dep = depacketizer(info.mime)
        except ValueError:
            log.warning("job %s: cannot record %s (%s)", self.id, info.id, info.mime)
            return
        clock = TrackClock(info.clock_rate, self.t0, self.offsets, info.uid, self.peers,
                           counts_samples=info.kind == "audio")
        # A muted audio track may be a moderator's mute, which the "mute" messages follow by uid.
        muted = bool(track.get("muted")) and info.kind == "video"
        self.tracks[info.id] = TrackState(info, Reorder(), dep, clock, muted=muted)
        log.info("job %s: track %s (%s %s of %s)", self.id, info.id, info.source, info.mime, info.uid)
        self.sink.track_added(info)
        if (early := self.early_reports.pop(info.id, None)) is not None:
            self._handle(early)  # as if it came now: the track is known

    def _frame(self, state: TrackState, frame: Frame) -> None:
        state.clock.observe(frame.timestamp, frame.arrival)
        if state.waiting or not state.clock.ready(frame.arrival):
            state.waiting.append(frame)
            self._release(state, force=False)
            return
        self._deliver(state, frame)

    def _deliver(self, state: TrackState, frame: Frame) -> None:
        seconds = state.clock.seconds(frame.timestamp, frame.arrival)
        off = seconds - (frame.arrival - self.t0)
        if off > AHEAD_S or off < -BEHIND_S:
            # placed far from when it arrived: an RTP timestamp that jumped (no decoder or player follows). Ahead,
            # it stretched a track file to an hour of frozen picture and held a composite's pictures in memory;
            # behind, a track file's frames were squeezed one tick apart.
            state.misplaced += 1
            if state.misplaced == 1:
                log.warning("job %s: %s's frames are placed %+.0f s from when they arrive; left out", self.id,
                            state.info.id, off)
            return
        state.last_seconds, state.last_arrival = seconds, frame.arrival
        state.frames += 1
        if state.muted or (state.info.kind == "audio" and state.info.uid in self.muted):
            return  # a muted camera becomes a name tile within a second (composite), muted sound is left out
        self.sink.frame(state.info, frame, seconds)

    def _release(self, state: TrackState, force: bool, now: float | None = None) -> None:
        if not state.waiting:
            return
        now = state.waiting[-1].arrival if now is None else now
        if force:
            state.clock.fallback = state.clock.sr is None
        if not (force or state.clock.ready(now)):
            return
        waiting, state.waiting = state.waiting, []
        for frame in waiting:
            self._deliver(state, frame)

    def _advance(self, now: float) -> None:
        for state in self.tracks.values():  # a track that went quiet while its frames wait (muted at the start)
            self._release(state, force=False, now=now)
        live = now - self.t0
        newest = max((s.last_arrival for s in self.tracks.values()), default=-1e9)
        active = [s.last_seconds for s in self.tracks.values()
                  if s.last_seconds is not None and newest - s.last_arrival < IDLE_S]
        # A track whose frames wait for its first sender report holds the output back at their arrival.
        active += [s.waiting[0].arrival - self.t0 for s in self.tracks.values() if s.waiting]
        target = min(active) - 0.1 if active else live - MIN_DELAY
        self.sink.tick(min(live - MIN_DELAY, max(live - MAX_DELAY, target)))

    def _finish(self, stopped: float) -> list[dict[str, Any]]:
        while True:  # what arrived before the stop is written
            try:
                message, _ = self.inbox.get_nowait()
            except queue.Empty:
                break
            if message["t"] != "stop":
                self._handle(message)
        for state in self.tracks.values():
            self._release(state, force=True)
        return self.sink.finish(stopped - self.t0)
