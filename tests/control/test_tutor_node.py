"""The seed's own JavaScript streaming reader, run with node against the live server on 127.0.0.1.

node is part of the machine (v20); without it this test fails rather than skipping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from control.app import create_app
from control.services import SERVICES
from tests.control.tutor_fixtures import tutor_config

READER = Path(__file__).parent / "js" / "seed_stream_reader.mjs"


async def test_seed_stream_reader_assembles_the_answer(aiohttp_server: Any, tmp_path: Path) -> None:
    app = await create_app(tutor_config(tmp_path), background=False)
    server = await aiohttp_server(app, host="127.0.0.1")
    svc = app[SERVICES]
    org = await svc.store.create_org("Node School", 10_000, svc.clock.now_ms())
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/room/create", headers={"VF-ORG-ID": org.id}, json={
                "roomId": "class-456", "title": "Algebra",
                "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}) as resp:
            assert resp.status == 200
    proc = await asyncio.create_subprocess_exec(
        "node", str(READER), base, org.id, f"{org.id}_class-456",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["status"] == 200 and result["contentType"] == "text/event-stream"
    assert result["fullText"] == "Here is an answer about: What does this equation mean?"
    assert result["usage"]["outputTokens"] == len(result["fullText"].split(" "))
    assert result["usage"]["inputTokens"] > 0
