"""A recording of a spread room: the recorder's sink is on the room's origin worker, the publisher on the other one;
its tracks reach the recording through the pipe (a PipeProducer is a track like any to the origin's taps), with
their sender reports, so the files keep lip sync."""

from __future__ import annotations

import asyncio

from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio, decode_all, first_bright, first_loud
from tests.workers.conftest import pool_of
from tests.workers.test_pipe import _worker_of


async def test_a_far_publisher_is_recorded_in_sync_through_the_pipe(workers_studio: Studio) -> None:
    studio = workers_studio
    pool = pool_of(studio)
    pool.capacity = 1
    teacher = await studio.client(await studio.create_room(), name="teacher")  # the origin: nothing published
    (room_sid,) = list(pool.rooms)
    origin = pool.rooms[room_sid].index
    moderator = await studio.client(await studio.token("physics-1", "mod", role="MODERATOR"), name="mod")
    assert teacher.joined is not None
    clip = MarkerClip((3.0,), color=(220, 30, 30))
    await moderator.publish({"camera": ClipVideo(clip), "microphone": ClipAudio(clip)})
    assert _worker_of(pool, moderator) == 1 - origin, "the publisher is on the far worker"
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {"options": {"mode": "track"}})
    assert status == 200, body
    egress = body["data"]["egressId"]
    await asyncio.sleep(6)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200, body
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE", "EGRESS_FAILED")
    assert job["status"] == "EGRESS_COMPLETE", job
    near = await pool.room_stats(room_sid, origin)
    assert {t["uid"] for t in near["tracks"]} == {"mod"} and near["pipes"][0]["rtpReceived"] > 0, \
        "the origin holds the moderator's tracks only as the pipe's copies"
    video = decode_all(studio.file_path(egress, "camera"))
    audio = decode_all(studio.file_path(egress, "microphone"))
    assert video["codecs"] == ["h264"] and audio["codecs"] == ["opus"]
    frames = video["video_frames"]
    assert frames[-1][0] - frames[0][0] > 4.0
    tv = first_bright(frames, 0.0, (slice(None), slice(None)))
    ta = first_loud(audio["audio"], 0.0)
    assert abs(tv - ta) < 0.1, (tv, ta)
