"""The transcriber process's side of the feed (transcriber/__main__.py `serve`): jobs from the server's connection,
packets from any connection (a worker's own), utterances back dated by the packets' arrival, only speakers heard."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from control.sinks.feed import FeedLink
from transcriber.__main__ import Transcribe, serve

OPUS = {"mimeType": "audio/opus", "clockRate": 48000, "channels": 2}


def opus_packets(voice_s: float, quiet_s: float) -> list[bytes]:
    """A 440 Hz tone then silence, as a browser's microphone would send it: 20 ms Opus packets in RTP."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    t = np.arange(int(voice_s * 48000))
    pcm = np.concatenate([(8000 * np.sin(t / 48000 * 2 * np.pi * 440)).astype(np.int16),
                          np.zeros(int(quiet_s * 48000), np.int16)])
    payloads = []
    for i in range(0, pcm.size - 959, 960):
        frame = av.AudioFrame.from_ndarray(pcm[i:i + 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i
        payloads += [bytes(p) for p in enc.encode(frame)]
    return [struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 0x1234) + p for seq, p in enumerate(payloads)]


async def _until(events: list[dict[str, Any]], kind: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events if e.get("t") == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} in {events}")


async def _started(path: Path, transcribe: Transcribe) -> tuple[asyncio.Task[None], list[dict[str, Any]], FeedLink]:
    """A transcriber process serving `path`, the server's connection to it, and job TJ_1 started on it."""
    process = asyncio.create_task(serve(path, transcribe, chunk_s=15.0))
    events: list[dict[str, Any]] = []
    server = FeedLink(events.append)
    for _ in range(500):  # it listens within milliseconds
        try:
            await server.connect(path)
            break
        except OSError:
            await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"the transcriber never listened on {path}")
    server.send({"t": "start", "j": "TJ_1", "room": "RM_1"})
    return process, events, server


async def test_speakers_packets_from_a_media_connection_become_one_dated_utterance(tmp_path: Path) -> None:
    heard: list[float] = []

    async def transcribe(pcm: np.ndarray) -> str:
        heard.append(pcm.size / 16000)
        return f"{pcm.size / 16000:.1f} seconds"

    path = tmp_path / "t.sock"
    process, events, server = await _started(path, transcribe)
    for uid, track, speaker in (("teacher", "TR_t", True), ("ada", "TR_s", False)):
        server.send({"t": "track", "j": "TJ_1", "speaker": speaker,
                     "track": {"trackId": track, "uid": uid, "kind": "audio", "codec": OPUS}})
    server.send({"t": "track", "j": "TJ_1", "speaker": True,  # a camera is never decoded
                 "track": {"trackId": "TR_v", "uid": "teacher", "kind": "video", "codec": {"mimeType": "video/VP8"}}})
    await asyncio.sleep(0.1)
    worker = FeedLink(lambda m: None)  # a worker's connection: media only
    await worker.connect(path)
    base = time.monotonic() - 5.0  # the packets arrived at the SFU a while ago: they date the utterance
    for i, packet in enumerate(opus_packets(2.0, 1.0)):
        for track in ("TR_t", "TR_s"):
            assert worker.send_media({"t": "rtp", "j": "TJ_1", "id": track, "d": packet, "a": base + i * 0.02})
        worker.send_media({"t": "rtp", "j": "TJ_other", "id": "TR_t", "d": packet, "a": base})  # no such job
        if i % 25 == 0:
            await asyncio.sleep(0)
    worker.send_media({"t": "rtp", "j": "TJ_1", "id": "TR_t", "d": "not bytes", "a": base})  # ignored
    await asyncio.sleep(0.5)
    server.send({"t": "stop", "j": "TJ_1"})
    stopped = await _until(events, "stopped")
    segments = [e for e in events if e["t"] == "segment"]
    assert [(s["j"], s["room"], s["uid"]) for s in segments] == [("TJ_1", "RM_1", "teacher")], events
    assert len(heard) == 1  # the student's microphone was never transcribed
    assert abs(segments[0]["started"] - base) < 0.1  # when the voice reached the SFU, not when it was processed
    assert abs(segments[0]["ended"] - segments[0]["started"] - 2.0) < 0.1  # the tone's length, pause left out
    assert stopped == {"t": "stopped", "j": "TJ_1", "segments": 1, "dropped": 0, "utterances_dropped": 0}
    await worker.close()
    await server.close()  # the server's connection ends: so does the process
    await asyncio.wait_for(process, 10)


async def test_a_teachers_first_words_before_the_track_is_announced_are_heard(tmp_path: Path) -> None:
    """A track's message waits on the server's role lookup and, from an SFU worker, comes on another connection:
    its first packets can arrive before it. ci76's transcript lost "Today we" that way. They are held until the
    track says whose they are: the teacher's heard from the first, the student's and the camera's dropped."""
    heard: list[float] = []

    async def transcribe(pcm: np.ndarray) -> str:
        heard.append(pcm.size / 16000)
        return "heard"

    path = tmp_path / "t.sock"
    process, events, server = await _started(path, transcribe)
    worker = FeedLink(lambda m: None)
    await worker.connect(path)
    base = time.monotonic() - 5.0
    packets = opus_packets(2.0, 1.0)
    early = 40  # 0.8 s of the tone, before any track is known
    for i, packet in enumerate(packets[:early]):
        for track in ("TR_t", "TR_s", "TR_v"):
            assert worker.send_media({"t": "rtp", "j": "TJ_1", "id": track, "d": packet, "a": base + i * 0.02})
    await asyncio.sleep(0.3)  # the role lookup, slow on a busy server
    for uid, track, speaker in (("teacher", "TR_t", True), ("ada", "TR_s", False)):
        server.send({"t": "track", "j": "TJ_1", "speaker": speaker,
                     "track": {"trackId": track, "uid": uid, "kind": "audio", "codec": OPUS}})
    server.send({"t": "track", "j": "TJ_1", "speaker": False,
                 "track": {"trackId": "TR_v", "uid": "teacher", "kind": "video", "codec": {"mimeType": "video/VP8"}}})
    await asyncio.sleep(0.1)
    for i, packet in enumerate(packets[early:], early):
        for track in ("TR_t", "TR_s"):
            assert worker.send_media({"t": "rtp", "j": "TJ_1", "id": track, "d": packet, "a": base + i * 0.02})
    await asyncio.sleep(0.5)
    server.send({"t": "stop", "j": "TJ_1"})
    await _until(events, "stopped")
    segments = [e for e in events if e["t"] == "segment"]
    assert [s["uid"] for s in segments] == ["teacher"] and len(heard) == 1, events
    assert abs(segments[0]["started"] - base) < 0.1  # dated from the first packet, held or not
    assert abs(segments[0]["ended"] - segments[0]["started"] - 2.0) < 0.1  # the whole tone
    assert heard[0] >= 2.0
    await worker.close()
    await server.close()
    await asyncio.wait_for(process, 10)
