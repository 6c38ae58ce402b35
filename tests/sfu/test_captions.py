"""Live captions: the teacher's spoken sentences reach every participant as `caption` messages, in order, with the
right words, on the class clock; a participant joining late finds the recent ones in `joined`."""

from __future__ import annotations

import io
import os
import re
import signal
import time
import wave

import numpy as np

from control.metrics import LiveCollector
from tests.control.tutor_fixtures import speak
from tests.sfu.conftest import Classroom
from tests.sfu.test_transcriber import SpeechTrack

SENTENCES = [
    "Today we study the water cycle.",
    "Water evaporates from the ocean and rises into the sky.",
    "Clouds bring the rain back to the ground.",
]
PAUSE_S = 1.5


def lesson_wav(sentences: list[str] = SENTENCES, pause_s: float = PAUSE_S) -> tuple[bytes, list[tuple[float, float]]]:
    """The sentences spoken one after the other with a pause between, and where each one's voice starts and ends
    in the WAV (seconds; from the samples themselves, not the synthesizer's promise)."""
    pcm: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    rate = 0
    at = 0
    for text in sentences:
        with wave.open(io.BytesIO(speak(text))) as w:
            rate = w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        loud = np.flatnonzero(np.abs(samples) > 500)
        spans.append(((at + loud[0]) / rate, (at + loud[-1]) / rate))
        gap = np.zeros(int(pause_s * rate), dtype=np.int16)
        pcm += [samples, gap]
        at += samples.size + gap.size
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate(pcm).tobytes())
    return buf.getvalue(), spans


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words / reference length (substitutions, insertions and deletions)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def test_word_error_rate_counts_edits() -> None:
    assert word_error_rate("the water cycle", "the water cycle") == 0
    assert word_error_rate("the water cycle", "a water cycle") == 1 / 3
    assert word_error_rate("the water cycle", "water cycle today now") == 1.0


async def test_captions_reach_every_participant_in_order_and_late_joiners_get_them(classroom: Classroom) -> None:
    token = await classroom.create_room("earth")
    status, _ = await classroom.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "earth"})
    assert status == 200
    teacher = await classroom.client(token, name="teacher")
    student = await classroom.client(await classroom.token("earth", "stu"), name="student")
    wav, spans = lesson_wav()
    published_at = time.time()
    await teacher.publish({"microphone": SpeechTrack(wav)})
    room = await classroom.svc.store.get_room(classroom.org.id, "earth")
    assert room is not None and room.started_at is not None
    captions: list[dict] = []  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "ground" not in " ".join(c["text"] for c in captions).lower():
        await student.wait_for("caption", since=len(student.messages), timeout=deadline - time.monotonic())
        captions = [m for m in student.messages if m["type"] == "caption"]
    heard = " ".join(c["text"] for c in captions)
    spoken = " ".join(SENTENCES)
    wer = word_error_rate(spoken, heard)
    assert wer < 0.2, (wer, heard)
    assert [c for c in teacher.messages if c["type"] == "caption"] == captions  # everyone gets the same captions
    for c in captions:
        assert c["uid"] == "teacher" and c["name"] == "Marie" and c["final"] is True
        assert 0 <= c["start"] < c["end"] and c["endedAt"] - c["startedAt"] == round((c["end"] - c["start"]) * 1000)
        assert c["startedAt"] >= room.started_at and c["endedAt"] <= classroom.svc.clock.now_ms()
    assert [c["start"] for c in captions] == sorted(c["start"] for c in captions)
    # In order: each sentence is heard after the previous one, placed by the last of its own words (in no other
    # sentence) that Whisper heard; a WER under 0.2 may still miss one word, such as a sentence's last.
    heard_words = words(heard)
    positions = []
    for i, sentence in enumerate(SENTENCES):
        others = {w for j, t in enumerate(SENTENCES) if j != i for w in words(t)}
        found = [k for k, w in enumerate(heard_words) if w in set(words(sentence)) - others]
        assert found, (sentence, heard)
        positions.append(found[-1])
    assert positions == sorted(positions), heard
    # Dated by when the voice arrived, not by when Whisper finished: the gaps between captions are the WAV's.
    assert len(captions) == len(SENTENCES), heard
    for c, (start, end) in zip(captions, spans, strict=True):
        assert abs((c["start"] - captions[0]["start"]) - (start - spans[0][0])) < 0.5, (c, start)
        assert abs((c["end"] - c["start"]) - (end - start)) < 0.5, (c, start, end)
    assert captions[0]["startedAt"] >= published_at * 1000

    late = await classroom.client(await classroom.token("earth", "late"), name="late")
    assert late.joined is not None
    assert late.joined["captions"] == [{k: v for k, v in c.items()} for c in captions]


async def test_captions_go_on_after_the_transcriber_process_is_killed(classroom: Classroom) -> None:
    """The transcriber is a process of its own: SIGKILLed mid-class, it is restarted and the room is transcribed
    again (what was said while it was down is lost); the server and the class are untouched."""
    token = await classroom.create_room("rain")
    status, _ = await classroom.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "rain"})
    assert status == 200
    teacher = await classroom.client(token, name="teacher")
    wav, _ = lesson_wav(SENTENCES[:1] + SENTENCES[2:], pause_s=10.0)
    await teacher.publish({"microphone": SpeechTrack(wav)})
    tutor = classroom.svc.tutor
    assert tutor is not None
    first = await teacher.wait_for("caption", timeout=60)
    assert "cycle" in words(first["text"]) or "water" in words(first["text"]), first
    supervisor = tutor.transcription.supervisor
    pid = supervisor.pid
    assert pid is not None and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    since = len(teacher.messages)
    deadline = time.monotonic() + 60
    heard = ""
    while time.monotonic() < deadline and "ground" not in heard:
        await teacher.wait_for("caption", since=since, timeout=deadline - time.monotonic())
        heard = " ".join(m["text"] for m in teacher.messages[since:] if m["type"] == "caption").lower()
        since = len(teacher.messages)
    assert word_error_rate(SENTENCES[2], heard) < 0.3, heard  # the sentence after the restart, in the new process
    assert supervisor.restarts == 1 and supervisor.pid not in (None, pid)
    collector = LiveCollector()  # what /metrics says of it
    collector.transcription = tutor.transcription
    seen = {sample.name: sample.value for family in collector.collect() for sample in family.samples
            if sample.name.startswith("classcast_transcriber")}
    assert seen == {"classcast_transcriber_rooms": 1, "classcast_transcriber_up": 1,
                    "classcast_transcriber_restarts_total": 1}
    room = await classroom.svc.store.get_room(classroom.org.id, "rain")
    assert room is not None and list(tutor.transcribers) == [room.sid]
