"""Chromium publishes a three-layer simulcast camera; aiortc students get the layer they can take."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest
from playwright.async_api import Browser

from control.signaling import HUB
from sfu.client import Client
from sfu.producer import Producer
from tests.e2e.conftest import LAYER_STATS_JS, open_page, publish_camera
from tests.sfu.conftest import Classroom

# Media in the server process (CLASSCAST_SFU_WORKERS=0): the tests read the layers at the SFU.
pytestmark = pytest.mark.in_process_sfu("reads the producers' layers and each subscriber's current layer")


class DecodeErrors(logging.Handler):
    """aiortc logs a warning for every frame its decoder rejects."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.count += 1


LAYER_SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}


def _camera(room: Classroom) -> Producer | None:
    for router in room.server.app[HUB].sfu.routers.values():
        for producer in router.producers.values():
            if producer.source == "camera":
                return producer
    return None


async def _wait_layers(room: Classroom, timeout: float, page: Any = None) -> tuple[Producer, float]:
    """Until all three layers flow; returns the producer and the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        camera = _camera(room)
        now = time.monotonic()
        if camera is not None and camera.simulcast and all(s.flowing(now) for s in camera.streams):
            return camera, now - started
        await asyncio.sleep(0.1)
    camera = _camera(room)
    state = [(s.rid, s.packets_in, s.flowing(time.monotonic())) for s in camera.streams] if camera else None
    publisher = await page.evaluate(LAYER_STATS_JS) if page is not None else None
    raise AssertionError(f"not all layers flowed within {timeout} s: {state}; publisher: {publisher}")


async def _frame_size(client: Client, timeout: float = 10) -> tuple[int, int]:
    track = await client.remote_track("camera", timeout=timeout)
    frame = await asyncio.wait_for(track.recv(), timeout)
    return frame.width, frame.height


async def _settled_size(client: Client, want: tuple[int, int], timeout: float = 20) -> None:
    """Decode until frames of the wanted size arrive (layer switches take a keyframe)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await _frame_size(client)
        if seen == want:
            return
    raise AssertionError(f"wanted {want}, still decoding {seen}")


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
async def test_three_layers_reach_students_asking_low_medium_high(classroom: Classroom, browser: Browser,
                                                                   codec: str) -> None:
    page = await open_page(browser, classroom)
    token = await classroom.create_room()
    students = {}
    for quality in ("low", "medium", "high"):  # in class before the teacher's camera comes on
        student = await classroom.client(await classroom.token("physics-1", f"s-{quality}"), name=quality)
        await student.request({"type": "set_quality", "quality": quality}, "quality_changed")
        students[quality] = student
    by_size = await classroom.client(await classroom.token("physics-1", "s-size"), name="size")
    await by_size.request({"type": "set_quality", "quality": "auto", "maxWidth": 700, "maxHeight": 400},
                          "quality_changed")
    tracks = await publish_camera(page, token, codec)
    assert tracks[0]["layers"] == ["q", "h", "f"]
    camera, took = await _wait_layers(classroom, timeout=30, page=page)
    assert camera.codec.mime_type == codec
    print(f"\n{codec}: all three layers flowing {took:.1f} s after publish")  # figure for bench/RESULTS.md
    for quality, rid in (("low", "q"), ("medium", "h"), ("high", "f")):
        await _settled_size(students[quality], LAYER_SIZES[rid])
    await _settled_size(by_size, LAYER_SIZES["h"])  # the largest layer within 700x400
    # The publisher saw transport-wide feedback and ramped its rate (no bandwidth limitation left).
    stats = await page.evaluate(LAYER_STATS_JS)
    assert stats["f"]["frameWidth"] == 1280


async def test_throttled_student_moves_down_and_back_up(classroom: Classroom, browser: Browser) -> None:
    page = await open_page(browser, classroom)
    token = await classroom.create_room()
    student = await classroom.client(await classroom.token("physics-1", "weak"), name="weak")
    await publish_camera(page, token, "video/VP8")
    await _wait_layers(classroom, timeout=30, page=page)
    await _settled_size(student, LAYER_SIZES["f"], timeout=30)
    participant = next(p for p in next(iter(classroom.server.app[HUB].sfu.routers.values())).participants.values()
                       if p.uid == "weak")
    engine = participant.bridge.engine
    # the engine's test hook: 20% of what leaves for the student is lost on the way, retransmissions too
    engine.set_loss(participant.transport, 200, 3, True)
    track = await student.remote_track("camera")
    arrivals: list[float] = []

    async def watch() -> None:  # every decoded frame's time: a freeze shows as a gap
        while True:
            await track.recv()
            arrivals.append(time.monotonic())

    errors = DecodeErrors()
    logging.getLogger("aiortc.rtcrtpreceiver").addHandler(errors)
    watcher = asyncio.create_task(watch())
    t0 = time.monotonic()
    since = len(student.messages)
    down = await student.wait_for("quality_changed", lambda m: m.get("layer") in ("q", "h"), timeout=15,
                                  since=since)
    moved_down = time.monotonic() - t0
    engine.set_loss(participant.transport, 0, 1)
    t1 = time.monotonic()
    since = len(student.messages)
    await student.wait_for("quality_changed", lambda m: m.get("layer") == "f", timeout=40, since=since)
    moved_up = time.monotonic() - t1
    await asyncio.sleep(2)
    watcher.cancel()
    logging.getLogger("aiortc.rtcrtpreceiver").removeHandler(errors)
    longest = max(b - a for a, b in itertools.pairwise([t0, *arrivals, time.monotonic()]))
    print(f"\nthrottled 20% loss: down to {down['layer']} in {moved_down:.1f} s, back to f in {moved_up:.1f} s, "
          f"{len(arrivals)} frames decoded, longest gap {longest:.2f} s, {errors.count} decode errors")
    # Freezes are a figure (bench/RESULTS.md), not a pass mark: under 20% random loss that also hits
    # retransmissions, aiortc's receiver (one NACK per packet) can fail to complete a keyframe and waits for
    # its next keyframe request. What must hold is below.
    assert errors.count == 0, "decode errors across the layer switches"


async def test_a_paused_layer_makes_its_subscribers_fall_back_at_once(classroom: Classroom, browser: Browser) -> None:
    page = await open_page(browser, classroom)
    token = await classroom.create_room()
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await publish_camera(page, token, "video/VP8")
    await _wait_layers(classroom, timeout=30, page=page)
    await _settled_size(student, LAYER_SIZES["f"], timeout=30)
    since = len(student.messages)
    await page.evaluate("""async () => {
      const sender = window.room._senders.camera;
      const params = sender.getParameters();
      params.encodings.find((e) => e.rid === 'f').active = false;
      await sender.setParameters(params);
    }""")
    t0 = time.monotonic()
    changed = await student.wait_for("quality_changed", lambda m: m.get("layer") != "f", timeout=10, since=since)
    print(f"\nf paused by the publisher: fell back to {changed['layer']} in {time.monotonic() - t0:.2f} s")
    assert time.monotonic() - t0 < 3
    await _settled_size(student, LAYER_SIZES[changed["layer"]], timeout=10)


async def test_dynacast_pauses_layers_nobody_needs(classroom: Classroom, browser: Browser) -> None:
    page = await open_page(browser, classroom)
    token = await classroom.create_room()
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await publish_camera(page, token, "video/VP8")
    await _wait_layers(classroom, timeout=30, page=page)
    await student.request({"type": "set_quality", "quality": "low"}, "quality_changed")
    await _settled_size(student, LAYER_SIZES["q"])
    deadline = time.monotonic() + 15
    active = None
    while time.monotonic() < deadline:
        stats = await page.evaluate(LAYER_STATS_JS)
        active = {rid: stats[rid]["active"] for rid in ("q", "h", "f")}
        if active == {"q": True, "h": False, "f": False}:
            break
        await asyncio.sleep(0.5)
    assert active == {"q": True, "h": False, "f": False}
    await student.send({"type": "set_quality", "quality": "high"})
    await _settled_size(student, LAYER_SIZES["f"], timeout=30)


async def test_screen_share_is_one_layer_with_detail_hint(classroom: Classroom, browser: Browser) -> None:
    page = await open_page(browser, classroom)
    token = await classroom.create_room()
    hint = await page.evaluate("""async (token) => {
      const room = new window.sdk.Room(); window.room = room;
      await room.connect(token);
      const s = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
      const screen = s.getVideoTracks()[0];
      await room.publish({screen}, {videoCodec: 'video/VP8'});
      return screen.contentHint;
    }""", token)
    assert hint == "detail"
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    track = await student.remote_track("screen", timeout=10)
    frame = await asyncio.wait_for(track.recv(), 10)
    assert (frame.width, frame.height) == (1280, 720)
    screen = next(p for r in classroom.server.app[HUB].sfu.routers.values() for p in r.producers.values())
    assert screen.source == "screen" and not screen.simulcast and len(screen.streams) == 1


async def test_a_browser_subscribers_twcc_feedback_drives_its_estimate(classroom: Classroom,
                                                                      browser: Browser) -> None:
    from sfu.client import SyntheticVideoTrack

    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(640, 360)})
    page = await open_page(browser, classroom)
    token = await classroom.token("physics-1", "chrome-student")
    await page.evaluate("""async (token) => {
      const room = new window.sdk.Room(); window.room = room;
      room.addEventListener('trackSubscribed', (e) => { const v = document.createElement('video');
        v.id = 'v'; v.muted = true; v.autoplay = true; v.srcObject = e.detail.stream; document.body.append(v); });
      await room.connect(token);
    }""", token)
    await page.wait_for_function("document.getElementById('v') && document.getElementById('v').videoWidth === 640",
                                 timeout=15000)
    router = next(iter(classroom.server.app[HUB].sfu.routers.values()))
    student = next(p for p in router.participants.values() if p.uid == "chrome-student")
    assert student.twcc_out is not None, "the browser answered transport-wide-cc"
    twcc = student.twcc_out
    deadline = time.monotonic() + 8  # 1.5 s on a quiet machine; a loaded CI run sent 46 packets in that time
    while not (twcc.feedbacks > 5 and twcc.reported > 50):
        assert time.monotonic() < deadline, (twcc.feedbacks, twcc.reported)
        await asyncio.sleep(0.1)
    assert twcc.lost <= twcc.reported // 20
    # the engine's test hook: 30% of what leaves for the browser is lost after its transport-wide number was written
    student.bridge.engine.set_loss(student.transport, 300, 5, True)
    lost_before, decreases_before = twcc.lost, student.estimate.decreases
    await asyncio.sleep(3)
    assert twcc.lost - lost_before > 10, "the browser's feedback reports the packets that never arrived"
    assert student.estimate.decreases > decreases_before, "and the estimate came down"
    assert student.twcc_decreases > 0, "on the browser's transport-wide feedback (not only its receiver reports)"
