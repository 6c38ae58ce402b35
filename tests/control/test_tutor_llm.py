"""Smoke test of the embedded default: SmolLM2-135M in xllamacpp on a loopback port, one thread, through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control.clock import FakeClock
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
    finally:
        del server
