"""Chromium through the one media port (issue 14): a simulcast camera reaches a student, survives an ICE restart
(the SDK asks for one when its connection fails) and a network change (the SDK's reconnect), every time over the
server's single ICE-lite UDP port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from control.signaling import HUB
from sfu.rtcserver import MuxConnection, RtcServer, rtc_server_for
from tests.e2e.conftest import open_page, publish_camera
from tests.sfu.conftest import Classroom

# Media in the server process (CLASSCAST_SFU_WORKERS=0): the tests read its one port.
pytestmark = pytest.mark.in_process_sfu("reads the SFU's shared media port, its sessions and the producer")

# The browser's view: the remote (server) candidate of its selected pair, and what it sent.
SELECTED_JS = """async () => {
  const stats = await window.room.pc.getStats();
  const all = [...stats.values()];
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = transport ? stats.get(transport.selectedCandidatePairId) : null;
  const remote = pair ? stats.get(pair.remoteCandidateId) : null;
  return remote ? {address: remote.address || remote.ip, port: remote.port, state: pair.state} : null;
}"""


def _server(room: Classroom) -> RtcServer:
    server = rtc_server_for(room.server.app[HUB].sfu.ice, room.server.app[HUB].sfu.bridge.engine, create=False)
    assert server is not None and server.listening
    return server


def _teacher_connection(room: Classroom) -> MuxConnection:
    router = next(iter(room.server.app[HUB].sfu.routers.values()))
    participant = router.participants[next(k for k, p in router.participants.items() if p.uid == "teacher")]
    connections = list(participant.peer._mux.values())
    assert len(connections) == 1  # max-bundle: one transport, on the shared port
    return connections[0]


async def _student_receives_camera(room: Classroom, since: int, timeout: float = 30) -> str:
    """Until the student's subscription to the (current) camera has been sent packets; returns its track id."""
    sfu = room.server.app[HUB].sfu
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sid in sfu.routers:
            stats = sfu.stats(sid)
            cameras = {t["trackId"] for t in stats["tracks"] if t["source"] == "camera"}
            for consumer in stats["consumers"]:
                if consumer["uid"] == "s1" and consumer["trackId"] in cameras and consumer["packetsSent"] > since:
                    return consumer["trackId"]
        await asyncio.sleep(0.2)
    raise AssertionError("the student's camera subscription sent nothing")


async def _browser_on_port(page: Page, server: RtcServer, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    selected = None
    while time.monotonic() < deadline:
        selected = await page.evaluate(SELECTED_JS)
        if selected and selected["state"] == "succeeded":
            assert selected["port"] == server.port, selected
            return selected
        await asyncio.sleep(0.2)
    raise AssertionError(f"the browser selected no pair: {selected}")


async def test_browser_publishes_restarts_and_reconnects_through_the_one_port(classroom: Classroom,
                                                                             browser: Browser) -> None:
    page = await open_page(browser, classroom)
    token = await classroom.create_room()
    await publish_camera(page, token, "video/VP8", 640, 360)
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    first = await _student_receives_camera(classroom, 0)
    server = _server(classroom)
    await _browser_on_port(page, server)
    connection = _teacher_connection(classroom)
    assert connection.path() is not None and connection.path()[2] > 0
    producer = next(p for r in classroom.server.app[HUB].sfu.routers.values() for p in r.producers.values()
                    if p.source == "camera")
    assert producer.simulcast  # the browser's simulcast went through the same port
    ufrags = {connection.local_username}

    # ICE restart: what the SDK sends when its connection fails; a new transport, the same port.
    await page.evaluate("() => window.room.send({type: 'restart'})")
    second = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        second = await _student_receives_camera(classroom, 0)
        if second != first:
            break
        await asyncio.sleep(0.2)
    assert second != first, "the camera was not published again after the restart"
    await _browser_on_port(page, server)
    connection = _teacher_connection(classroom)
    assert connection.local_username not in ufrags
    ufrags.add(connection.local_username)

    # Network change: the signaling connection drops, the SDK reconnects and publishes again.
    await page.evaluate("() => window.room.ws.close()")
    third = second
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and third == second:
        await asyncio.sleep(0.5)
        third = await _student_receives_camera(classroom, 0)
    assert third != second, "the camera was not published again after the reconnect"
    await _browser_on_port(page, server)
    assert _teacher_connection(classroom).local_username not in ufrags
    assert server.stats()["connections"] == 2, server.stats()  # the teacher's current connection, the student's
    assert student.pc is not None
    await page.close()
