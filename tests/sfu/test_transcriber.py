"""The live transcriber: the teacher's microphone, through a real SFU, becomes transcript text; set_topic."""

from __future__ import annotations

import asyncio
import io
import time

import av
import numpy as np
import pytest

from sfu.client import ClientError, PacedAudioTrack
from tests.control.tutor_fixtures import speak
from tests.sfu.conftest import Classroom

RATE = 48_000


class SpeechTrack(PacedAudioTrack):
    """Plays a WAV once in real time, then silence, like a teacher who says one sentence and pauses."""

    def __init__(self, wav: bytes) -> None:
        super().__init__(RATE)
        with av.open(io.BytesIO(wav)) as src:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            chunks = [f.to_ndarray().reshape(-1) for fr in src.decode(audio=0) for f in resampler.resample(fr)]
        self.pcm = np.concatenate(chunks).astype(np.int16)

    def samples(self, offset: int, count: int) -> np.ndarray:
        chunk = self.pcm[offset : offset + count]
        return np.pad(chunk, (0, count - chunk.size))


async def _transcript(classroom: Classroom, room_id: str) -> dict:  # type: ignore[type-arg]
    status, body = await classroom.rest("GET", f"/v1/room/{room_id}/transcript")
    assert status == 200, body
    return body["data"]


async def test_the_teachers_speech_becomes_the_rooms_transcript(classroom: Classroom) -> None:
    token = await classroom.create_room("algebra")
    status, _ = await classroom.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "algebra"})
    assert status == 200
    teacher = await classroom.client(token, name="teacher")
    wav = speak("Today we solve a quadratic equation with the quadratic formula.")
    await teacher.publish({"microphone": SpeechTrack(wav)})
    deadline = time.monotonic() + 60
    text = ""
    started = False
    while time.monotonic() < deadline:
        data = await _transcript(classroom, "algebra")
        # the transcriber is a process of its own (transcriber/), started when the class goes live: the room is
        # transcribing once it is up, and from then on it stays so
        assert data["transcribing"] is True or not started
        started = started or data["transcribing"] is True
        text = data["text"].lower()
        if "formula" in text:
            break
        await asyncio.sleep(0.5)
    assert started and "quadratic" in text and "formula" in text, text
    segment = (await _transcript(classroom, "algebra"))["segments"][0]
    assert segment["uid"] == "teacher" and segment["startedAt"].endswith("Z")
    tutor = classroom.svc.tutor
    assert tutor is not None
    transcriber = tutor.transcribers[(await classroom.svc.store.get_room(classroom.org.id, "algebra")).sid]
    assert transcriber.dropped == 0
    status, _ = await classroom.rest("DELETE", "/v1/room/algebra")
    assert status == 200
    for _ in range(50):
        if not tutor.transcribers:
            break
        await asyncio.sleep(0.1)
    assert tutor.transcribers == {}  # the class ended: so did its transcriber


async def test_transcription_is_off_unless_enabled(classroom: Classroom) -> None:
    token = await classroom.create_room("quiet")
    await classroom.client(token, name="teacher")
    await asyncio.sleep(0.2)
    data = await _transcript(classroom, "quiet")
    assert data["transcribing"] is False and data["segments"] == []


async def test_teacher_sets_the_topic_over_signaling(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room("bio"), name="teacher")
    student = await classroom.client(await classroom.token("bio", "stu"), name="student")
    reply = await teacher.request({"type": "set_topic", "topic": "Cell membranes"}, "topic_set")
    assert reply["topic"] == "Cell membranes" and reply["uid"] == "teacher"
    seen = await student.wait_for("topic_set")
    assert seen["topic"] == "Cell membranes"
    with pytest.raises(ClientError) as err:
        await student.request({"type": "set_topic", "topic": "Recess"}, "topic_set")
    assert err.value.code == "FORBIDDEN"
    with pytest.raises(ClientError) as err:
        await teacher.request({"type": "set_topic", "topic": 42}, "topic_set")
    assert err.value.code == "VALIDATION_ERROR"
    late = await classroom.client(await classroom.token("bio", "late"), name="late")
    joined = next(m for m in late.messages if m["type"] == "joined")
    assert joined["room"]["topic"] == "Cell membranes"  # who joins later learns the topic too
    room = await classroom.svc.store.get_room(classroom.org.id, "bio")
    assert classroom.svc.tutor is not None and room is not None
    assert (await classroom.svc.tutor.context(room)).topic == "Cell membranes"
