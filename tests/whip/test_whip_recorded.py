"""A WHIP encoder's tracks are recorded and transcribed like a browser teacher's (issue 20 req 4).

The encoder is sfu/whip_client.py publishing over HTTP; the recording is read back with PyAV and the transcript is
compared with the spoken sentences.
"""

from __future__ import annotations

import asyncio
import time

import av

from sfu.whip_client import WhipClient
from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio, decode_all
from tests.sfu.test_captions import SENTENCES, lesson_wav, word_error_rate
from tests.sfu.test_transcriber import SpeechTrack

INGRESS = {"customization": {"allowIngress": True}}


async def test_a_whip_publisher_is_recorded_in_track_mode(studio: Studio) -> None:
    token = await studio.create_room(**INGRESS)
    encoder = WhipClient(studio.base + "/v1/whip/physics-1", token, ice=studio.svc.config.ice)
    clip = MarkerClip((1.0,))
    await encoder.publish({"camera": ClipVideo(clip), "microphone": ClipAudio(clip)})
    await encoder.wait_connected()
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {"options": {"mode": "track"}})
    assert status == 200, body
    await asyncio.sleep(4.0)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200, body
    egress = body["data"]["egressId"]
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE", "EGRESS_FAILED")
    assert job["status"] == "EGRESS_COMPLETE", job
    camera, microphone = studio.file_path(egress, "camera"), studio.file_path(egress, "microphone")
    video, audio = decode_all(camera), decode_all(microphone)
    assert video["codecs"] == ["h264"] and audio["codecs"] == ["opus"]
    with av.open(str(camera)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (320, 240)
    frames = video["video_frames"]
    assert frames[-1][0] - frames[0][0] > 2.0 and audio["audio"][-1][0] - audio["audio"][0][0] > 2.0
    assert camera.name.endswith("-teacher-camera.mp4"), camera.name
    await encoder.close()


async def test_a_whip_publisher_is_transcribed(studio: Studio) -> None:
    token = await studio.create_room(**INGRESS)
    status, _ = await studio.rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "physics-1"})
    assert status == 200
    wav, _ = lesson_wav()
    encoder = WhipClient(studio.base + "/v1/whip/physics-1", token, ice=studio.svc.config.ice)
    await encoder.publish({"microphone": SpeechTrack(wav)})
    deadline = time.monotonic() + 60
    segments: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        status, body = await studio.rest("GET", "/v1/room/physics-1/transcript")
        segments = body["data"]["segments"]
        if len(segments) >= len(SENTENCES):
            break
        await asyncio.sleep(0.5)
    heard = " ".join(str(s["text"]) for s in segments)
    assert {s["uid"] for s in segments} == {"teacher"}, segments
    assert word_error_rate(" ".join(SENTENCES), heard) < 0.2, heard
    await encoder.close()
