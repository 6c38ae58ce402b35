"""Real class summaries from the embedded model, through the server's own endpoints, to read by eye.

    .venv/bin/python -m bench.tutor_eval.summary [--threads 1]

Starts the app in-process on a loopback port with the embedded model and a throw-away data folder, then prints
the summary of (1) a room that never started, (2) a room with questions but no transcript, and (3) a class with a
transcript and students' questions asked through /v1/ai-tutor/chat.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

TRANSCRIPT = [
    "Good morning everyone. Today we look at photosynthesis, how plants make their own food.",
    "Plants take in carbon dioxide from the air through small holes in their leaves called stomata.",
    "They take in water through their roots. Chlorophyll in the leaves absorbs light energy.",
    "With that energy the plant turns carbon dioxide and water into glucose, and it releases oxygen.",
    "For homework, draw the leaf diagram on page 34 and label the stomata.",
]
QUESTIONS = ["What is chlorophyll?", "Why do plants need light?", "What is chlorophyll for?",
             "Where does the oxygen come from?"]


async def run(threads: int) -> None:
    from control.app import create_app
    from control.config import Config, TutorConfig
    from control.services import SERVICES
    from control.store.tutor import TutorStore

    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=Path(tmp) / "data", tutor=TutorConfig(llm_backend="embedded", llm_threads=threads))
        app = await create_app(config, background=False)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            svc = app[SERVICES]
            org = await svc.store.create_org("Bench School", 10_000, svc.clock.now_ms())
            headers = {"VF-ORG-ID": org.id}

            async def call(method: str, path: str, body: Any = None) -> Any:
                resp = await client.request(method, path, json=body, headers=headers)
                return await resp.json()

            for room_id, title in (("never-started", "Biology 7B"), ("questions-only", "Biology 7B"),
                                   ("photosynthesis", "Biology 7B")):
                await call("POST", "/v1/room/create", {"roomId": room_id, "title": title,
                                                       "roomDescription": "Cells, plants and ecosystems",
                                                       "participant": {"uid": "t1", "name": "Ms Lee",
                                                                       "role": "TEACHER"}})
            for q in QUESTIONS[:2]:
                await call("POST", "/v1/ai-tutor/chat", {"roomId": "questions-only", "studentUid": "s1",
                                                         "organizationId": org.id, "text": q})
            room = await svc.store.get_room(org.id, "photosynthesis")
            assert room is not None
            now = svc.clock.now_ms()
            for i, line in enumerate(TRANSCRIPT):
                await TutorStore(svc.store).add_segment(room.sid, "t1", line, now - 60_000 + i * 10_000,
                                                        now - 55_000 + i * 10_000)
            for i, q in enumerate(QUESTIONS):
                await call("POST", "/v1/ai-tutor/chat", {"roomId": "photosynthesis", "studentUid": f"s{i}",
                                                         "organizationId": org.id, "text": q})
            for room_id in ("never-started", "questions-only", "photosynthesis"):
                body = await call("GET", f"/v1/ai-tutor/summary/{room_id}")
                print(f"### {room_id}\n\nsummary: {body['summary']}\n")
                for q in body["topQueries"]:
                    print(f"- ({q['frequency']}x) {q['question']} -> {q['answer'][:160]!r}")
                print()
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    asyncio.run(run(parser.parse_args().threads))


if __name__ == "__main__":
    main()
