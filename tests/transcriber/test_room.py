"""A room's job in the transcriber process: never block the feed, drop and count when full; bad packets cost nothing;
only the tracks the server marked `speaker` are transcribed."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from transcriber.room import (
    EARLY_PACKETS,
    EARLY_TRACKS,
    PREROLL_S,
    QUEUE_LIMIT,
    UTTERANCE_BACKLOG,
    OpusDecoder,
    RoomTranscriber,
)


def _tap(executor: ThreadPoolExecutor, heard: list[str]) -> RoomTranscriber:
    async def transcribe(pcm: np.ndarray) -> str:
        return "x"

    async def sink(room_sid: str, uid: str, text: str, started: int, ended: int) -> None:
        heard.append(text)

    return RoomTranscriber("RM_1", transcribe=transcribe, sink=sink, now_ms=lambda: 0, decode_executor=executor)


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    with ThreadPoolExecutor(1) as executor:
        tap = _tap(executor, [])
        tap.track_added("RM_1", {"trackId": "TR_a", "uid": "t", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": True})
        tap.track_added("RM_1", {"trackId": "TR_v", "uid": "t", "kind": "video", "codec": {"mimeType": "video/VP8"}})
        for _ in range(QUEUE_LIMIT + 25):
            tap.rtp("TR_a", b"\x80" * 40, 0.0)  # the worker is not running: nothing drains
        tap.rtp("TR_v", b"\x80" * 40, 0.0)  # video is not queued at all
        assert tap.queue.qsize() == QUEUE_LIMIT and tap.dropped == 25


async def test_garbage_packets_are_survived() -> None:
    decoder = OpusDecoder()
    pcm = decoder.decode([b"\xff\x00garbage", b"", b"\x01" * 3])
    assert pcm.dtype == np.float32 and decoder.errors >= 1  # damaged packets counted, no exception
    heard: list[str] = []
    with ThreadPoolExecutor(1) as executor:
        tap = _tap(executor, heard)
        tap.track_added("RM_1", {"trackId": "TR_a", "uid": "t", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": True})
        tap.start()
        for seq in range(100):  # valid RTP headers around payloads that are not Opus
            header = bytes([0x80, 111]) + seq.to_bytes(2, "big") + (seq * 960).to_bytes(4, "big") + b"\x00\x00\x00\x01"
            tap.rtp("TR_a", header + bytes([seq % 256]) * 30, 0.0)
        tap.rtp("TR_a", b"\x01", 0.0)  # not even an RTP header
        await asyncio.wait_for(tap.stop(), 10)
    assert tap.queue.empty() and tap.segments == len(heard)  # drained and ended cleanly, whatever the noise made


async def test_an_utterance_is_dated_by_its_voice_not_by_its_batch() -> None:
    """Leading and trailing quiet inside a batch are not part of the caption's time (20 ms windows)."""
    said: list[tuple[str, int, int]] = []

    async def transcribe(pcm: np.ndarray) -> str:
        return f"{pcm.size / 16000:.2f}"

    async def sink(room_sid: str, uid: str, text: str, started: int, ended: int) -> None:
        said.append((text, started, ended))

    with ThreadPoolExecutor(1) as executor:
        tap = RoomTranscriber("RM_1", transcribe=transcribe, sink=sink, now_ms=lambda: 0, decode_executor=executor)
        tap.track_added("RM_1", {"trackId": "TR_a", "uid": "t", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": True})
        tap.start()
        voice = (0.1 * np.sin(np.arange(16000) / 3)).astype(np.float32)
        pcm = np.concatenate([np.zeros(4800, np.float32), voice, np.zeros(9600, np.float32)])  # 0.3 s, 1 s, 0.6 s
        await tap._append(tap.tracks["TR_a"], pcm, 10_000)
        await asyncio.wait_for(tap.stop(), 10)
    # dated from the voice to where it ended; Whisper hears the 0.3 s before it (pre-roll) and the pause after
    assert said == [("1.90", 10_300, 11_300)]


async def test_the_quiet_start_of_a_word_in_an_earlier_batch_is_heard() -> None:
    """A soft onset (the "c" of "Clouds") is under the loudness threshold and may arrive in the batch before the
    loud part: Whisper still gets the last PREROLL_S of it, and the caption is still dated by the loud part."""
    heard: list[np.ndarray] = []
    said: list[tuple[int, int]] = []

    async def transcribe(pcm: np.ndarray) -> str:
        heard.append(pcm)
        return "clouds"

    async def sink(room_sid: str, uid: str, text: str, started: int, ended: int) -> None:
        said.append((started, ended))

    with ThreadPoolExecutor(1) as executor:
        tap = RoomTranscriber("RM_1", transcribe=transcribe, sink=sink, now_ms=lambda: 0, decode_executor=executor)
        tap.track_added("RM_1", {"trackId": "TR_a", "uid": "t", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": True})
        tap.start()
        track = tap.tracks["TR_a"]
        onset = np.linspace(0.0, 0.009, 8000, dtype=np.float32)  # 0.5 s rising, every window under SILENCE_RMS
        voice = (0.1 * np.sin(np.arange(16000) / 3)).astype(np.float32)
        await tap._append(track, np.zeros(16000, np.float32), 9_000)  # a second of silence: not kept
        await tap._append(track, onset, 10_000)
        await tap._append(track, np.concatenate([voice, np.zeros(9600, np.float32)]), 10_500)
        await asyncio.wait_for(tap.stop(), 10)
    assert said == [(10_500, 11_500)]
    lead = int(PREROLL_S * 16000)
    assert heard[0].size == lead + 16000 + 9600
    assert np.array_equal(heard[0][:lead], onset[-lead:]) and np.array_equal(heard[0][lead:lead + 16000], voice)


async def test_whisper_far_behind_drops_the_oldest_utterances() -> None:
    with ThreadPoolExecutor(1) as executor:
        tap = _tap(executor, [])  # not started: nothing transcribes
        tap.track_added("RM_1", {"trackId": "TR_a", "uid": "t", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": True})
        track = tap.tracks["TR_a"]
        for _ in range(UTTERANCE_BACKLOG + 5):
            track.pcm, track.started_at = [np.ones(16000, np.float32)], 0
            await tap._flush("TR_a")
        assert tap._utterances.qsize() == UTTERANCE_BACKLOG and tap.utterances_dropped == 5


async def test_packets_before_their_track_are_held_bounded_and_only_a_speakers_kept() -> None:
    with ThreadPoolExecutor(1) as executor:
        tap = _tap(executor, [])  # not started: what is queued stays to be counted
        for i in range(EARLY_PACKETS + 10):
            tap.rtp("TR_a", bytes([0x80, 111]) + i.to_bytes(2, "big") + b"\x00" * 8, 1.0 + i)
        tap.rtp("TR_s", b"\x80" * 40, 2.0)
        assert len(tap.early["TR_a"]) == EARLY_PACKETS and tap.queue.empty()
        tap.track_added("RM_1", {"trackId": "TR_a", "uid": "t", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": True})
        queued = [tap.queue.get_nowait() for _ in range(tap.queue.qsize())]
        assert [at for _, _, at in queued] == [1.0 + i for i in range(10, EARLY_PACKETS + 10)]  # the latest, in order
        tap.track_added("RM_1", {"trackId": "TR_s", "uid": "s", "kind": "audio", "codec": {"mimeType": "audio/opus"},
                                   "speaker": False})
        tap.track_added("RM_1", {"trackId": "TR_v", "uid": "t", "kind": "video", "codec": {"mimeType": "video/VP8"}})
        tap.rtp("TR_v", b"\x80" * 40, 3.0)
        assert tap.queue.empty() and not tap.early  # a student's held packets dropped; a camera's never held
        for n in range(EARLY_TRACKS + 3):  # tracks that never come: at most EARLY_TRACKS held, the newest
            tap.rtp(f"TR_{n}", b"\x80" * 40, 4.0)
        assert list(tap.early) == [f"TR_{n}" for n in range(3, EARLY_TRACKS + 3)]
        tap.track_removed("RM_1", "TR_3")
        assert "TR_3" not in tap.early
