"""The live transcriber with media in worker processes: the teacher's microphone, forwarded by a worker, reaches
the transcriber's tap and becomes the room's transcript."""

from __future__ import annotations

import asyncio
import os
import time

from tests.control.tutor_fixtures import speak
from tests.sfu.conftest import Classroom
from tests.sfu.test_transcriber import SpeechTrack, _transcript
from tests.workers.conftest import pool_of


async def test_speech_through_a_worker_becomes_the_transcript(workers_room: Classroom) -> None:
    token = await workers_room.create_room("algebra")
    status, _ = await workers_room.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "algebra"})
    assert status == 200
    teacher = await workers_room.client(token, name="teacher")
    await teacher.publish({"microphone": SpeechTrack(speak("Today we solve a quadratic equation."))})
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = (await _transcript(workers_room, "algebra"))["text"].lower()
        if "equation" in text:
            break
        await asyncio.sleep(0.5)
    assert "quadratic" in text and "equation" in text, text
    pool = pool_of(workers_room)
    assert len(pool.rooms) == 1 and any(e.room in pool.rooms for e in pool.taps.values())
    # A sink by address: the worker sent the microphone's packets straight to the transcriber process's socket,
    # none crossed the control process; and the words were recognized in that process, not in this one.
    assert pool.relayed_media == 0
    tutor = workers_room.svc.tutor
    assert tutor is not None
    tap = next(iter(tutor.transcribers.values()))
    assert tap.address == str(tutor.transcription.supervisor.socket_path) and tap.dropped == 0
    assert tutor.transcription.supervisor.pid not in (None, os.getpid())
