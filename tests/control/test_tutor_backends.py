"""The OpenAI-compatible client against a server that misbehaves the way real ones do."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from control.tutor.backends import Confidence, OpenAiBackend, Usage


async def test_a_kept_alive_connection_the_server_dropped_is_sent_again(aiohttp_server: Any) -> None:
    """llama.cpp's server drops a connection after a streamed reply; the client reused it for the next question
    and the student got a 500 (seen with the question set on the openai backend)."""
    seen: dict[int, int] = {}

    async def completions(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        key = id(request.transport)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:  # a second request on the same connection: hang up without answering
            request.transport.close()
            raise web.HTTPInternalServerError()
        body = await request.json()
        assert body["logprobs"] is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("Four", "."):
            event = {"choices": [{"delta": {"content": piece}, "logprobs": {"content": [{"logprob": -0.5}]}}]}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}}
        await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    server = await aiohttp_server(app)
    backend = OpenAiBackend(str(server.make_url("/v1")), "m", logprobs=True)
    try:
        for _ in range(3):
            items = [item async for item in backend.stream([{"role": "user", "content": "2+2?"}], 8)]
            assert [i for i in items if isinstance(i, str)] == ["Four", "."]
            assert [i for i in items if isinstance(i, Confidence)] == [Confidence((-0.5,)), Confidence((-0.5,))]
            assert items[-1] == Usage(12, 2)
    finally:
        await backend.close()
    assert len(seen) >= 3  # each question went out on a fresh connection in the end
