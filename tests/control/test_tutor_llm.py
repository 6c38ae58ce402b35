"""Smoke test of the embedded default: SmolLM2-135M in xllamacpp on a loopback port, one thread, through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.tutor_eval.checkers import Honest, Value, Words
from control.clock import FakeClock
from control.store.tutor import TutorStore
from control.tutor.backends import EmbeddedBackend
from tests.control.tutor_fixtures import chat_body, make_api, replace_tutor, tutor_config


async def test_embedded_smollm2_answers_a_question(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    config = replace_tutor(tutor_config(tmp_path), llm_backend="embedded", llm_threads=1, max_answer_tokens=48)
    api = await make_api(aiohttp_client, config, clock)
    assert isinstance(api.svc.tutor.backend, EmbeddedBackend)
    await api.create_room("math-101")
    status, body = await api.post("/v1/ai-tutor/chat", chat_body(api, text="What is a quadratic equation?"))
    assert status == 200, body
    assert len(body["text"].split()) >= 3
    assert 0 < body["usage"]["outputTokens"] <= 48  # counted by llama.cpp, capped by the configured budget
    assert body["usage"]["inputTokens"] > 20  # the class context came along
    # A second question on the same server (llama.cpp closes each streamed connection: none may be reused).
    resp = await api.client.post("/v1/ai-tutor/chat/stream", json=chat_body(api, text="And a linear equation?"),
                                 headers={"VF-ORG-ID": api.org.id})
    frames = (await resp.text()).split("\n\n")
    assert resp.status == 200 and frames[-2] == "data: [DONE]"
    assert '"error"' not in frames[-3] and '"outputTokens":' in frames[-3]
    backend = api.svc.tutor.backend
    assert backend._server.listening_address.startswith("http://127.0.0.1:")


async def test_production_path_streams_from_an_openai_compatible_endpoint_with_its_key(
        aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    """CLASSCAST_LLM_URL/MODEL/API_KEY, against a real OpenAI-compatible server: llama.cpp's, requiring a key."""
    import asyncio

    import xllamacpp

    from control.config import Config, TutorConfig
    from control.tutor import models
    from control.tutor.backends import OpenAiBackend

    params = xllamacpp.CommonParams()
    params.model.path = str(models.llm_gguf())
    params.n_ctx = 1024
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = ["sk-test-key"]
    server = await asyncio.get_running_loop().run_in_executor(None, xllamacpp.Server, params)
    try:
        url = f"{server.listening_address}/v1"
        for key, expected in (("sk-test-key", 200), ("wrong-key", 500)):
            env = {"CLASSCAST_LLM_URL": url, "CLASSCAST_LLM_MODEL": "smollm2", "CLASSCAST_LLM_API_KEY": key,
                   "CLASSCAST_TUTOR_MAX_TOKENS": "16"}
            tutor = TutorConfig.from_env(env)
            config = Config(data_dir=tmp_path / key, tutor=tutor)
            api = await make_api(aiohttp_client, config, clock)
            assert isinstance(api.svc.tutor.backend, OpenAiBackend)
            await api.create_room("math-101")
            status, body = await api.post("/v1/ai-tutor/chat", chat_body(api, text="What is two plus two?"))
            assert status == expected, body
            if expected == 200:
                assert body["text"] and 0 < body["usage"]["outputTokens"] <= 16
                # Again, on the kept-alive connection llama.cpp's server has closed: sent again, not a 500.
                for question in ("And three plus three?", "And four plus four?"):
                    status, body = await api.post("/v1/ai-tutor/chat", chat_body(api, text=question))
                    assert status == 200, body
    finally:
        del server


@pytest.mark.slow
async def test_the_real_model_answers_a_handful_right(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    """Issue 22 through the real embedded model (not the fake): verified arithmetic and algebra, an answer from
    the class transcript, an honest 'ask your teacher'. Judged by the question set's own checkers."""
    config = replace_tutor(tutor_config(tmp_path), llm_backend="embedded", llm_threads=1, max_answer_tokens=48)
    api = await make_api(aiohttp_client, config, clock)
    await api.create_room("math-101")
    await api.create_room("history-7")
    room = await api.room("history-7")
    now = clock.now_ms()
    await TutorStore(api.svc.store).add_segment(
        room.sid, "teacher-1", "Before you go: the homework on page 42 is due on Friday.", now - 1000, now)
    cases = [
        ("math-101", "What is 7 times 8?", Value(("56",)), "7 × 8 = 56 (checked with computer algebra)."),
        ("math-101", "What are the roots of x^2 - 5x + 6 = 0?", Value(("2", "3")),
         "x^2 - 5x + 6 = 0 has the solutions x = 2 and x = 3 (checked with computer algebra)."),
        ("math-101", "What is 15% of 200?", Value(("30",)), "15% of 200 = 30 (checked with computer algebra)."),
        ("history-7", "When is the homework due?", Words(("friday",)), 'As your teacher said: "Before you go'),
        ("math-101", "When is the homework due?", Honest(), "I'm not sure"),
    ]
    for room_id, question, checker, opening in cases:
        status, body = await api.post("/v1/ai-tutor/chat", chat_body(api, room_id, text=question))
        assert status == 200, body
        assert body["text"].startswith(opening), body["text"]
        assert checker.check(body["text"], question), body["text"]
