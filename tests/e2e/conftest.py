"""Headless Chromium (Debian's package, driven by Playwright) with a fake camera, against the real server.

The test page is served by the server under test itself, so the SDK at /sdk/classcast.js and the WebSocket are
same-origin, 127.0.0.1 is a secure context for getUserMedia, and Chrome's local-network checks see a loopback
page talking to loopback (a page fulfilled by Playwright has no address and its WebSocket is refused).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.sfu.conftest import Classroom, classroom  # noqa: F401 - the fixture is shared

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new", "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
TEST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>e2e</title></head><body>
<script type="module">import * as sdk from "/sdk/classcast.js"; window.sdk = sdk; window.sdkLoaded = true;</script>
</body></html>"""


@pytest.fixture
def extra_routes() -> list[tuple[str, Any]]:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=TEST_PAGE, content_type="text/html")

    return [("/__e2e__", page)]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Playwright gives every launch a fresh, empty profile directory (the --user-data-dir DESIGN.md asks for)."""
    assert shutil.which(CHROMIUM), "make test installs Debian's chromium"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, ignore_default_args=["--headless"])
        yield b
        await b.close()


async def open_page(browser: Browser, room: Classroom, console: list[str] | None = None) -> Page:
    page = await browser.new_page()
    if console is not None:
        page.on("console", lambda msg: console.append(msg.text))
    await page.goto(room.base + "/__e2e__")
    await page.wait_for_function("window.sdkLoaded === true")
    return page


PUBLISH_JS = """async ([token, codec, width, height]) => {
  const room = new window.sdk.Room();
  window.room = room;
  await room.connect(token);
  const stream = await navigator.mediaDevices.getUserMedia({video: {width, height, frameRate: 15}});
  const tracks = await room.publish({camera: stream.getVideoTracks()[0]}, {videoCodec: codec});
  return tracks;
}"""

LAYER_STATS_JS = """async () => {
  const stats = await window.room.pc.getStats();
  const out = {};
  stats.forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video') out[s.rid || '-'] =
    {frameWidth: s.frameWidth, frameHeight: s.frameHeight, active: s.active, bytesSent: s.bytesSent,
     limitation: s.qualityLimitationReason, encoder: s.encoderImplementation}; });
  const pair = [...stats.values()].find((s) => s.type === 'candidate-pair' && s.nominated);
  out.available = pair ? pair.availableOutgoingBitrate : null;
  return out;
}"""


async def publish_camera(page: Page, token: str, codec: str | None, width: int = 1280,
                         height: int = 720) -> Any:
    return await page.evaluate(PUBLISH_JS, [token, codec, width, height])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps each phase's report on the test item, so fixtures can save screenshots when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
async def contexts(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for i, ctx in enumerate(made):
            for j, page in enumerate(ctx.pages):
                await page.screenshot(path=f"/tmp/classcast-failure-{request.node.name}-{i}-{j}.png")
                print(f"screenshot: /tmp/classcast-failure-{request.node.name}-{i}-{j}.png")
    for ctx in made:
        await ctx.close()
