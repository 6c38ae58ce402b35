"""Captions in the classroom page: a Chromium student, embedded in a host page, sees the teacher's spoken sentences
as captions over the teacher's video, in a searchable transcript, and as iframe postMessage events; the CC switch
is remembered per browser and a late joiner finds the recent captions."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, expect

from sfu.client import SyntheticVideoTrack
from tests.e2e.conftest import TEST_PAGE
from tests.sfu.conftest import Classroom
from tests.sfu.test_captions import SENTENCES, lesson_wav, word_error_rate
from tests.sfu.test_transcriber import SpeechTrack

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>host</title></head><body>
<script>window.got = []; addEventListener("message", (e) => window.got.push(e.data));</script>
<iframe id="class" style="width:1200px;height:760px;border:0" allow="autoplay"></iframe>
<script>document.getElementById("class").src = new URLSearchParams(location.search).get("src");</script>
</body></html>"""


@pytest.fixture
def extra_routes() -> list[tuple[str, Any]]:
    async def sdk_page(_request: web.Request) -> web.Response:
        return web.Response(text=TEST_PAGE, content_type="text/html")

    async def host(_request: web.Request) -> web.Response:
        return web.Response(text=HOST_PAGE, content_type="text/html")

    return [("/__e2e__", sdk_page), ("/__host__", host)]


async def _join(room: Classroom, uid: str) -> str:
    status, body = await room.rest("POST", "/v1/room/physics-1/join", {
        "participant": {"uid": uid, "name": uid.title(), "role": "STUDENT"},
        "customization": {"showLobby": False, "validateDomain": False}})
    assert status == 200, body
    return str(body["data"]["iframeUrl"])


async def test_a_student_sees_captions_searches_them_and_the_host_page_hears_them(
        classroom: Classroom, browser: Browser, contexts: list[BrowserContext]) -> None:
    token = await classroom.create_room("physics-1")
    status, _ = await classroom.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "physics-1"})
    assert status == 200
    teacher = await classroom.client(token, name="teacher")
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    contexts.append(ctx)
    host = await ctx.new_page()
    from urllib.parse import quote
    await host.goto(f"{classroom.base}/__host__?src={quote(await _join(classroom, 'ada'))}")
    frame = host.frame_locator("#class")
    await expect(frame.locator("#cc-toggle")).to_have_attribute("aria-pressed", "true")  # on by default
    await host.wait_for_function("window.got.some((m) => m.action === 'connected')")
    wav, _spans = lesson_wav()
    # The teacher shares a screen while speaking: the captions must stay off it.
    await teacher.publish({"microphone": SpeechTrack(wav), "screen": SyntheticVideoTrack(640, 360, fps=10)})
    await expect(frame.locator("#screen-tile")).to_be_visible(timeout=15_000)

    # The overlay shows a caption over the teacher's camera tile, at most two readable lines.
    overlay = frame.locator("#caption-text")
    await expect(overlay).to_be_visible(timeout=30_000)
    tile = await frame.locator("#camera-tile").bounding_box()
    box = await frame.locator("#captions").bounding_box()
    assert tile and box and tile["y"] <= box["y"] and box["y"] + box["height"] <= tile["y"] + tile["height"]
    assert tile["x"] <= box["x"] and box["x"] + box["width"] <= tile["x"] + tile["width"]
    screen = await frame.locator("#screen-tile").bounding_box()
    assert screen and (box["x"] >= screen["x"] + screen["width"] or box["y"] >= screen["y"] + screen["height"]), \
        (box, screen)  # not over any part of the shared screen
    style = await overlay.evaluate("e => [getComputedStyle(e).fontSize, getComputedStyle(e).lineHeight,"
                                   " getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")
    font, line = float(style[0].rstrip("px")), float(style[1].rstrip("px"))
    assert font >= 15 and style[2] == "rgb(255, 255, 255)" and style[3].startswith("rgba(0, 0, 0, 0.8")
    assert box["height"] <= 2 * line + 14, (box, line)

    # The transcript panel fills in, in order, with the spoken words; the host page gets each caption too.
    rows = frame.locator("#transcript-log li")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "ground" not in " ".join(await rows.all_inner_texts()).lower():
        await host.wait_for_timeout(300)
    lines = [t.split(": ", 1)[1] for t in await rows.all_inner_texts()]
    heard = " ".join(lines)
    assert word_error_rate(" ".join(SENTENCES), heard) < 0.2, heard
    for sentence, line in zip(SENTENCES, lines, strict=True):
        assert word_error_rate(sentence, line) < 0.4, (sentence, line)  # in order: each row is its sentence
    got = await host.evaluate("window.got.filter((m) => m.type === 'verriflo_classroom' && m.action === 'caption')")
    assert [m["message"] for m in got] == lines
    assert all(m["roomId"] == "physics-1" and m["caption"]["uid"] == "teacher" for m in got)
    starts = [m["caption"]["start"] for m in got]
    assert starts == sorted(starts) and starts[0] >= 0

    # Search: only the matching rows stay, the match marked.
    await frame.locator("#transcript-search").fill("ocean")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("mark")).to_have_text("ocean", ignore_case=True)
    await frame.locator("#transcript-search").fill("")
    await expect(rows).to_have_count(len(SENTENCES))

    # CC off is remembered by this browser: a late joiner in it starts with captions off, and sees the recent ones.
    await frame.locator("#cc-toggle").click()
    await expect(frame.locator("#cc-toggle")).to_have_attribute("aria-pressed", "false")
    await expect(frame.locator("#captions")).to_be_hidden()
    late = await ctx.new_page()
    await late.goto(await _join(classroom, "bob"))
    await expect(late.locator("#cc-toggle")).to_have_attribute("aria-pressed", "false")
    await expect(late.locator("#transcript-log li")).to_have_count(len(SENTENCES))
    assert [t.split(": ", 1)[1] for t in await late.locator("#transcript-log li").all_inner_texts()] == lines
