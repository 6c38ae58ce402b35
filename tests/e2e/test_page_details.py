"""The classroom page's smaller promises, each as a user would notice it (issue 12's list)."""

from __future__ import annotations

from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.test_classroom import _join, _open, _playing
from tests.sfu.conftest import Classroom

COUNT_MEDIA_REQUESTS = """window.mediaRequests = [];
const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (c) => { window.mediaRequests.push(c); return original(c); };"""


async def _centred(page: Page, selector: str) -> None:
    box = await page.locator(selector).bounding_box()
    size = page.viewport_size
    assert box is not None and size is not None
    dx = abs(box["x"] + box["width"] / 2 - size["width"] / 2)
    dy = abs(box["y"] + box["height"] / 2 - size["height"] / 2)
    assert dx < 4 and dy < 40, f"{selector} at {box} in {size}"


async def test_error_pages_are_styled_and_speak_plainly(classroom: Classroom, browser: Browser,
                                                        contexts: list[BrowserContext]) -> None:
    page = await _open(browser, contexts, f"{classroom.base}/iframe/live?token=abc")
    await expect(page.locator("h1")).to_have_text("Cannot open this classroom")
    text = await page.locator("body").inner_text()
    assert "segments" not in text.lower() and "invalid token" not in text.lower(), text
    assert "system-ui" in await page.evaluate("getComputedStyle(document.body).fontFamily")
    await _centred(page, "#terminal")
    await classroom.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    url = await _join(classroom, "ada")
    status, body = await classroom.rest("POST", "/v1/room/physics-1/participants/ada/remove", {"reason": "test"})
    assert status == 200, body
    removed = await _open(browser, contexts, url)
    await expect(removed.locator("h1")).to_have_text("You were removed from this class")
    bob = await _join(classroom, "bob")
    status, body = await classroom.rest("DELETE", "/v1/room/physics-1")
    assert status == 200, body
    ended = await _open(browser, contexts, bob)
    await expect(ended.locator("h1")).to_have_text("The class has ended")
    await _centred(ended, "#terminal")


async def test_a_students_lobby_asks_for_nothing_it_does_not_use(classroom: Classroom, browser: Browser,
                                                                 contexts: list[BrowserContext]) -> None:
    await classroom.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    status, body = await classroom.rest("POST", "/v1/room/physics-1/join", {
        "participant": {"uid": "ada", "name": "Ada", "role": "STUDENT"}, "customization": {"showLobby": True}})
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    contexts.append(ctx)
    await ctx.add_init_script(COUNT_MEDIA_REQUESTS)
    page = await ctx.new_page()
    await page.goto(body["data"]["iframeUrl"])
    await expect(page.locator("#join")).to_be_visible()
    await expect(page.locator("#lobby video")).to_have_count(0)  # no black camera box
    await expect(page.locator("#lobby-status")).to_contain_text("camera and microphone stay off")
    await _centred(page, "#lobby")
    await page.click("#join")
    await page.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
    assert await page.evaluate("window.mediaRequests") == [], "a student is never asked for camera or microphone"


async def test_students_wait_for_the_teacher_then_see_the_camera(classroom: Classroom, browser: Browser,
                                                                 contexts: list[BrowserContext]) -> None:
    await classroom.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics", "participant": {"uid": "teacher", "name": "Marie",
                                                                   "role": "TEACHER"}})
    student = await _open(browser, contexts, await _join(classroom, "ada"))
    await student.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
    await expect(student.locator("#camera-empty")).to_have_text("Waiting for the teacher…")
    teacher = await _open(browser, contexts, await _join(classroom, "teacher", "TEACHER"))
    await _playing(student, "camera-video")
    await expect(student.locator("#camera-empty")).to_be_hidden()
    await teacher.evaluate("window.classcastRoom.unpublish('camera')")
    await expect(student.locator("#camera-empty")).to_have_text("The teacher's camera is off")
    await expect(student.locator("#camera-empty")).to_be_visible()


async def test_poll_answer_is_confirmed_and_moderators_can_stop_a_recording(classroom: Classroom, browser: Browser,
                                                                            contexts: list[BrowserContext]) -> None:
    await classroom.rest("POST", "/v1/room/create", {
        "roomId": "physics-1", "title": "Physics", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
    moderator = await _open(browser, contexts, await _join(classroom, "mo", "MODERATOR"))
    await moderator.wait_for_function("window.classcastRoom && Object.keys(window.classcastRoom.published).length"
                                      " === 2")
    student = await _open(browser, contexts, await _join(classroom, "ada"))
    await student.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
    # Polls: the student's choice is confirmed on the student's page.
    await moderator.fill("#poll-question", "Is light a wave?")
    await moderator.fill("#poll-options", "Yes\nNo")
    await moderator.click("#poll-create")
    await student.get_by_role("button", name="No").click()
    await expect(student.locator(".poll .confirm")).to_have_text("✓ Your answer “No” was recorded.")
    # Roster: a moderator's buttons sit on one line beside each name, however long the name.
    await _open(browser, contexts, await _join(classroom, "maximilian-alexander-von-humboldt"))
    row = moderator.locator("#roster li[data-uid='maximilian-alexander-von-humboldt']")
    await expect(row).to_be_visible()
    heights = await row.evaluate("(li) => [li.getBoundingClientRect().height, "
                                 "...[...li.querySelectorAll('button')].map((b) => b.getBoundingClientRect().height)]")
    assert max(heights) < 40, f"the row or a button wraps: {heights}"
    # Recording: the moderator has no start button, but a stop button while a recording runs.
    await expect(moderator.locator("#record-toggle")).to_be_hidden()
    status, body = await classroom.rest("POST", "/v1/room/physics-1/recording/start", {})
    assert status == 200, body
    stop = moderator.get_by_role("button", name="Stop recording")
    await expect(stop).to_be_visible(timeout=15000)
    await stop.click()
    await expect(moderator.locator("#record-toggle")).to_be_hidden(timeout=15000)
    await expect(moderator.locator("#rec-badge")).to_be_hidden()
