"""The classroom page behind iframeUrl, in Chromium: a teacher and two students in separate browser contexts."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import FLAGS  # noqa: F401 - same browser flags
from tests.sfu.conftest import Classroom

PARENT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>host</title></head><body>
<iframe id="classroom" allow="camera; microphone; fullscreen" width="1000" height="640"></iframe>
<script src="/__parent__.js"></script></body></html>"""
PARENT_JS = """window.events = [];
window.addEventListener('message', (e) => { window.events.push(e.data); });
document.getElementById('classroom').src = decodeURIComponent(location.hash.slice(1));"""


@pytest.fixture
def extra_routes() -> list[tuple[str, object]]:
    async def parent(_request: web.Request) -> web.Response:
        return web.Response(text=PARENT_PAGE, content_type="text/html")

    async def parent_js(_request: web.Request) -> web.Response:
        return web.Response(text=PARENT_JS, content_type="application/javascript")

    return [("/__parent__", parent), ("/__parent__.js", parent_js)]


async def _open(browser: Browser, contexts: list[BrowserContext], url: str, width: int = 1280,
                height: int = 800) -> Page:
    # bypass_csp: Playwright's own polling evaluates strings, which the page's CSP (checked below) forbids.
    ctx = await browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
    contexts.append(ctx)
    page = await ctx.new_page()
    await page.goto(url)
    return page


async def _join(room: Classroom, uid: str, role: str = "STUDENT", **customization: object) -> str:
    status, body = await room.rest("POST", "/v1/room/physics-1/join", {
        "participant": {"uid": uid, "name": uid.title(), "role": role},
        "customization": {"showLobby": False, **customization}})
    assert status == 200, body
    return body["data"]["iframeUrl"]


async def _teacher(room: Classroom, browser: Browser, contexts: list[BrowserContext]) -> Page:
    status, body = await room.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics — Optics",
        "participant": {"uid": "teacher", "name": "Marie", "role": "TEACHER"},
        "customization": {"showLobby": False}})
    assert status == 200, body
    page = await _open(browser, contexts, body["data"]["iframeUrl"])
    await page.wait_for_function("window.classcastRoom && Object.keys(window.classcastRoom.published).length === 2")
    return page


async def _playing(page: Page, video_id: str) -> None:
    """The element shows video: it has a size and its time advances."""
    await page.wait_for_function(f"document.getElementById('{video_id}').videoWidth > 0", timeout=15000)
    first = await page.evaluate(f"document.getElementById('{video_id}').currentTime")
    await page.wait_for_function(f"document.getElementById('{video_id}').currentTime > {first} + 0.3", timeout=10000)


async def test_students_see_the_teacher_and_interact(classroom: Classroom, browser: Browser,
                                                    contexts: list[BrowserContext]) -> None:
    teacher = await _teacher(classroom, browser, contexts)
    students = [await _open(browser, contexts, await _join(classroom, uid)) for uid in ("ada", "bob")]
    for student in students:
        await _playing(student, "camera-video")
    # Raise hand: it shows in the teacher's queue.
    await students[0].get_by_role("button", name="Raise hand").click()
    await expect(teacher.locator("#hand-queue li[data-uid='ada']")).to_be_visible()
    # A poll, answered, with results for the teacher.
    await teacher.fill("#poll-question", "Is light a wave?")
    await teacher.fill("#poll-options", "Yes\nNo\nBoth")
    await teacher.click("#poll-create")
    option = students[1].get_by_role("button", name="Both")
    await expect(option).to_be_visible()
    await option.click()
    await expect(teacher.locator(".poll .result[data-option='2'] b")).to_have_text("1")
    # Chat reaches everyone.
    await students[0].fill("#chat-input", "Hello from Ada")
    await students[0].click("#chat-send")
    await expect(teacher.locator("#chat-log")).to_contain_text("Hello from Ada")
    # The AI tutor panel streams an answer, authenticated with the page's participant token.
    await students[1].fill("#tutor-input", "What is refraction?")
    await students[1].click("#tutor-ask")
    await expect(students[1].locator("#tutor-log .a[data-done='true']")).not_to_be_empty(timeout=15000)
    # Screen share appears large and disappears (a camera track stands in for the captured screen).
    await teacher.evaluate("""async () => {
      const s = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
      await window.classcastRoom.publish({screen: s.getVideoTracks()[0]});
    }""")
    await _playing(students[0], "screen-video")
    await expect(students[0].locator("#stage")).to_have_class("stage sharing")
    await teacher.evaluate("window.classcastRoom.unpublish('screen')")
    await expect(students[0].locator("#screen-tile")).to_be_hidden()
    # A phone-sized student page plays too (docs/images/ come from tests/e2e/screenshots.py).
    phone = await _open(browser, contexts, await _join(classroom, "phone"), width=360, height=740)
    await _playing(phone, "camera-video")
    # Kick: that student sees the kicked screen.
    await teacher.click("#kick-bob")
    await expect(students[1].locator("#terminal[data-state='kicked']")).to_be_visible()
    # End class: everyone sees the ended screen.
    await teacher.click("#end-class")
    for page in (teacher, students[0], phone):
        await expect(page.locator("#terminal[data-state='ended']")).to_be_visible()


async def test_embedding_page_gets_events_in_order(classroom: Classroom, browser: Browser,
                                                   contexts: list[BrowserContext]) -> None:
    teacher = await _teacher(classroom, browser, contexts)
    url = await _join(classroom, "ada")
    host = await _open(browser, contexts, f"{classroom.base}/__parent__#{url}")
    frame = host.frame_locator("#classroom")
    await expect(frame.locator("#camera-video")).to_be_visible()
    await host.wait_for_function("window.events.some((e) => e.action === 'connected')")
    await _join(classroom, "bob")
    bob = await _open(browser, contexts, await _join(classroom, "bob"))
    await host.wait_for_function("window.events.some((e) => e.action === 'participant_joined')")
    # The parent's commands: send a chat message through the iframe.
    await host.evaluate("document.getElementById('classroom').contentWindow.postMessage("
                        "{type: 'verriflo_send_chat_message', data: {message: 'from the host page'}}, '*')")
    await expect(bob.locator("#chat-log")).to_contain_text("from the host page")
    await teacher.click("#end-class")
    await host.wait_for_function("window.events.some((e) => e.action === 'class_ended')")
    await host.evaluate("document.getElementById('classroom').contentWindow.postMessage({type: 'noop'}, '*')")
    await frame.locator("#close").click()
    await host.wait_for_function("window.events.some((e) => e.action === 'close')")
    events = await host.evaluate("window.events")
    actions = [e["action"] for e in events if e.get("type") == "verriflo_classroom"]
    assert all(e["roomId"] == "physics-1" for e in events if e.get("type") == "verriflo_classroom")
    assert actions.index("connected") < actions.index("participant_joined") < actions.index("class_ended") \
        < actions.index("close")


async def test_invalid_token_page_and_csp(classroom: Classroom, browser: Browser,
                                          contexts: list[BrowserContext]) -> None:
    page = await _open(browser, contexts, f"{classroom.base}/iframe/live?token=nonsense")
    await expect(page.locator("h1")).to_have_text("Cannot open this classroom")
    await classroom.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    url = await _join(classroom, "ada")
    page = await _open(browser, contexts, url)
    response = await page.goto(url)
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp and "unsafe-inline" not in csp
    html = await response.text()
    assert "<script>" not in html and classroom.org.id not in html, "no inline script, no organization id"
    await asyncio.sleep(0)


async def test_lobby_customization_flags_and_roles(classroom: Classroom, browser: Browser,
                                                   contexts: list[BrowserContext]) -> None:
    await classroom.svc.store.set_branding(classroom.org.id, logo_url=f"{classroom.base}/__logo__.png",
                                           primary_color="#aa0055", accent_color="#00aa55")
    await classroom.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics", "participant": {"uid": "t", "name": "T", "role": "TEACHER"},
        "customization": {"theme": "dark", "needChat": False}})
    # The lobby checks camera and microphone before joining.
    status, body = await classroom.rest("POST", "/v1/room/physics-1/join", {
        "participant": {"uid": "mod", "name": "Mo", "role": "MODERATOR"}, "customization": {"showLobby": True}})
    moderator = await _open(browser, contexts, body["data"]["iframeUrl"])
    await expect(moderator.locator("#lobby-status")).to_have_text("Camera and microphone are working.")
    await moderator.wait_for_function("document.getElementById('lobby-video').videoWidth > 0")
    await moderator.click("#join")
    await moderator.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
    # The organization's branding: its logo in the header and its colors.
    await expect(moderator.locator(".header img.logo")).to_have_attribute("src", f"{classroom.base}/__logo__.png")
    assert await moderator.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--primary').trim()") == "#aa0055"
    # Room-level flags apply; moderators may manage but neither record nor end the class.
    assert await moderator.evaluate("document.documentElement.dataset.theme") == "dark"
    await expect(moderator.locator("#chat")).to_have_count(0)
    await expect(moderator.locator("#hand-queue")).to_have_count(1)
    await expect(moderator.locator("#record-toggle")).to_be_hidden()  # a stop button only while recording
    await expect(moderator.locator("#end-class")).to_have_count(0)
    await expect(moderator.locator("#screen-toggle")).to_have_count(1)
    # Per-participant flags: no header, no control bar, no screen share, no hand raising.
    student = await _open(browser, contexts, await _join(
        classroom, "ada", showHeader=False, needControlbar=False, allowHandRaise=False))
    await student.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
    await expect(student.locator(".header")).to_have_count(0)
    await expect(student.locator("#controls")).to_have_count(0)
    teacher_status, teacher_body = await classroom.rest("POST", "/v1/room/physics-1/join", {
        "participant": {"uid": "t", "name": "T", "role": "TEACHER"},
        "customization": {"showLobby": False, "allowRecording": False, "allowScreenShare": False}})
    teacher = await _open(browser, contexts, teacher_body["data"]["iframeUrl"])
    await teacher.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
    await expect(teacher.locator("#end-class")).to_have_count(1)
    await expect(teacher.locator("#record-toggle")).to_have_count(0)
    await expect(teacher.locator("#screen-toggle")).to_have_count(0)
