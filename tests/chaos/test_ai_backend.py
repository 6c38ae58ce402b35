"""Chaos: the AI backend down or hanging (issue 13). The tutor answers an error within its timeout
(CLASSCAST_LLM_TIMEOUT), and the server goes on serving everything else meanwhile."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

from control.clock import FakeClock
from control.config import Config, TutorConfig
from tests.control.tutor_fixtures import chat_body, make_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, url: str, timeout: float) -> Any:
    tutor = TutorConfig.from_env({"CLASSCAST_LLM_URL": url, "CLASSCAST_LLM_TIMEOUT": str(timeout)})
    api = await make_api(aiohttp_client, Config(data_dir=tmp_path / "data", tutor=tutor), clock)
    await api.create_room("math-101")
    return api


async def test_an_ai_backend_that_is_down_is_an_error_at_once(aiohttp_client: Any, tmp_path: Path,
                                                               clock: FakeClock) -> None:
    api = await _api(aiohttp_client, tmp_path, clock, f"http://127.0.0.1:{_free_port()}/v1", timeout=30)
    started = time.monotonic()
    status, body = await api.post("/v1/ai-tutor/chat", chat_body(api, text="Is anyone there?"))
    assert status >= 500 and body["success"] is False, body
    assert time.monotonic() - started < 10
    status, _ = await api.get("/v1/room/math-101/status")
    assert status == 200


async def test_a_hanging_ai_backend_is_an_error_within_its_timeout_and_the_server_goes_on(
        aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads the request, never answers

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        api = await _api(aiohttp_client, tmp_path, clock, f"http://127.0.0.1:{port}/v1", timeout=3)
        started = time.monotonic()
        ask = asyncio.create_task(api.post("/v1/ai-tutor/chat", chat_body(api, text="Hello?")))
        await asyncio.sleep(0.5)
        # While the tutor waits, the class's API answers at once (the wait is not on the event loop).
        t = time.monotonic()
        status, _ = await api.get("/v1/room/math-101/status")
        assert status == 200 and time.monotonic() - t < 1.0
        await api.join("math-101", "s2")
        status, body = await ask
        elapsed = time.monotonic() - started
        assert accepted, "the tutor did reach the backend"
        assert status >= 500 and body["success"] is False, body
        assert 2.5 < elapsed < 8, elapsed  # the configured 3 s, not the default two minutes
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
