"""The examples of docs/api.md and docs/sdk.md, extracted and run, so the documents stay true.

- docs/api.md: every ```sh block runs in order in bash (curl against the real server, `$BASE` and `$ORG` set, the
  WHIP example's offer.sdp made by aiortc first); a ```json block after it must have the same `success` and every
  key it shows under `data`; an ```http block the same status and headers; a ```text block the same output.
- docs/sdk.md: the ```html page runs in Chromium from another origin (the server's name put in place of
  classroom.example.org) with a teacher's token, and a student must receive its camera; the ```js WHEP example runs
  in a page with a student's token and must show the teacher's picture.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from playwright.async_api import Browser

from control.web.sdkfiles import SDK_VERSION
from sfu.client import SyntheticVideoTrack, ToneAudioTrack
from sfu.peer import restrict_pc_gathering
from tests.sfu.conftest import Classroom

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE_ORIGIN = "https://classroom.example.org"


def blocks(path: Path) -> list[tuple[str, str]]:
    """(info string, code) of every fenced block, in document order."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```$", path.read_text(),
                                                                 re.M | re.S)]


def _subset(shown: object, actual: object, where: str) -> None:
    """Every key the document shows exists in the real reply (values differ: ids, times)."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), where
        for key, value in shown.items():
            assert key in actual, f"{where}.{key} is documented but not in the reply {actual}"
            _subset(value, actual[key], f"{where}.{key}")


async def test_api_examples_run_against_the_server(classroom: Classroom, tmp_path: Path) -> None:
    pc = RTCPeerConnection()  # the encoder's offer for the WHIP example
    restrict_pc_gathering(pc, classroom.svc.config.ice)
    pc.addTransceiver(SyntheticVideoTrack(320, 240, 15), direction="sendonly")
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    (tmp_path / "offer.sdp").write_text(pc.localDescription.sdp)
    env = {**os.environ, "BASE": classroom.base, "ORG": classroom.org.id}
    found = blocks(DOCS / "api.md")
    ran = 0
    for i, (info, code) in enumerate(found):
        if info != "sh":
            continue
        # One shell session across the blocks, as a reader types them: variables a block sets reach the next ones.
        keep = "".join(f"declare -p {name} >> state.sh\n" for name in re.findall(r"^([A-Z_]+)=", code, re.M))
        script = f"[ -f state.sh ] && source state.sh\n{code}\n{keep}"
        result = await asyncio.to_thread(subprocess.run, ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                                         env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (code, result.stderr)
        ran += 1
        shown_info, shown = found[i + 1] if i + 1 < len(found) else ("", "")
        out = result.stdout
        if shown_info == "json":
            expected, actual = json.loads(shown.replace("...", "")), json.loads(out)
            assert actual["success"] == expected["success"], out
            _subset(expected.get("data", {}), actual.get("data", {}), "data")
        elif shown_info == "http":
            status_line, *headers = shown.strip().splitlines()
            assert out.splitlines()[0].split()[1] == status_line.split()[1], out
            got = {line.split(":", 1)[0].lower() for line in out.split("\r\n\r\n", 1)[0].splitlines()[1:]}
            assert {h.split(":", 1)[0].lower() for h in headers} <= got, out
        elif shown_info == "text":
            assert out.strip() == shown.strip(), out
    assert ran >= 4
    await pc.close()


SAME_ORIGIN_PAGES: dict[str, str] = {}


@pytest.fixture
def extra_routes() -> list[tuple[str, Any]]:
    """Pages served by the classcast server itself: the WHEP example's response is readable there without CORS
    (from another origin only the organization's verified https domains may read it)."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=SAME_ORIGIN_PAGES[request.match_info["name"]], content_type="text/html")

    return [("/__doc__/{name}", page)]


@pytest.fixture
async def other_origin() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A second HTTP server (another port: another origin) serving the pages the test puts in `pages`."""
    pages: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.match_info["name"]], content_type="text/html")

    async def no_icon(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get("/{name}", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), pages
    await server.close()


async def test_sdk_examples_run_in_chromium(classroom: Classroom, browser: Browser,
                                            other_origin: tuple[str, dict[str, str]]) -> None:
    site, pages = other_origin
    found = dict(blocks(DOCS / "sdk.md"))
    html = found["html"]
    assert f"/sdk/classcast-{SDK_VERSION}.js" in html, "the example pins the SDK version the server serves"
    teacher_token = await classroom.create_room()
    pages["teach"] = (f"<script>window.token = {json.dumps(teacher_token)};</script>\n"
                      + html.replace(EXAMPLE_ORIGIN, classroom.base))
    errors: list[str] = []
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(site + "/teach")
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    camera = await student.remote_track("camera", "teacher", timeout=20)
    frame = await asyncio.wait_for(camera.recv(), 15)
    assert frame.width > 0 and not errors, errors

    viewer_token = await classroom.token("physics-1", "viewer")
    whep = found["js"].replace(EXAMPLE_ORIGIN, classroom.base).replace("bio-204-2025-03-02", "physics-1")
    SAME_ORIGIN_PAGES["watch"] = (f'<video id="teacher" autoplay playsinline muted></video>'
                      f"<script>window.token = {json.dumps(viewer_token)};</script>"
                      f'<script type="module">{whep}\nwindow.session = session.href;</script>')
    viewer = await browser.new_page()
    viewer.on("pageerror", lambda exc: errors.append(str(exc)))
    await viewer.goto(classroom.base + "/__doc__/watch")
    await viewer.wait_for_function("document.getElementById('teacher').videoWidth > 0", timeout=20_000)
    assert (await viewer.evaluate("window.session")).startswith(classroom.base + "/v1/whep/physics-1/")
    assert not errors, errors
    await viewer.close()
    await page.close()
