"""Audio in and out with the real offline models: piper speaks a question, Whisper hears it, the answer is spoken."""

from __future__ import annotations

import base64
import io
import json
import wave

import av
import numpy as np
import pytest

from control.tutor.speech import BadAudio, decode_audio
from tests.conftest import Api
from tests.control.tutor_fixtures import chat_body, speak


def _transcode(wav: bytes, fmt: str) -> bytes:
    """The same speech as a browser's MediaRecorder would send it: Opus in Ogg or WebM."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as src, av.open(out, "w", format=fmt) as dst:
        stream = dst.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for frame in src.decode(audio=0):
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def test_browser_formats_decode_to_the_same_length() -> None:
    wav = speak("Hello class.")
    ref = decode_audio(wav)
    for fmt in ("ogg", "webm"):
        pcm = decode_audio(_transcode(wav, fmt))
        assert pcm.dtype == np.float32
        assert abs(pcm.size - ref.size) < 16_000 * 0.1, fmt  # within 100 ms (codec delay)
    for junk in (b"", b"RIFF\x00\x00", b"\x00" * 500, b"not audio at all, just words"):
        with pytest.raises(BadAudio):
            decode_audio(junk)


async def test_an_audio_question_gets_a_spoken_answer(tapi: Api) -> None:
    await tapi.create_room("math-101")
    question = _transcode(speak("What is a quadratic equation?"), "webm")
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(
        tapi, text=None, audio=base64.b64encode(question).decode(), responseModality="both"))
    assert status == 200, body
    assert body["requestModality"] == "audio" and body["responseModality"] == "both"
    assert "quadratic equation" in body["inputTranscript"].lower()
    assert "quadratic equation" in body["text"].lower()  # the fake backend answered what Whisper heard
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]))) as w:
        seconds = w.getnframes() / w.getframerate()
        assert w.getnchannels() == 1 and seconds > 1.0
    status, usage = await tapi.get("/v1/ai-tutor/usage/math-101")
    assert usage["usage"] == body["usage"]


async def test_bad_audio_is_400_not_500(tapi: Api) -> None:
    await tapi.create_room("math-101")
    for audio in ("%%% not base64", base64.b64encode(b"OggS garbage that is not a file").decode(), ""):
        status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, text=None, audio=audio))
        assert status == 400, (audio, body)
        assert body["success"] is False
    silence = io.BytesIO()
    with wave.open(silence, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 16000)
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(
        tapi, text=None, audio=base64.b64encode(silence.getvalue()).decode()))
    assert status == 400 and "no speech" in body["message"]


async def test_streamed_spoken_answer_and_a_voice_question_to_the_general_assistant(tapi: Api) -> None:
    await tapi.create_room("math-101")
    resp = await tapi.client.post("/v1/ai-tutor/chat/stream", headers={"VF-ORG-ID": tapi.org.id},
                                  json=chat_body(tapi, text="Say hello", responseModality="audio"))
    frames = [f[len("data: "):] for f in (await resp.text()).split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    audio = json.loads(frames[-3])
    assert audio["audioMimeType"] == "audio/wav" and audio["usage"] is None
    assert base64.b64decode(audio["audio"])[:4] == b"RIFF"
    assert "outputTokens" in json.loads(frames[-2])["usage"]

    question = _transcode(speak("What is a prime number?"), "ogg")
    resp = await tapi.client.post("/v1/ai-agent/chat/stream", headers={"VF-ORG-ID": tapi.org.id}, json={
        "chatId": "chat-1", "audio": base64.b64encode(question).decode(), "responseModality": "text+audio"})
    lines = [json.loads(x) for x in (await resp.text()).splitlines()]
    assert "prime number" in "".join(x["text"] for x in lines if x["type"] == "text").lower()
    assert [x["type"] for x in lines[-3:]] == ["audio", "usage", "done"]
