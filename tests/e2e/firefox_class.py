"""The Firefox end-to-end run's server side, started by tests/e2e/test_firefox.py inside a network namespace.

Firefox never gathers loopback ICE candidates, so the server and the browser share a namespace whose only device
holds a benchmark address (198.18.0.0/15, bench/netns.py); nothing there has a route out. This process serves the
real app on that address, makes the room, runs tests/e2e/firefox/drive.mjs (puppeteer-core driving firefox-esr),
and prints one JSON object: what the pages showed plus what the SFU saw (codec, layers, the student's layer).

Usage: python -m tests.e2e.firefox_class DATA_DIR
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.netns import ADDRESS
from control.app import create_app
from control.config import Config, TutorConfig
from control.services import SERVICES
from control.signaling import HUB
from sfu.ice import IceConfig

DRIVER = Path(__file__).resolve().parent / "firefox" / "drive.mjs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return int(probe.getsockname()[1])


def _sfu_view(app: web.Application) -> dict[str, Any]:
    now = time.monotonic()
    view: dict[str, Any] = {"tracks": [], "student_layers": []}
    for router in app[HUB].sfu.routers.values():
        for producer in router.producers.values():
            view["tracks"].append({"source": producer.source, "codec": producer.codec.mime_type,
                                   "layers": [[s.rid, s.width, s.height, s.packets_in, s.flowing(now)]
                                              for s in producer.streams]})
        for participant in router.participants.values():
            for consumer in participant.consumers.values():
                if consumer.producer.source == "camera" and consumer.current is not None:
                    view["student_layers"].append([participant.uid, consumer.current.rid])
    return view


async def main(data_dir: Path) -> dict[str, Any]:
    port = _free_port()
    base = f"http://{ADDRESS}:{port}"
    ice = IceConfig(hosts=(ADDRESS,), allowed_networks=(ipaddress.ip_network("198.18.0.0/15"),))
    # sfu_workers=0: media in this process, whose routers `_sfu_view` reads (the layers Firefox sent, the student's)
    config = dataclasses.replace(Config(data_dir=data_dir), host=ADDRESS, port=port, public_url=base, ice=ice,
                                 tutor=TutorConfig(llm_backend="fake"), sfu_workers=0)
    app = await create_app(config, background=False)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, ADDRESS, port).start()
    svc = app[SERVICES]
    org = await svc.store.create_org("Firefox School", 100_000, svc.clock.now_ms())
    result: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(headers={"VF-ORG-ID": org.id}) as http:
            async with http.post(f"{base}/v1/room/create", json={
                    "roomId": "physics-1", "title": "Physics",
                    "participant": {"uid": "teacher", "name": "Marie", "role": "TEACHER"},
                    "customization": {"showLobby": False}}) as r:
                teacher_url = (await r.json())["data"]["iframeUrl"]
            async with http.post(f"{base}/v1/room/physics-1/join", json={
                    "participant": {"uid": "ada", "name": "Ada", "role": "STUDENT"},
                    "customization": {"showLobby": False}}) as r:
                student_url = (await r.json())["data"]["iframeUrl"]
        driver = await asyncio.create_subprocess_exec(
            "node", str(DRIVER), json.dumps({"teacherUrl": teacher_url, "studentUrl": student_url, "seconds": 4}),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        views = []

        async def watch() -> None:
            while True:
                await asyncio.sleep(1)
                views.append(_sfu_view(app))

        watcher = asyncio.create_task(watch())
        try:
            stdout, stderr = await asyncio.wait_for(driver.communicate(), 240)
        finally:
            watcher.cancel()
        lines = stdout.decode().strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"ok": False, "error": stderr.decode()[-3000:]}
        result["sfu"] = views
    finally:
        await runner.cleanup()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
