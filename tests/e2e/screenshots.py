"""Regenerates docs/images/ from real runs: the server on 127.0.0.1, Debian's Chromium (fake camera and
microphone) as a teacher sharing a screen and as students on a desktop and a phone, the AI tutor panel (the
deterministic fake backend), the error page of a bad link, and a frame of a real composite recording read back
with PyAV. Run: `make screenshots` (or `PYTHONPATH=. .venv/bin/python -m tests.e2e.screenshots`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from control.api.recordings import RECORDINGS
from control.app import create_app
from control.config import Config, TutorConfig
from control.services import SERVICES
from tests.e2e.conftest import CHROMIUM, FLAGS

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
HOST = "127.0.0.1"


async def _open(browser: Browser, url: str, width: int = 1280, height: int = 800, phone: bool = False) -> Page:
    ctx = await browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True,
                                    device_scale_factor=2 if phone else 1, is_mobile=phone, has_touch=phone)
    page = await ctx.new_page()
    await page.goto(url)
    return page


async def _playing(page: Page, video_id: str) -> None:
    await page.wait_for_function(f"document.getElementById('{video_id}').videoWidth > 0", timeout=30000)
    first = await page.evaluate(f"document.getElementById('{video_id}').currentTime")
    await page.wait_for_function(f"document.getElementById('{video_id}').currentTime > {first} + 0.5",
                                 timeout=20000)


async def main(out: Path) -> list[Path]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(Config(data_dir=Path(tmp) / "data"), host=HOST, port=port, public_url=base,
                                     tutor=TutorConfig(llm_backend="fake"))
        app = await create_app(config, background=False)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        svc = app[SERVICES]
        org = await svc.store.create_org("North High", 100_000, svc.clock.now_ms())
        made: list[Path] = []
        try:
            async with aiohttp.ClientSession(base_url=base, headers={"VF-ORG-ID": org.id}) as http:

                async def rest(method: str, path: str, body: Any = None) -> Any:
                    async with http.request(method, path, json=body) as r:
                        data = await r.json()
                        assert r.status == 200, data
                        return data["data"]

                async def join(uid: str, name: str, role: str = "STUDENT") -> str:
                    data = await rest("POST", "/v1/room/physics-1/join", {
                        "participant": {"uid": uid, "name": name, "role": role},
                        "customization": {"showLobby": False}})
                    return str(data["iframeUrl"])

                teacher_url = (await rest("POST", "/v1/room/create", {
                    "roomId": "physics-1", "title": "Physics — Light and optics",
                    "description": "Refraction, lenses and the speed of light.",
                    "participant": {"uid": "marie", "name": "Marie Curie", "role": "TEACHER"},
                    "customization": {"showLobby": False}}))["iframeUrl"]
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                                      ignore_default_args=["--headless"])
                    teacher = await _open(browser, teacher_url)
                    await teacher.wait_for_function(
                        "window.classcastRoom && Object.keys(window.classcastRoom.published).length === 2",
                        timeout=30000)
                    students = [await _open(browser, await join(uid, name))
                                for uid, name in (("ada", "Ada Lovelace"), ("jose", "José Núñez"))]
                    await teacher.evaluate("""async () => {
                      const s = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
                      await window.classcastRoom.publish({screen: s.getVideoTracks()[0]});
                    }""")
                    for page in students:
                        await _playing(page, "camera-video")
                        await _playing(page, "screen-video")
                    await students[0].click("#hand-toggle")
                    await teacher.fill("#poll-question", "Which bends light more?")
                    await teacher.fill("#poll-options", "Glass\nWater\nAir")
                    await teacher.click("#poll-create")
                    await students[1].get_by_role("button", name="Glass").click()
                    await students[0].fill("#chat-input", "Why does a straw look bent in water?")
                    await students[0].click("#chat-send")
                    await teacher.fill("#chat-input", "Great question: we will see it with Snell's law.")
                    await teacher.click("#chat-send")
                    await students[0].fill("#tutor-input", "What is refraction?")
                    await students[0].click("#tutor-ask")
                    await students[0].wait_for_selector("#tutor-log .a[data-done='true']", timeout=30000)
                    await teacher.wait_for_selector("#hand-queue li[data-uid='ada']")
                    await asyncio.sleep(1)
                    await teacher.evaluate("document.getElementById('sidebar').scrollTop = 0")
                    shots = {"teacher-desktop.png": teacher, "student-desktop.png": students[0]}
                    for name, page in shots.items():
                        await page.screenshot(path=str(out / name))
                        made.append(out / name)
                    await students[0].locator("#tutor").screenshot(path=str(out / "tutor-panel.png"))
                    made.append(out / "tutor-panel.png")
                    phone = await _open(browser, await join("sam", "Sam Lee"), 390, 844, phone=True)
                    await _playing(phone, "camera-video")
                    await phone.screenshot(path=str(out / "student-phone.png"))
                    made.append(out / "student-phone.png")
                    # A recording of the class: a frame of the composite file, as the integrator downloads it.
                    recording = await rest("POST", "/v1/room/physics-1/recording/start",
                                           {"options": {"preset": "H264_720P_30", "layout": "speaker"}})
                    await asyncio.sleep(6)
                    await rest("POST", "/v1/room/physics-1/recording/stop")
                    await app[RECORDINGS].wait_finished(recording["egressId"])
                    path = next((app[RECORDINGS].root / recording["egressId"]).glob("*.mp4"))
                    with av.open(str(path)) as container:
                        frames = [f for f in container.decode(video=0)]
                    # The fake camera's pac-man opens and closes its mouth: show a frame where it is open wide.
                    later = frames[len(frames) // 2:]
                    best = max(later, key=lambda f: int((f.to_ndarray(format="rgb24")[..., 1] > 200).sum()))
                    best.to_image().save(out / "recording-frame.png")
                    made.append(out / "recording-frame.png")
                    error = await _open(browser, f"{base}/iframe/live?token=expired-or-broken", 800, 500)
                    await error.screenshot(path=str(out / "error-page.png"))
                    made.append(out / "error-page.png")
                    await browser.close()
        finally:
            await runner.cleanup()
    return made


if __name__ == "__main__":
    started = time.monotonic()
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES
    target.mkdir(parents=True, exist_ok=True)
    paths = asyncio.run(main(target))
    print(f"{len(paths)} images in {time.monotonic() - started:.0f} s: " + ", ".join(p.name for p in paths))
