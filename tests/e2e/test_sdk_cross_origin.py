"""An integrator's page on its own origin imports the SDK from the classcast server and joins a class.

The page is served by a second HTTP server on another 127.0.0.1 port, so the module script is a cross-origin CORS
fetch (it fails without `Access-Control-Allow-Origin`), and the WebSocket and media go to the classcast server as
on a real integrator's site. A teacher publishes a synthetic camera with the Python client; the page must receive
its frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser

from control.web.sdkfiles import SDK_VERSION
from sfu.client import SyntheticVideoTrack
from tests.sfu.conftest import Classroom

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>integrator</title></head><body>
<video id="v" autoplay playsinline muted></video>
<script type="module">
  import { Room, EVENT, STATE, SERVER_EVENT, VERSION } from "{{base}}/sdk/classcast-{{version}}.js";
  window.sdkReady = { VERSION, STATE, EVENT, SERVER_EVENT };
  window.join = async (token) => {
    const room = new Room({ baseUrl: "{{base}}" });
    window.room = room;
    window.states = [];
    room.addEventListener(EVENT.STATECHANGE, (e) => window.states.push(e.detail.state));
    room.addEventListener(EVENT.TRACK_SUBSCRIBED, (e) => {
      if (e.detail.source === "camera") document.getElementById("v").srcObject = e.detail.stream;
    });
    const joined = await room.connect(token);
    return { roomId: joined.room.roomId, uid: joined.participant.uid, state: room.state };
  };
</script></body></html>"""


@pytest.fixture
async def integrator_site(classroom: Classroom) -> AsyncIterator[str]:
    async def page(_request: web.Request) -> web.Response:
        html = PAGE.replace("{{base}}", classroom.base).replace("{{version}}", SDK_VERSION)
        return web.Response(text=html, content_type="text/html")

    async def no_icon(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/favicon.ico", no_icon)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/"))
    await server.close()


async def test_a_page_on_another_origin_loads_the_sdk_and_joins(classroom: Classroom, browser: Browser,
                                                                 integrator_site: str) -> None:
    assert not integrator_site.startswith(classroom.base)  # another port: another origin
    teacher_token = await classroom.create_room()
    teacher = await classroom.client(teacher_token, name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240, 15)})
    student_token = await classroom.token("physics-1", "student-7")

    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(integrator_site)
    await page.wait_for_function("window.sdkReady !== undefined", timeout=10_000)
    assert await page.evaluate("window.location.origin") != classroom.base
    assert await page.evaluate("window.sdkReady.VERSION") == SDK_VERSION
    joined = await page.evaluate("(token) => window.join(token)", student_token)
    assert joined == {"roomId": "physics-1", "uid": "student-7", "state": "connected"}
    await page.wait_for_function(
        "document.getElementById('v').videoWidth === 320 && document.getElementById('v').currentTime > 0.2",
        timeout=20_000)
    assert await page.evaluate("window.states") == ["connecting", "connected"]
    assert not errors, errors
    await page.close()
