"""Chromium through a worker that is SIGKILLed: the SDK hears `reconnecting`, rejoins on its own, publishes again,
and an aiortc student sees the browser's camera again."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from playwright.async_api import Browser

from tests.e2e.conftest import browser, open_page, publish_camera  # noqa: F401 - the fixture is shared
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size
from tests.workers.conftest import pool_of


async def test_sdk_reconnects_by_itself_when_its_worker_dies(workers_page_room: Classroom,
                                                             browser: Browser) -> None:  # noqa: F811
    room = workers_page_room
    pool = pool_of(room)
    page = await open_page(browser, room)
    await publish_camera(page, await room.create_room(), "video/VP8", 640, 360)
    await page.evaluate("() => { window.states = []; window.room.addEventListener('statechange', "
                        "(e) => window.states.push(e.detail.state)); }")
    student = await room.client(await room.token("physics-1", "s1"), name="s1", backoff=(0.1, 1.0))
    width, height = await _frame_size(await student.remote_track("camera", timeout=20), timeout=20)
    assert width * 9 == height * 16  # a simulcast layer of the 640x360 camera
    holder = next(iter(pool.rooms.values()))
    old_pid = holder.pid
    os.kill(old_pid, signal.SIGKILL)
    await asyncio.wait_for(holder.down.wait(), 1.0)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = await page.evaluate("() => window.states")
        if "reconnecting" in states and states[-1] == "connected":
            break
        await asyncio.sleep(0.2)
    assert "reconnecting" in states and states[-1] == "connected", states
    camera = await student.remote_track("camera", uid="teacher", timeout=30)
    width, height = await _frame_size(camera, timeout=20)
    assert width * 9 == height * 16
    assert next(iter(pool.rooms.values())).alive  # the room lives on a live worker
    deadline = time.monotonic() + 15
    while not (holder.alive and holder.pid != old_pid):  # and the dead one was started again
        assert time.monotonic() < deadline, "the worker was not restarted"
        await asyncio.sleep(0.05)
    await page.close()
