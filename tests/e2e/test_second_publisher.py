"""A teacher's page must survive another publisher arriving (a co-teacher or moderator turning on a microphone).

The defect this caught (fixed in sfu/simulcast.py munge_offer): the server's re-offer to a participant that already
publishes renumbered the header extensions it negotiated (MID 9 -> 1, abs-send-time 2 -> 3, transport-wide-cc 4 -> 5 for
Chromium's ids: RFC 8285 forbids changing them within a session) and drops the camera's simulcast lines; headless
Chromium 156's renderer crashes on that offer ("Target crashed"), so the teacher's page died.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser, BrowserContext

from sfu.client import ToneAudioTrack
from tests.e2e.test_classroom import _teacher
from tests.sfu.conftest import Classroom


async def test_the_teachers_page_survives_a_second_publisher(classroom: Classroom, browser: Browser,
                                                              contexts: list[BrowserContext]) -> None:
    teacher = await _teacher(classroom, browser, contexts)
    crashed: list[bool] = []
    teacher.on("crash", lambda _page: crashed.append(True))
    moderator = await classroom.client(await classroom.token("physics-1", "mo", "MODERATOR"), name="mo")
    await moderator.publish({"microphone": ToneAudioTrack()})
    await asyncio.sleep(3)
    assert not crashed, "the teacher's page crashed on the server's offer"
    state = await teacher.evaluate("window.classcastRoom.pc.connectionState")
    assert state == "connected"
