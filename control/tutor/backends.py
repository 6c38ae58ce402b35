"""LLM backends behind one interface: any OpenAI-compatible endpoint, the embedded SmolLM2, a fake for tests.

The embedded default runs llama.cpp's own HTTP server (xllamacpp) on a loopback port and is then spoken to
exactly like a production endpoint, so one streaming client covers both paths and inference runs in llama.cpp's
threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from control.tutor.context import estimate_tokens

log = logging.getLogger("classcast.tutor")


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens}


@dataclass(frozen=True)
class Confidence:
    """The log-probabilities of the tokens just generated, from backends that report them (llama.cpp does):
    how sure the model was of what it wrote."""

    logprobs: tuple[float, ...]


class BackendError(Exception):
    """The model could not answer (endpoint down, bad reply): the API's 500."""


class BackendUnavailable(BackendError):
    """No model to answer with: the server was installed without the AI models (the API's 503)."""


class Backend(Protocol):
    name: str
    supports_images: bool
    reports_confidence: bool  # whether its stream carries `Confidence` items

    def stream(self, messages: list[dict[str, Any]], max_tokens: int) -> AsyncIterator[str | Confidence | Usage]:
        """Text pieces as they are generated (each maybe followed by its `Confidence`), then exactly one `Usage`."""
        ...

    async def close(self) -> None: ...


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content))
    return "\n".join(parts)


class OpenAiBackend:
    """Streams `POST {url}/chat/completions` with `stream: true`; reads usage when the server reports it."""

    def __init__(self, url: str, model: str, api_key: str = "", *, temperature: float = 0.2,
                 supports_images: bool = False, name: str = "openai", timeout_s: float = 120.0,
                 force_close: bool = False, logprobs: bool = False) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.supports_images = supports_images
        self.name = name
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
        self._session: aiohttp.ClientSession | None = None
        self.logprobs = logprobs  # ask for token log-probabilities (not every OpenAI-compatible server has them)
        self.reports_confidence = logprobs
        # llama.cpp's server closes the connection after a streamed reply; reusing it fails the next request.
        self._force_close = force_close

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(force_close=self._force_close))
        return self._session

    async def stream(self, messages: list[dict[str, Any]], max_tokens: int) -> AsyncIterator[str | Confidence | Usage]:
        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "stream": True, "max_tokens": max_tokens,
            "temperature": self.temperature, "stream_options": {"include_usage": True},
        }
        if self.logprobs:
            body["logprobs"] = True
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        usage: Usage | None = None
        produced: list[str] = []
        for attempt in (1, 2):
            try:
                async with self._http().post(f"{self.url}/chat/completions", json=body, headers=headers) as resp:
                    if resp.status != 200:
                        detail = (await resp.text())[:300]
                        raise BackendError(f"LLM endpoint answered {resp.status}: {detail}")
                    async for raw in resp.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            continue  # read on to the end: a connection left mid-body cannot be reused
                        try:
                            event = json.loads(data)
                        except ValueError:
                            continue
                        if event.get("usage"):
                            u = event["usage"]
                            usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                        for choice in event.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content")
                            if piece:
                                produced.append(piece)
                                yield piece
                            scored = (choice.get("logprobs") or {}).get("content") or []
                            values = tuple(float(t["logprob"]) for t in scored
                                           if isinstance(t, dict) and "logprob" in t)
                            if values:
                                yield Confidence(values)
                break
            except aiohttp.ServerDisconnectedError as exc:
                # A kept-alive connection the server had closed (llama.cpp's server closes after each streamed
                # reply): nothing was generated yet, so the request is sent again once on a new connection.
                if attempt == 2 or produced:
                    raise BackendError(f"LLM endpoint unreachable: {exc}") from exc
                log.info("LLM endpoint closed a kept-alive connection; sending again")
            except aiohttp.ClientError as exc:
                raise BackendError(f"LLM endpoint unreachable: {exc}") from exc
            except TimeoutError as exc:
                raise BackendError("LLM endpoint timed out") from exc
        # An endpoint that reports no usage is still billed, by estimate.
        yield usage or Usage(estimate_tokens(_prompt_text(messages)), estimate_tokens("".join(produced)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class EmbeddedBackend:
    """SmolLM2-135M-Instruct in xllamacpp's server on 127.0.0.1, started on first use. Demo quality.
    `model` picks another packaged GGUF (`models.LLMS`) and `chat_template` a llama.cpp template name for a GGUF
    that carries none."""

    name = "embedded"
    supports_images = False  # a text-only model: image requests are refused with a 400 before inference
    reports_confidence = True  # llama.cpp's server reports token log-probabilities

    def __init__(self, threads: int = 1, n_ctx: int = 2048, temperature: float = 0.2, model: str = "smollm2",
                 chat_template: str = "") -> None:
        self.model = model
        self.chat_template = chat_template
        self.threads = threads
        self.n_ctx = n_ctx
        self.temperature = temperature
        self._server: Any = None
        self._client: OpenAiBackend | None = None
        self._starting = asyncio.Lock()

    def _start_server(self) -> Any:
        from control.tutor import models

        try:
            models.require("xllamacpp")
            path = models.llm_gguf(self.model)
            if not path.exists():
                raise models.ModelMissing(f"{path} is missing")
        except models.ModelMissing as exc:
            raise BackendUnavailable(str(exc)) from None
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        if self.chat_template:
            params.chat_template = self.chat_template
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.hostnames = ["127.0.0.1"]  # loopback only, on a free port
        params.port = 0
        params.warmup = False
        params.verbosity = 0  # llama.cpp's info lines would break the server's one-JSON-object-per-line stderr
        return xllamacpp.Server(params)

    async def _ensure(self) -> OpenAiBackend:
        async with self._starting:
            if self._client is None:
                try:
                    self._server = await asyncio.get_running_loop().run_in_executor(None, self._start_server)
                except BackendUnavailable:
                    raise
                except Exception as exc:
                    raise BackendError(f"embedded model failed to start: {exc}") from exc
                address = self._server.listening_address
                log.info("embedded %s listening on %s", self.model, address)
                self._client = OpenAiBackend(f"{address}/v1", self.model, temperature=self.temperature,
                                             name="embedded", force_close=True, logprobs=True)
            return self._client

    async def stream(self, messages: list[dict[str, Any]], max_tokens: int) -> AsyncIterator[str | Confidence | Usage]:
        client = await self._ensure()
        async for item in client.stream(messages, max_tokens):
            yield item

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        self._server = None  # its destructor stops llama.cpp's main loop and closes the port


class FakeBackend:
    """Deterministic and instant, for API tests: the answer names the question, or is what `script` says for the
    messages (a test plays a model that gets the arithmetic wrong)."""

    name = "fake"

    def __init__(self, supports_images: bool = False,
                 script: Callable[[list[dict[str, Any]]], str] | None = None, logprob: float | None = None) -> None:
        self.supports_images = supports_images
        self.script = script
        self.logprob = logprob  # when set, every piece comes with this confidence, as llama.cpp reports it
        self.reports_confidence = logprob is not None
        self.calls: list[list[dict[str, Any]]] = []

    async def stream(self, messages: list[dict[str, Any]], max_tokens: int) -> AsyncIterator[str | Confidence | Usage]:
        self.calls.append(messages)
        question = _prompt_text(messages[-1:])
        answer = self.script(messages) if self.script else f"Here is an answer about: {question.strip()}"
        words = answer.split(" ")
        pieces = [words[0]] + [" " + w for w in words[1:]]
        pieces = pieces[:max_tokens]
        for piece in pieces:
            await asyncio.sleep(0)
            yield piece
            if self.logprob is not None:
                yield Confidence((self.logprob,))
        yield Usage(estimate_tokens(_prompt_text(messages)), len(pieces))

    async def close(self) -> None:
        return None
