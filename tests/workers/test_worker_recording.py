"""Recordings with media in worker processes: the worker feeds the room's packets to the recorder's sink, and a
worker's death mid-recording leaves a file that goes on after the class reconnects, with the gap in its status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import datetime
from typing import Any

from sqlalchemy import select

from control.recordings import gaps_reply
from control.store import schema as t
from control.store.webhooks import WebhookStore
from sfu.client import State
from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio, decode_all, first_bright, first_loud
from tests.recorder.test_recording_media import RED, _center, _close
from tests.workers.conftest import pool_of

MARKERS = (3.0,)


def _ms(stamp: str) -> int:
    """The API's ISO 8601 form (`...T16:05:00.123Z`) back to epoch milliseconds."""
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


async def _ready_webhook(studio: Studio, egress: str) -> dict[str, Any]:
    async with studio.svc.store.engine.connect() as conn:
        rows = await conn.execute(select(t.webhook_events.c.payload)
                                  .where(t.webhook_events.c.type == "recording_ready"))
        events = [json.loads(r[0]) for r in rows]
    [ready] = [e for e in events if e["data"]["egressId"] == egress]
    return dict(ready["data"])


async def test_track_recording_through_a_worker_keeps_sync(workers_studio: Studio) -> None:
    studio = workers_studio
    teacher = await studio.client(await studio.create_room(), name="teacher")
    clip = MarkerClip(MARKERS, color=(220, 30, 30))
    await teacher.publish({"camera": ClipVideo(clip), "microphone": ClipAudio(clip)})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {"options": {"mode": "track"}})
    assert status == 200, body
    egress = body["data"]["egressId"]
    await asyncio.sleep(6)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200, body
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE", "EGRESS_FAILED")
    assert job["status"] == "EGRESS_COMPLETE", job
    video = decode_all(studio.file_path(egress, "camera"))
    audio = decode_all(studio.file_path(egress, "microphone"))
    assert video["codecs"] == ["h264"] and audio["codecs"] == ["opus"]
    frames = video["video_frames"]
    assert frames[-1][0] - frames[0][0] > 4.0
    tv = first_bright(frames, 0.0, (slice(None), slice(None)))
    ta = first_loud(audio["audio"], 0.0)
    assert abs(tv - ta) < 0.1, (tv, ta)


async def test_a_worker_killed_mid_recording_the_recording_goes_on(workers_studio: Studio) -> None:
    studio = workers_studio
    pool = pool_of(studio)
    clock = studio.svc.clock
    await WebhookStore(studio.svc.store).create_endpoint(studio.org.id, "http://127.0.0.1:9/hook", "whsec_" + "A" * 44,
                                                         ["recording_ready"], None, clock.now_ms())
    teacher = await studio.client(await studio.create_room(), name="teacher", backoff=(0.1, 1.0))
    clip = MarkerClip((30.0,), color=RED)
    await teacher.publish({"camera": ClipVideo(clip), "microphone": ClipAudio(clip)})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {"options": {}})
    assert status == 200, body
    egress = body["data"]["egressId"]
    await studio.let_it_record(3.0)
    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings")
    assert [r["gaps"] for r in body["data"]["recordings"]] == [[]], "no gap before the death"
    holder = next(iter(pool.rooms.values()))
    killed_at = clock.now_ms()
    os.kill(holder.pid, signal.SIGKILL)
    await teacher.wait_for("reconnecting", timeout=2)
    assert await teacher.wait_state(State.CONNECTED, timeout=15) == State.CONNECTED
    reconnected_at = clock.now_ms()
    await asyncio.sleep(4.0)
    stopped_at = clock.now_ms()
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200, body
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE", "EGRESS_FAILED")
    assert job["status"] == "EGRESS_COMPLETE", job
    # the gap in the status: one span, from the death (seen within a second of the kill) to the media's return
    # (the teacher's tracks in the room again: after the reconnect began, within a few seconds of it completing)
    [gap] = job["gaps"]
    assert gap["reason"] == "sfu_worker_lost"
    start, end = _ms(gap["startedAt"]), _ms(gap["endedAt"])
    assert killed_at <= start <= killed_at + 1000, (killed_at, gap)
    assert start < end <= min(reconnected_at + 3000, stopped_at), (reconnected_at, stopped_at, gap)
    stored = await studio.svc.store.get_recording(egress)  # persisted (a restart's listing says the same)
    assert stored is not None and gaps_reply(stored.gaps) == [gap]
    assert (await _ready_webhook(studio, egress))["gaps"] == [gap]  # and told to the integrator
    # one composite file across the death: the camera before it, the teacher's name tile during the gap (the
    # recorder shows an absent camera so), the camera again after the reconnect
    frames = decode_all(studio.file_path(egress))["video_frames"]
    assert frames[-1][0] - frames[0][0] > 6.0
    red = [t for t, f in frames if _close(_center(f, 640, 360), RED)]
    gap = [t for t, f in frames if min(red) < t and not _close(_center(f, 640, 360), RED)]
    assert red and gap, "the gap shows"
    assert any(t > max(gap) for t in red), "the picture after the reconnect is in the recording"
