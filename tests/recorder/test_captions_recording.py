"""Captioned recordings: the teacher's piper-spoken sentences, recorded in composite mode with live transcription on,
give a WebVTT file (its own signed download) whose cues line up with the voice in the MP4, and a mov_text subtitle
track in the MP4 that PyAV reads back."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import av
import numpy as np
import pytest

from control.recording.subtitles import Cue, cues_for, webvtt
from tests.recorder.conftest import Studio, decode_all
from tests.sfu.test_captions import SENTENCES, lesson_wav, word_error_rate
from tests.sfu.test_transcriber import SpeechTrack

CUE_RE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)$")


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """A strict reader of what a player needs: the header, then blocks of [id,] timing line, payload lines."""
    blocks = text.replace("\r\n", "\n").split("\n\n")
    assert blocks[0].startswith("WEBVTT"), blocks[0]
    cues = []
    for block in filter(None, (b.strip("\n") for b in blocks[1:])):
        lines = block.split("\n")
        if not CUE_RE.match(lines[0]):
            lines = lines[1:]  # the cue's identifier
        m = CUE_RE.match(lines[0])
        assert m, block
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
        payload = " ".join(lines[1:])
        assert payload, block
        cues.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, payload))
    return cues


def voiced_spans(audio: list[tuple[float, np.ndarray, int]], gap_s: float = 0.6) -> list[tuple[float, float]]:
    """Where the recording's audio has voice: 20 ms windows over a threshold, joined across gaps under gap_s."""
    times, rms = [], []
    for t, pcm, rate in audio:
        mono = pcm.mean(axis=0) if pcm.ndim == 2 else pcm
        w = rate // 50
        for i in range(0, mono.size - w + 1, w):
            times.append(t + i / rate)
            rms.append(float(np.sqrt(np.mean(mono[i:i + w] ** 2))))
    level = np.array(rms)
    loud = level > max(level.max() * 0.05, 1e-4)
    spans: list[list[float]] = []
    for t, on in zip(times, loud, strict=True):
        if not on:
            continue
        if spans and t - spans[-1][1] <= gap_s:
            spans[-1][1] = t + 0.02
        else:
            spans.append([t, t + 0.02])
    return [(a, b) for a, b in spans if b - a > 0.3]


def test_webvtt_escapes_and_clips() -> None:
    segments = [{"uid": "t", "text": "a < b & c", "started_at": 500, "ended_at": 2500},
                {"uid": "t", "text": "after", "started_at": 9000, "ended_at": 9500}]
    cues = cues_for(segments, {"t": "Marie"}, 1000, 5000)
    assert cues == [Cue(0.0, 1.5, "Marie", "a < b & c")]  # clipped to the recording; the later one is outside
    assert parse_vtt(webvtt(cues)) == [(0.0, 1.5, "<v Marie>a &lt; b &amp; c")]


@pytest.mark.parametrize("mode", ["composite", "track"])
async def test_a_recording_gets_webvtt_and_a_composite_a_mov_text_track(studio: Studio, mode: str) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    status, _ = await studio.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "physics-1"})
    assert status == 200
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                     {"options": {"preset": "H264_720P_30", "showLogo": False, "mode": mode}})
    assert status == 200, body
    egress = body["data"]["egressId"]
    if mode == "composite":  # composite is active at once; track mode when the first track arrives
        await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    wav, _ = lesson_wav()
    await teacher.publish({"microphone": SpeechTrack(wav)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = await studio.rest("GET", "/v1/room/physics-1/transcript")
        if len(body["data"]["segments"]) >= len(SENTENCES):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    status, _ = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")

    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings/download")
    assert status == 200, body
    files = body["data"]["files"]
    assert sorted(f["filename"][-4:] for f in files) == [".mp4", ".vtt"]  # track mode: the one microphone
    mp4_entry = next(f for f in files if f["filename"].endswith(".mp4"))
    vtt_entry = next(f for f in files if f["filename"].endswith(".vtt"))
    assert mp4_entry["filename"].startswith(vtt_entry["filename"][:-4])  # the recording's name, next to its MP4s
    assert vtt_entry["downloadUrl"] != mp4_entry["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(
            vtt_entry["downloadUrl"].replace(studio.svc.config.base_url, studio.base)) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/vtt")
        vtt = await resp.text()
    cues = parse_vtt(vtt)
    heard = " ".join(re.sub(r"^<v [^>]*>", "", c[2]) for c in cues)
    assert word_error_rate(" ".join(SENTENCES), heard) < 0.2, vtt
    assert all(c[2].startswith("<v Marie>") for c in cues)

    # The cues line up with the voice in the recording's own audio, within a second.
    path = studio.file_path(egress, "composite" if mode == "composite" else "microphone")
    assert (path.parent / "captions.vtt").read_text(encoding="utf-8") == vtt  # next to the MP4
    info = decode_all(path)
    duration = info["audio"][-1][0]
    assert all(0 <= start < end <= duration + 0.1 for start, end, _ in cues), (cues, duration)  # inside the file
    spans = voiced_spans(info["audio"])
    assert len(spans) == len(cues) == len(SENTENCES), (spans, cues)
    for (start, end, _), (a, b) in zip(cues, spans, strict=True):
        assert abs(start - a) < 1.0 and abs(end - b) < 1.0, (cues, spans)

    if mode == "track":
        with av.open(str(path)) as c:
            assert [s.codec_context.name for s in c.streams] == ["opus"]  # a track file stays one track
        return
    # The composite MP4 carries the same cues as a mov_text track, read back with PyAV.
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio", "subtitle"]
        sub = c.streams.subtitles[0]
        assert sub.codec_context.name == "mov_text"
        samples = [(float(p.pts * p.time_base), float(p.duration * p.time_base), bytes(p)[2:].decode())
                   for p in c.demux(sub) if p.size > 2]
    assert [s[2] for s in samples] == ["Marie: " + re.sub(r"^<v [^>]*>", "", c[2]) for c in cues]
    for (start, _, _), (pts, _, _) in zip(cues, samples, strict=True):
        assert abs(pts - start) < 0.002
    assert abs(info["video_frames"][-1][0] - info["audio"][-1][0]) < 0.5  # the remux kept the media whole
