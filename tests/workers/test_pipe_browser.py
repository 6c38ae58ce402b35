"""Chromium's simulcast camera through the pipe: the teacher's browser on one worker, aiortc students on two; the far
worker learns the browser's layer SSRCs from the pipe (the origin learned them from MID/RID) and its student decodes
the low and the high layer in turn."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.e2e.conftest import browser, open_page, publish_camera  # noqa: F401 - the fixture is shared
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size
from tests.workers.conftest import pool_of
from tests.workers.test_pipe import _worker_of


async def _size_settles(track, fits, frames: int = 150) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Decodes until a picture of a size that `fits` comes (a layer switch waits for the browser's keyframe)."""
    size = (0, 0)
    for _ in range(frames):
        size = await _frame_size(track, timeout=10)
        if fits(size):
            break
    return size


async def test_a_browsers_simulcast_camera_decoded_on_the_far_worker(workers_page_room: Classroom,
                                                                     browser: Browser) -> None:  # noqa: F811
    room = workers_page_room
    pool = pool_of(room)
    pool.capacity = 2
    page = await open_page(browser, room)
    await publish_camera(page, await room.create_room(), "video/VP8", 640, 360)
    near = await room.client(await room.token("physics-1", "s1"), name="s1")
    far = await room.client(await room.token("physics-1", "s2"), name="s2")
    (room_sid,) = list(pool.rooms)
    origin = pool.rooms[room_sid].index
    assert _worker_of(pool, near) == origin and _worker_of(pool, far) == 1 - origin
    for student in (near, far):
        width, height = await _frame_size(await student.remote_track("camera", timeout=20), timeout=20)
        assert width * 9 == height * 16, "a simulcast layer of the 640x360 camera"
    far_stats = await pool.room_stats(room_sid, 1 - origin)
    (camera,) = [t for t in far_stats["tracks"] if t["source"] == "camera"]
    assert camera["layers"] and len(camera["layers"]) >= 2, "the far worker has the browser's layers"
    track = await far.remote_track("camera")
    await far.request({"type": "set_quality", "quality": "low"}, "quality_changed")
    # Chromium sends two of the three layers of a 640x360 camera (160x90 and 320x180): low, then the best there is
    low = await _size_settles(track, lambda size: size[0] == 160)
    assert low == (160, 90), "the lowest layer on the far worker"
    await far.request({"type": "set_quality", "quality": "high"}, "quality_changed")
    top = await _size_settles(track, lambda size: size[0] == 320)
    assert top == (320, 180), "the best layer the browser sends, on the far worker"
    far_stats = await pool.room_stats(room_sid, 1 - origin)
    near_stats = await pool.room_stats(room_sid, origin)
    (far_camera,) = [t for t in far_stats["tracks"] if t["source"] == "camera"]
    (near_camera,) = [t for t in near_stats["tracks"] if t["source"] == "camera"]
    assert all(n > 0 for n in far_camera["layerPackets"][:2]), "both layers crossed the pipe"
    assert all(f <= n for f, n in zip(far_camera["layerPackets"], near_camera["layerPackets"], strict=True)), \
        "one copy of each packet, never more"
    await page.close()
