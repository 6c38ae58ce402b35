"""The tutor tests' world: the real app and database with the deterministic fake LLM backend."""

from __future__ import annotations

import dataclasses
import io
import wave
from pathlib import Path
from typing import Any

from control.app import create_app
from control.clock import FakeClock
from control.config import Config, TutorConfig
from control.services import SERVICES
from control.tutor.speech import load_voice
from tests.conftest import Api


def tutor_config(tmp_path: Path, **tutor: Any) -> Config:
    return Config(data_dir=tmp_path / "data", public_url="https://class.example.test",
                  tutor=TutorConfig(**{"llm_backend": "fake", **tutor}))


async def make_api(aiohttp_client: Any, config: Config, clock: FakeClock, credits: int = 10_000) -> Api:
    app = await create_app(config, clock, background=False)
    client = await aiohttp_client(app)
    svc = app[SERVICES]
    org = await svc.store.create_org("Tutor School", credits, clock.now_ms())
    api = Api(client=client, svc=svc, org=org, clock=clock)
    svc.bus.subscribe(api.events.append)
    return api


def chat_body(api: Api, room_id: str = "math-101", **extra: Any) -> dict[str, Any]:
    return {"roomId": room_id, "studentUid": "student-789", "organizationId": api.org.id,
            "text": "What does this equation mean?", **extra}


_VOICE: Any = None


def speak(text: str) -> bytes:
    """A WAV of `text` spoken by the piper voice that `make install` installs (real synthesis, no fixture file)."""
    global _VOICE
    if _VOICE is None:
        _VOICE = load_voice(1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        _VOICE.synthesize_wav(text, w)
    return buf.getvalue()


def replace_tutor(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, tutor=dataclasses.replace(config.tutor, **changes))
