"""The browser follows too (issue 18 requirement 3): a student opens the classroom page (`iframeUrl`) of a node that
does not host the class; the page's SDK is redirected to the host and plays the teacher's camera. Real nodes,
headless Chromium (tests/e2e/conftest.py's browser)."""

from __future__ import annotations

from playwright.async_api import Browser

from sfu.client import Client, SyntheticVideoTrack
from tests.cluster.conftest import Cluster, plays_320_wide
from tests.e2e.conftest import browser  # noqa: F401 - the fixture is shared


async def test_the_classroom_page_on_another_node_follows_the_redirect(cluster: Cluster, browser: Browser  # noqa: F811
                                                                        ) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    room = await cluster.ok(b, "POST", "/v1/room/create", {
        "roomId": "art", "title": "Art", "participant": {"uid": "t1", "name": "Teacher", "role": "TEACHER"}})
    teacher = Client(b.base, room["token"], name="teacher")  # the class is placed on B
    try:
        await teacher.connect()
        await teacher.publish({"camera": SyntheticVideoTrack(320, 240, 15)})
        joined = await cluster.ok(a, "POST", "/v1/room/art/join", {
            "participant": {"uid": "s1", "name": "Student", "role": "STUDENT"},
            "customization": {"showLobby": False}})
        assert joined["iframeUrl"].startswith(a.base + "/iframe/live?")
        ctx = await browser.new_context(bypass_csp=False)
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        response = await page.goto(joined["iframeUrl"])
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert f"connect-src 'self' {b.base.replace('http', 'ws')}" in csp  # the other node's socket is allowed
        # bypass_csp is off (the page's own policy applies), so polling uses the page's element handles.
        await page.wait_for_selector("video", state="attached", timeout=20_000)
        assert await plays_320_wide(page), errors
        assert not [e for e in errors if "Content Security Policy" in e], errors
        await ctx.close()
    finally:
        await teacher.close()
