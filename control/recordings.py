"""Recording jobs: the control plane's side of the recorder (reference 2.6-2.9 and 6).

REST and the teacher's record button (signaling) both call `Recordings`; it checks nothing about who asks (the
callers do, through `roles.can`), and owns the job lifecycle: the database row first, then the SFU tap and the
recorder feed, then the event. Statuses: EGRESS_STARTING -> EGRESS_ACTIVE (media reached the file) ->
EGRESS_ENDING (stop asked, or the class ended) -> EGRESS_COMPLETE, or EGRESS_FAILED (the recorder failed or
died; what it wrote is kept). The recorder process is supervised here; downloads are signed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import aiohttp
import av

from control.background import stop_tasks
from control.clock import Clock, iso
from control.errors import ApiError, room_ended
from control.events import Event
from control.failover import RECORDING_NODE
from control.ids import new_id
from control.recording import subtitles
from control.recording.janitor import Janitor
from control.recording.probe import playable_seconds
from control.services import Services
from control.sinks.feed import FeedLink, FeedTap
from control.sinks.supervisor import SinkSupervisor
from control.store.records import Org, Recording, RecordingFile, Room
from control.store.store import LIVE_RECORDING_STATES, RecordingAlreadyLive
from control.validation import parse

if TYPE_CHECKING:
    from control.workers import WorkerPool
    from sfu.router import Sfu

log = logging.getLogger("classcast.recordings")

DOWNLOAD_TTL_S = 3600
CAPTIONS_LABEL = "captions"  # the recording file that is the WebVTT of its captions (control/recording/subtitles.py)
JANITOR_INTERVAL_S = 60.0
LOGO_TIMEOUT_S = 5.0
LOGO_MAX_BYTES = 5 * 1024 * 1024


def parse_options(raw: Any) -> dict[str, Any]:
    """The reference's `options` (layout, preset, showLogo) plus our `mode`, through their declared model (REST and
    the record button alike); a bad value is a clear 400 naming `options.<field>`."""
    from control.api.models import RecordingOptions

    return parse(RecordingOptions, {} if raw is None else raw, "options.").model_dump()


def expires_in_text(seconds: float) -> str:
    """The reference's human form: `"4h 23m"`."""
    minutes = max(0, int(seconds // 60))
    return f"{minutes // 60}h {minutes % 60}m"


def download_filename(started_at_ms: int, label: str) -> str:
    """`recording-YYYY-MM-DD-HH-mm-ss.mp4` (reference 2.9); track-mode files add their track's label."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(started_at_ms / 1000))
    if label == CAPTIONS_LABEL:
        return f"recording-{stamp}.vtt"  # the WebVTT subtitles of the recording, same name as its composite MP4
    return f"recording-{stamp}.mp4" if label == "composite" else f"recording-{stamp}-{label}.mp4"


async def download(url: str, limit: int, timeout_s: float) -> bytes:
    """The whole body at `url`; ValueError past `limit` bytes. Read to the end: one `content.read(n)` returns
    what has arrived so far, and a logo cut short that way was cached on disk for good."""
    body = bytearray()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session, \
            session.get(url) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                raise ValueError(f"larger than {limit} bytes")
    return bytes(body)


class DownloadSigner:
    """HMAC-signed, expiring download links; the key is derived from the server's token secret."""

    def __init__(self, secret: bytes, clock: Clock) -> None:
        self._key = hmac.new(secret, b"classcast recording downloads", hashlib.sha256).digest()
        self.clock = clock

    def signature(self, file_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{file_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, file_id: str) -> tuple[int, str]:
        expires = self.clock.now_ms() // 1000 + DOWNLOAD_TTL_S
        return expires, self.signature(file_id, expires)

    def check(self, file_id: str, expires: str, signature: str) -> None:
        # isdigit() alone took "²" and 5000 digits (int() refuses both: 500); compare_digest takes ASCII text only
        well_formed = expires.isascii() and expires.isdigit() and len(expires) <= 12 and signature.isascii()
        if not well_formed or not hmac.compare_digest(self.signature(file_id, int(expires)), signature):
            raise ApiError(403, "Invalid download signature", "INVALID_SIGNATURE")
        if int(expires) < self.clock.now_ms() // 1000:
            raise ApiError(403, "Download link expired", "LINK_EXPIRED")


class RecordingTap(FeedTap):
    """A job's feed tap that also keeps the recording's gaps: spans without media for a reason the server knows.

    `media_lost` (an optional tap call, control/workers.py) opens a gap the moment the SFU worker holding the room
    dies; the first track of the room seen again (the publisher reconnected to a live worker and its media flows to
    the recorder again) closes it; the recording's end closes a gap still open. A second loss while a gap is open
    is the same gap. `changed` is called (never awaited: taps are synchronous) so the service persists the list.
    """

    def __init__(self, link: FeedLink, job_id: str, people: dict[str, dict[str, str]], clock: Clock,
                 changed: Callable[[str], None]) -> None:
        super().__init__(link, job_id, people)
        self.clock, self.changed = clock, changed
        self.gaps: list[dict[str, Any]] = []  # [{started_at, ended_at, reason}], epoch ms, as the store keeps them

    @property
    def in_gap(self) -> bool:
        return bool(self.gaps) and self.gaps[-1]["ended_at"] is None

    def media_lost(self, room_sid: str, reason: str) -> None:
        if not self.in_gap:
            self.gaps.append({"started_at": self.clock.now_ms(), "ended_at": None, "reason": reason})
            log.warning("recording %s: media lost (%s); the file goes on and the gap is recorded", self.job_id,
                        reason)
            self.changed(self.job_id)

    def track_added(self, room_sid: str, track: dict[str, Any]) -> None:
        super().track_added(room_sid, track)
        if self.in_gap:
            self.gaps[-1]["ended_at"] = self.clock.now_ms()
            self.changed(self.job_id)


def close_gaps(gaps: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    """A gap still open when the recording ends ends with it (the media never came back)."""
    for gap in gaps:
        if gap.get("ended_at") is None:
            gap["ended_at"] = max(at, int(gap["started_at"]))
    return gaps


def gaps_reply(gaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The REST and webhook form: `[{"startedAt", "endedAt", "reason"}]` (ISO 8601, `endedAt` null while open)."""
    return [{"startedAt": iso(g["started_at"]), "endedAt": iso(g.get("ended_at")), "reason": g["reason"]}
            for g in gaps]


@dataclass
class LiveJob:
    id: str
    room: Room
    tap: RecordingTap
    files: dict[str, str] = field(default_factory=dict)  # absolute path -> file id
    done: asyncio.Event = field(default_factory=asyncio.Event)


NOTHING_RECORDED = "Nothing was recorded: nobody published audio or video while the recording ran"


class Recordings:
    def __init__(self, svc: Services, sfu: Sfu | WorkerPool, secret: bytes) -> None:
        self.svc, self.sfu = svc, sfu
        self.root = svc.config.recordings_root.resolve()  # shared by several nodes: any serves a download
        self.signer = DownloadSigner(secret, svc.clock)
        self.supervisor = SinkSupervisor("recorder", svc.config.data_dir, self._on_feed, self._on_recorder_exit)
        self.janitor = Janitor(svc.store, self.root, svc.clock, svc.config.recording_ttl_s,
                               busy=lambda: set(self.live))
        self.live: dict[str, LiveJob] = {}
        self.people: dict[str, dict[str, dict[str, str]]] = {}  # room sid -> uid -> name, role
        self._feed_events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe = svc.bus.subscribe(self._on_bus)
        self._locks: dict[str, asyncio.Lock] = {}  # per room: two starts at once make one recording and a 409
        # For /metrics: jobs finished by final status, and feed packets dropped by jobs no longer live.
        self.finished: dict[str, int] = {}
        self.feed_dropped_finished = 0

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start_service(self, background: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await self.recover()
        await self.janitor.run_once()
        self._tasks.append(asyncio.create_task(self._process_feed()))
        if background:
            self._tasks.append(asyncio.create_task(self._janitor_loop()))
            try:
                await self.supervisor.ensure()
            except (OSError, TimeoutError):
                log.exception("recorder process could not start; recordings will retry on demand")

    async def close(self) -> None:
        """Server shutdown: running jobs are finished (files closed, rows complete) before the recorder exits."""
        self._unsubscribe()
        for job in list(self.live.values()):
            await self._stop_job(job, "server_shutdown")
        waits = [job.done.wait() for job in self.live.values()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), 30)
        await self.supervisor.stop()
        await stop_tasks(*self._tasks)

    async def recover(self) -> int:
        """At start: jobs a previous run left live are finished from their files, or marked failed. With several
        nodes, a job whose room another live node hosts is that node's, recording still: left alone."""
        stale = await self.svc.store.recordings_in_states((*LIVE_RECORDING_STATES, "EGRESS_ENDING"))
        live = self.svc.live
        settled = 0
        for rec in stale:
            host = await live.placement.host(rec.room_sid) if live is not None else None
            if host is not None and host.id != live.node_id:  # type: ignore[union-attr]
                continue
            await self._settle(rec.id, failed_reason="interrupted by a server restart", keep_going=True)
            settled += 1
        return settled

    async def settle_lost(self, rec_id: str, node: str) -> bool:
        """A live job of a node that is gone (control/failover.py claimed it for this node): finished from its
        files as a restart's `recover` does, and the class is told. False when it was settled already."""
        rec = await self.svc.store.get_recording(rec_id)
        if rec is None or rec.status not in (*LIVE_RECORDING_STATES, "EGRESS_ENDING"):
            return False
        await self._settle(rec_id, failed_reason=f"interrupted: node {node} stopped answering", keep_going=True)
        room = await self.svc.store.get_room_by_sid(rec.room_sid)
        if room is not None and not room.ended:
            self._emit("recording_stopped", room, egressId=rec_id, roomId=room.room_id, reason="failed",
                       endedAt=iso(self.svc.clock.now_ms()))
        return True

    async def _janitor_loop(self) -> None:
        while True:
            await asyncio.sleep(JANITOR_INTERVAL_S)
            try:
                await self.janitor.run_once()
            except Exception:
                log.exception("janitor failed")

    # ---- start and stop -----------------------------------------------------------------------------------

    async def start(self, org: Org, room: Room, options: dict[str, Any], by: str | None = None) -> dict[str, Any]:
        async with self._locks.setdefault(room.sid, asyncio.Lock()):
            return await self._start(org, room, options, by)

    async def stop(self, room: Room, by: str | None = None) -> dict[str, Any]:
        async with self._locks.setdefault(room.sid, asyncio.Lock()):
            return await self._stop(room, by)

    async def _start(self, org: Org, room: Room, options: dict[str, Any], by: str | None) -> dict[str, Any]:
        if room.ended:
            raise room_ended()
        if await self.svc.store.live_recordings(room.sid):
            raise ApiError(409, "A recording is already running in this room", "RECORDING_ALREADY_STARTED")
        try:
            await self.supervisor.ensure()
        except (OSError, TimeoutError):
            log.exception("recorder unavailable")
            raise ApiError(503, "Recorder unavailable, try again", "RECORDER_UNAVAILABLE") from None
        now = self.svc.clock.now_ms()
        rec = Recording(id=new_id("EG_"), room_sid=room.sid, status="EGRESS_STARTING", options=options,
                        started_at=now, ended_at=None, file_path=None, size=None, duration=None, error=None)
        try:
            async with self.svc.store.atomic():
                await self.svc.store.insert_recording(rec)  # the database has the last word across nodes
                if self.svc.live is not None:  # whose recorder makes it: if this node dies, another settles it
                    await self.svc.store.set_meta(RECORDING_NODE + rec.id, self.svc.live.node_id)
                await self.svc.classroom.outbox.record("recording_started", room.org_id, {
                    "egressId": rec.id, "roomId": room.room_id, "roomSid": room.sid, "options": options,
                    "startedAt": iso(now), "startedBy": by}, room_sid=room.sid)
        except RecordingAlreadyLive:  # another node started one since the check above
            raise ApiError(409, "A recording is already running in this room", "RECORDING_ALREADY_STARTED") from None
        logo = await self._logo(org) if options["showLogo"] else None
        people = self.people.setdefault(room.sid, {})
        for p in await self.svc.store.active_participants(room.sid):
            people[p.uid] = {"name": p.name, "role": p.role}
        tap = RecordingTap(self.supervisor.link, rec.id, people, self.svc.clock, self._gaps_changed)
        job = LiveJob(rec.id, room, tap)
        job.tap.address = str(self.supervisor.socket_path)  # SFU workers send the media straight there
        self.live[rec.id] = job
        self.supervisor.link.send({
            "t": "start", "j": rec.id, "room": room.sid, "mode": options["mode"], "layout": options["layout"],
            "preset": options["preset"], "logo": logo, "dir": str(self.root / rec.id), "t0": time.monotonic()})
        for p in await self.svc.store.list_participants(room.sid):
            if p.muted:
                self.supervisor.link.send({"t": "mute", "j": rec.id, "uid": p.uid, "muted": True})
        self.sfu.add_tap(room.sid, job.tap)
        data = {"egressId": rec.id, "roomId": room.room_id, "status": rec.status, "startedAt": iso(now)}
        self._emit("recording_started", room, **data, options=options, startedBy=by)
        return data

    async def _stop(self, room: Room, by: str | None) -> dict[str, Any]:
        if room.ended:
            raise room_ended()
        live = await self.svc.store.live_recordings(room.sid)
        if not live:
            raise ApiError(409, "No recording is running in this room", "RECORDING_NOT_STARTED")
        now = self.svc.clock.now_ms()
        for rec in live:
            await self.svc.store.update_recording(rec.id, status="EGRESS_ENDING", ended_at=now)
            job = self.live.get(rec.id)
            if job is not None:
                await self._stop_job(job, "stopped", by)
            else:  # nobody is writing it any more (the recorder died meanwhile)
                await self._settle(rec.id, failed_reason="the recorder was not running it")
        rec = live[0]
        return {"egressId": rec.id, "roomId": room.room_id, "status": "EGRESS_ENDING", "endedAt": iso(now)}

    async def _stop_job(self, job: LiveJob, reason: str, by: str | None = None) -> None:
        self.sfu.remove_tap(job.room.sid, job.tap)
        if job.tap.dropped:
            log.warning("recording %s: %d packets dropped because the recorder could not keep up", job.id,
                        job.tap.dropped)
        if not self.supervisor.link.send({"t": "stop", "j": job.id}):
            await self._settle(job.id, failed_reason="the recorder connection was lost")
        self._emit("recording_stopped", job.room, egressId=job.id, roomId=job.room.room_id, reason=reason,
                   endedAt=iso(self.svc.clock.now_ms()), stoppedBy=by)

    async def wait_finished(self, rec_id: str, timeout: float = 30) -> Recording:
        job = self.live.get(rec_id)
        if job is not None:
            await asyncio.wait_for(job.done.wait(), timeout)
        rec = await self.svc.store.get_recording(rec_id)
        assert rec is not None
        return rec

    # ---- events -------------------------------------------------------------------------------------------

    def _emit(self, type_: str, room: Room, **data: Any) -> None:
        self.svc.bus.publish(Event(type=type_, org_id=room.org_id, room_id=room.room_id, room_sid=room.sid,
                                   data={k: v for k, v in data.items() if v is not None}))

    def _on_bus(self, event: Event) -> None:
        if event.type in ("participant_joined", "participant_left"):
            # Names and roles of who is in a room being recorded (for the tiles): kept only while a recording is
            # live, and only for who is present, so a long class with many comings and goings holds no list of
            # everyone who ever joined (issue 13's soak).
            p = event.data.get("participant") or {}
            people = self.people.get(event.room_sid)
            if "uid" in p and people is not None:
                if event.type == "participant_left":
                    people.pop(p["uid"], None)
                else:
                    people[p["uid"]] = {"name": p.get("name", ""), "role": p.get("role", "")}
        elif event.type in ("participant_muted", "participant_unmuted"):
            # A moderator's mute stops forwarding that microphone; the recording follows what participants hear.
            uid = (event.data.get("participant") or {}).get("uid")
            for job in self.live.values():
                if job.room.sid == event.room_sid and uid:
                    self.supervisor.link.send({"t": "mute", "j": job.id, "uid": uid,
                                               "muted": event.type == "participant_muted"})
        elif event.type == "class_ended":
            jobs = [j for j in self.live.values() if j.room.sid == event.room_sid]
            for job in jobs:
                self._tasks.append(asyncio.create_task(self._stop_job(job, "class_ended")))
            self.people.pop(event.room_sid, None)
            self._locks.pop(event.room_sid, None)

    def _on_feed(self, message: dict[str, Any]) -> None:
        self._feed_events.put_nowait(message)

    def _gaps_changed(self, rec_id: str) -> None:
        """A gap opened or closed (a tap call, synchronous): written in order with the recorder's events."""
        self._feed_events.put_nowait({"t": "gaps", "j": rec_id})

    async def _process_feed(self) -> None:
        while True:
            message = await self._feed_events.get()
            try:
                await self._feed_event(message)
            except Exception:
                log.exception("recorder event %s failed", message.get("t"))

    async def _feed_event(self, m: dict[str, Any]) -> None:
        kind, rec_id = m.get("t"), str(m.get("j"))
        job = self.live.get(rec_id)
        store = self.svc.store
        if kind == "file" and job is not None:
            rel = self._relative(Path(str(m.get("path"))))
            if rel is None:
                return
            file_id = new_id("RF_")
            job.files[str(self.root / rel)] = file_id
            await store.add_recording_file(RecordingFile(id=file_id, recording_id=rec_id, path=rel,
                                                         label=str(m.get("label", "composite")), size=None,
                                                         duration=None, created_at=self.svc.clock.now_ms()))
        elif kind == "gaps" and job is not None:
            await store.update_recording(rec_id, gaps=json.dumps(job.tap.gaps))
        elif kind == "keyframe" and job is not None:
            await self.sfu.request_keyframe(job.room.sid, str(m.get("id")))
        elif kind == "active":
            rec = await store.get_recording(rec_id)
            if rec is not None and rec.status == "EGRESS_STARTING":
                await store.update_recording(rec_id, status="EGRESS_ACTIVE")
        elif kind == "done":
            for f in m.get("files") or []:
                file_id = job.files.get(str(f.get("path"))) if job is not None else None
                if file_id is not None:
                    await store.update_recording_file(file_id, size=int(f.get("size") or 0),
                                                      duration=float(f.get("duration") or 0))
            await self._settle(rec_id)
        elif kind == "failed":
            await self._settle(rec_id, failed_reason=str(m.get("error") or "recording failed"))

    async def _on_recorder_exit(self, code: int | None) -> None:
        """The recorder died (SIGKILL, crash): its jobs fail, and every byte it wrote is kept."""
        for job in list(self.live.values()):
            self.sfu.remove_tap(job.room.sid, job.tap)
            await self._settle(job.id, failed_reason=f"recorder process exited ({code})")
            self._emit("recording_stopped", job.room, egressId=job.id, roomId=job.room.room_id, reason="failed",
                       endedAt=iso(self.svc.clock.now_ms()))

    async def _settle(self, rec_id: str, failed_reason: str | None = None, keep_going: bool = False) -> None:
        """Final status from what is on disk: sizes and durations of every file, complete or failed."""
        job = self.live.pop(rec_id, None)
        if job is not None:
            self.feed_dropped_finished += job.tap.dropped
        rec = await self.svc.store.get_recording(rec_id)
        if rec is None:
            return
        total, longest = 0, 0.0
        loop = asyncio.get_running_loop()
        files = []  # what is kept: the files a recording_ready webhook links to
        for f in await self.svc.store.recording_files([rec_id]):
            path = self.root / f.path
            if f.label == CAPTIONS_LABEL:  # settled again (a restart's recovery): written anew below
                path.unlink(missing_ok=True)
                await self.svc.store.delete_recording_file(f.id)
                continue
            size = path.stat().st_size if path.is_file() else 0
            duration = f.duration
            if duration is None or failed_reason is not None:
                duration = await loop.run_in_executor(None, playable_seconds, path) if size else 0.0
            if not size or not duration:
                # Nothing playable (the recorder removed an empty file, or a crash left a header only): never
                # offered for download as a 0-second file.
                path.unlink(missing_ok=True)
                await self.svc.store.delete_recording_file(f.id)
                continue
            await self.svc.store.update_recording_file(f.id, size=size, duration=duration)
            f.size, f.duration = size, duration
            files.append(f)
            total, longest = total + size, max(longest, duration)
        if files:
            captions = await self._subtitles(rec, files)
            if captions is not None:
                files.append(captions)
            total = sum(f.size or 0 for f in files if f.label != CAPTIONS_LABEL)  # the composite grew a track
        if not files and failed_reason is None:
            failed_reason = NOTHING_RECORDED
        ended_at = rec.ended_at or self.svc.clock.now_ms()
        rec.gaps = close_gaps(job.tap.gaps if job is not None else rec.gaps, ended_at)
        if keep_going and failed_reason is not None and longest > 0:
            status = "EGRESS_COMPLETE"  # a restart: the recorder closed the files it had when the server went
        else:
            status = "EGRESS_FAILED" if failed_reason is not None else "EGRESS_COMPLETE"
        async with self.svc.store.atomic():
            await self.svc.store.update_recording(
                rec_id, status=status, ended_at=ended_at, file_path=rec_id, size=total, duration=longest,
                error=failed_reason, gaps=json.dumps(rec.gaps))
            await self._webhook_settled(rec, status, files, failed_reason)
            await self.svc.store.delete_meta([RECORDING_NODE + rec_id])
        self.finished[status] = self.finished.get(status, 0) + 1
        if job is not None:
            job.done.set()

    async def _subtitles(self, rec: Recording, files: list[RecordingFile]) -> RecordingFile | None:
        """The live captions of the recording's span: a `mov_text` track in the composite MP4 and a WebVTT file
        next to the MP4s (its own download). Nothing when the room had no transcript; a failure is logged and
        the recording stays as it was."""
        tutor = self.svc.tutor
        if tutor is None:
            return None
        try:
            end = rec.ended_at or self.svc.clock.now_ms()
            segments = [s for s in await tutor.db.segments(rec.room_sid, since=rec.started_at)
                        if s["started_at"] < end]
            if not segments:
                return None
            names = {}
            for uid in {s["uid"] for s in segments}:
                p = await self.svc.store.get_participant(rec.room_sid, uid)
                names[uid] = p.name if p else uid
            cues = subtitles.cues_for(segments, names, rec.started_at, end)
            if not cues:
                return None
            loop = asyncio.get_running_loop()
            for f in files:
                if f.label == "composite":
                    try:
                        await loop.run_in_executor(None, subtitles.mux_mov_text, self.root / f.path, cues)
                        f.size = (self.root / f.path).stat().st_size
                        await self.svc.store.update_recording_file(f.id, size=f.size)
                    except (av.FFmpegError, OSError, ValueError):
                        log.exception("could not add the subtitle track to %s", f.path)
            rel = f"{rec.id}/captions.vtt"
            (self.root / rec.id).mkdir(parents=True, exist_ok=True)
            size = await loop.run_in_executor(None, subtitles.write_webvtt, self.root / rel, cues)
            vtt = RecordingFile(id=new_id("RF_"), recording_id=rec.id, path=rel, label=CAPTIONS_LABEL, size=size,
                                duration=None, created_at=self.svc.clock.now_ms())
            await self.svc.store.add_recording_file(vtt)
            return vtt
        except Exception:
            log.exception("captions for recording %s failed", rec.id)
            return None

    async def _webhook_settled(self, rec: Recording, status: str, files: list[RecordingFile],
                               failed_reason: str | None) -> None:
        """recording_ready with a signed link per file (valid DOWNLOAD_TTL_S; the downloads endpoint signs fresh
        ones later), or recording_failed with the reason and whatever was kept."""
        room = await self.svc.store.get_room_by_sid(rec.room_sid)
        if room is None:
            return
        listed = []
        for f in files:
            if not f.size:
                continue
            expires, sig = self.signer.sign(f.id)
            listed.append({"filename": download_filename(rec.started_at, f.label), "size": f.size,
                           "duration": f.duration,
                           "downloadUrl": f"{self.svc.config.base_url}/recordings/{f.id}?expires={expires}&sig={sig}",
                           "linkExpiresAt": iso(expires * 1000)})
        data: dict[str, Any] = {"egressId": rec.id, "roomId": room.room_id, "roomSid": room.sid, "status": status,
                                "startedAt": iso(rec.started_at), "files": listed, "gaps": gaps_reply(rec.gaps)}
        if failed_reason is not None and status == "EGRESS_FAILED":
            data["error"] = failed_reason
        await self.svc.classroom.outbox.record("recording_failed" if status == "EGRESS_FAILED" else "recording_ready",
                                               room.org_id, data, room_sid=room.sid)

    def _relative(self, path: Path) -> str | None:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            log.error("recorder wrote outside the recordings folder: %s", path)
            return None
        return str(resolved.relative_to(self.root))

    async def _logo(self, org: Org) -> str | None:
        """A local file for the org's logo: file:// URLs and data-dir paths as they are, http(s) fetched once.

        Any failure is a warning and a recording without a watermark, never a failed recording.
        """
        url = org.logo_url
        if not url:
            return None
        parsed = urlparse(url)
        data_dir = self.svc.config.data_dir.resolve()
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
        elif parsed.scheme in ("http", "https"):
            path = data_dir / "logos" / f"{org.id}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
            if not path.is_file():
                try:
                    body = await download(url, LOGO_MAX_BYTES, LOGO_TIMEOUT_S)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(body)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    log.warning("logo %s could not be fetched, recording without watermark: %s", url, exc)
                    return None
        else:
            path = (data_dir / url).resolve()
            if not path.is_relative_to(data_dir):
                log.warning("logo path %s is outside the data dir; recording without watermark", url)
                return None
        if not path.is_file():
            log.warning("logo %s not found; recording without watermark", url)
            return None
        return str(path)

    # ---- listings, downloads, deletion ---------------------------------------------------------------------

    def _expires_in(self, room: Room) -> float:
        ttl = self.svc.config.recording_ttl_s
        if room.ended_at is None:
            return float(ttl)
        return max(0.0, (room.ended_at + ttl * 1000 - self.svc.clock.now_ms()) / 1000)

    async def listing(self, room: Room) -> dict[str, Any]:
        recs = await self.svc.store.room_recordings(room.sid)
        files = await self.svc.store.recording_files([r.id for r in recs])
        out = []
        for r in recs:
            mine = [f for f in files if f.recording_id == r.id]
            job = self.live.get(r.id)
            gaps = job.tap.gaps if job is not None else r.gaps  # a live job's: as current as the tap
            out.append({
                "egressId": r.id, "roomId": room.room_id, "status": r.status, "options": r.options,
                "startedAt": iso(r.started_at), "endedAt": iso(r.ended_at), "size": r.size, "duration": r.duration,
                "error": r.error, "deletedAt": iso(r.deleted_at),
                "files": [] if r.deleted_at else [
                    {"filename": download_filename(r.started_at, f.label), "size": f.size, "duration": f.duration}
                    for f in mine],
                "gaps": gaps_reply(gaps),
            })
        return {"roomId": room.room_id, "recordings": out}

    async def downloads(self, room: Room) -> dict[str, Any]:
        recs = [r for r in await self.svc.store.room_recordings(room.sid)
                if r.deleted_at is None and r.status in ("EGRESS_COMPLETE", "EGRESS_FAILED")]
        by_id = {r.id: r for r in recs}
        files = []
        for f in await self.svc.store.recording_files(list(by_id)):
            if not f.size:
                continue
            expires, sig = self.signer.sign(f.id)
            files.append({
                "filename": download_filename(by_id[f.recording_id].started_at, f.label),
                "downloadUrl": f"{self.svc.config.base_url}/recordings/{f.id}?expires={expires}&sig={sig}",
                "size": f.size, "duration": f.duration, "egressId": f.recording_id,
            })
        return {"roomId": room.room_id, "files": files, "expiresIn": expires_in_text(self._expires_in(room))}

    async def file_for_download(self, file_id: str, expires: str, signature: str) -> tuple[Path, str]:
        """The file behind a signed link: 403 for a bad or expired signature, 404 when gone; never outside root."""
        self.signer.check(file_id, expires, signature)
        f = await self.svc.store.get_recording_file(file_id)
        rec = await self.svc.store.get_recording(f.recording_id) if f is not None else None
        if f is None or rec is None or rec.deleted_at is not None:
            raise ApiError(404, "Recording not found or expired", "RECORDING_NOT_FOUND")
        path = (self.root / f.path).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise ApiError(404, "Recording not found or expired", "RECORDING_NOT_FOUND")
        return path, download_filename(rec.started_at, f.label)

    async def delete(self, pairs: list[tuple[Recording, Room]]) -> list[str]:
        """Deletes finished recordings (files and rows); a running one is a 409 and nothing is deleted."""
        running = [r.id for r, _ in pairs if r.status in (*LIVE_RECORDING_STATES, "EGRESS_ENDING")]
        if running:
            raise ApiError(409, f"Recording {running[0]} is still running; stop it first", "RECORDING_RUNNING")
        deleted = []
        for rec, _room in pairs:
            for f in await self.svc.store.recording_files([rec.id]):
                path = (self.root / f.path).resolve()
                if path.is_relative_to(self.root):
                    path.unlink(missing_ok=True)
            job_dir = (self.root / rec.id).resolve()
            with contextlib.suppress(OSError):
                if job_dir.parent == self.root:
                    job_dir.rmdir()
            await self.svc.store.delete_recording(rec.id)
            deleted.append(rec.id)
        return deleted
