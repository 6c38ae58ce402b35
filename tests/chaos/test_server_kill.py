"""Chaos: SIGKILL of the server mid-class (issue 13). A real `classcast serve` with a teacher publishing and a
student watching is killed; started again on the same data folder, it has closed the sessions the crash left open,
and the same room takes the same people again: the teacher publishes, the student sees the picture.

(Billing across such a crash is tests/control/test_credits.py; the recorder's SIGKILL is in tests/recorder/.)"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from typing import Any

import aiohttp

from bench.targets.classcast import Server
from sfu.client import Client, SyntheticVideoTrack
from sfu.ice import IceConfig
from tests.sfu.test_forwarding import _frame_size

ICE = IceConfig(hosts=("127.0.0.1",))


async def _rest(session: aiohttp.ClientSession, server: Server, method: str, path: str,
                body: Any = None) -> tuple[int, Any]:
    async with session.request(method, server.base + path, json=body, headers={"VF-ORG-ID": server.org}) as resp:
        return resp.status, await resp.json()


async def _class(session: aiohttp.ClientSession, server: Server, create: bool) -> tuple[Client, Client, Any]:
    who = {"uid": "teacher", "name": "Marie", "role": "TEACHER"}
    if create:
        status, body = await _rest(session, server, "POST", "/v1/room/create",
                                   {"roomId": "physics-1", "title": "Physics", "participant": who})
    else:
        status, body = await _rest(session, server, "POST", "/v1/room/physics-1/join", {"participant": who})
    assert status == 200, body
    teacher = Client(server.base, body["data"]["token"], name="teacher", ice=ICE, reconnect=False)
    await teacher.connect()
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    status, body = await _rest(session, server, "POST", "/v1/room/physics-1/join",
                               {"participant": {"uid": "s1", "name": "Sam", "role": "STUDENT"}})
    assert status == 200, body
    student = Client(server.base, body["data"]["token"], name="s1", ice=ICE, reconnect=False)
    await student.connect()
    track = await student.remote_track("camera", timeout=15)
    await _frame_size(track, timeout=15)
    return teacher, student, track


async def test_sigkill_mid_class_then_the_same_class_again() -> None:
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(None, Server, "127.0.0.1")
    clients: list[Client] = []
    second: Server | None = None
    try:
        async with aiohttp.ClientSession() as session:
            teacher, student, _ = await _class(session, first, create=True)
            clients += [teacher, student]
            status, body = await _rest(session, first, "GET", "/v1/room/physics-1/status")
            assert status == 200 and body["data"]["participantCount"] == 2, body
            os.kill(first.proc.pid, signal.SIGKILL)  # mid-class: nothing gets to finish cleanly
            first.proc.wait(10)
            for c in clients:
                await c.close()
            clients = []
            second = await loop.run_in_executor(None, lambda: Server("127.0.0.1", data_dir=first.dir))
            assert second.org == first.org
            # The sessions the crash left open were closed at start: nobody is in the room any more.
            status, body = await _rest(session, second, "GET", "/v1/room/physics-1/status")
            assert status == 200 and body["data"]["participantCount"] == 0, body
            teacher, student, track = await _class(session, second, create=False)
            clients += [teacher, student]
            for _ in range(15):
                await _frame_size(track, timeout=3)
            status, body = await _rest(session, second, "GET", "/v1/room/physics-1/status")
            assert body["data"]["participantCount"] == 2, body
    finally:
        for c in clients:
            await c.close()
        if second is not None:
            second.stop()
        elif first.proc.poll() is None:
            first.proc.kill()
        shutil.rmtree(first.dir, ignore_errors=True)
