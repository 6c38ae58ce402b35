"""Real recordings: aiortc publishers through the SFU, the recorder process writing MP4, PyAV reading it back."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import av
import numpy as np

from control.recordings import Recordings
from sfu.client import ToneAudioTrack
from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio, decode_all, first_bright, first_loud

RED, BLUE, GREEN = (220, 30, 30), (30, 40, 220), (30, 200, 60)
NAME = (52, 58, 74)  # a name tile's background
MARKERS = (7.0, 15.0)  # clip seconds; the clip starts just before publishing, the recording a little later


async def _record(studio: Studio, seconds: float, options: dict[str, object], room: str = "physics-1") -> str:
    status, body = await studio.rest("POST", f"/v1/room/{room}/recording/start", {"options": options})
    assert status == 200, body
    assert body["data"]["status"] == "EGRESS_STARTING" and body["data"]["egressId"].startswith("EG_")
    await asyncio.sleep(seconds)
    status, body = await studio.rest("POST", f"/v1/room/{room}/recording/stop")
    assert status == 200, body
    egress = body["data"]["egressId"]
    job = await studio.wait_status(room, egress, "EGRESS_COMPLETE", "EGRESS_FAILED")
    assert job["status"] == "EGRESS_COMPLETE", job
    return egress


def _marker_offsets(video: list[tuple[float, np.ndarray]], audio: list, region: tuple[slice, slice]) -> list[tuple]:
    found = []
    after = 0.0
    for _ in MARKERS:
        tv = first_bright(video, after, region)
        ta = first_loud(audio, after)
        found.append((tv, ta))
        after = max(tv, ta) + 1.0
    return found


async def test_composite_20_s_is_h264_aac_complete_and_in_sync(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    clip = MarkerClip(MARKERS, color=RED)
    await teacher.publish({"camera": ClipVideo(clip), "microphone": ClipAudio(clip)})
    egress = await _record(studio, 20.0, {"preset": "H264_720P_30", "layout": "grid"})
    path = studio.file_path(egress)
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height) == ("h264", 1280, 720)
        assert (a.codec_context.name, a.sample_rate, a.channels) == ("aac", 48000, 2)
        assert abs(float(v.average_rate) - 30) < 0.5
    info = decode_all(path)  # every frame decodes
    frames = info["video_frames"]
    duration = frames[-1][0] + 1 / 30
    assert abs(duration - 20.0) <= 0.5, duration
    assert abs(len(frames) - 30 * duration) <= 2
    assert abs(info["audio"][-1][0] - 20.0) <= 0.5
    tile = (slice(300, 420), slice(580, 700))  # the teacher's tile is centred (one tile fills the frame)
    offsets = _marker_offsets(frames, info["audio"], tile)
    for tv, ta in offsets:
        assert abs(tv - ta) < 0.1, offsets  # lip sync
    # The two markers are 8 s apart in the clip and in the recording (timestamps are continuous).
    assert abs((offsets[1][0] - offsets[0][0]) - 8.0) < 0.1, offsets
    # Outside markers the teacher's camera is there, red, never a green or frozen frame.
    assert np.abs(frames[len(frames) // 2 + 15][1][360, 640].astype(int) - RED).max() < 40


async def test_track_mode_20_s_keeps_h264_and_opus_without_reencoding(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    clip = MarkerClip(MARKERS, color=RED)
    await teacher.publish({"camera": ClipVideo(clip), "microphone": ClipAudio(clip)})
    egress = await _record(studio, 20.0, {"mode": "track"})
    camera, microphone = studio.file_path(egress, "camera"), studio.file_path(egress, "microphone")
    video, audio = decode_all(camera), decode_all(microphone)
    assert video["codecs"] == ["h264"] and audio["codecs"] == ["opus"]
    with av.open(str(camera)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (320, 240)  # as published: no re-encode
    frames = video["video_frames"]
    assert abs(frames[-1][0] - frames[0][0] - 20.0) <= 0.5
    assert abs(audio["audio"][-1][0] - audio["audio"][0][0] - 20.0) <= 0.5
    offsets = _marker_offsets(frames, audio["audio"], (slice(None), slice(None)))
    for tv, ta in offsets:  # the two files share the recording's timeline
        assert abs(tv - ta) < 0.1, offsets
    assert abs((offsets[1][0] - offsets[0][0]) - 8.0) < 0.1, offsets
    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings/download")
    names = sorted(f["filename"] for f in body["data"]["files"])
    assert len(names) == 2 and names[0].endswith("-teacher-camera.mp4") and names[1].endswith("-microphone.mp4")


def _center(frame: np.ndarray, x: int, y: int) -> np.ndarray:
    return frame[y - 4:y + 4, x - 4:x + 4].reshape(-1, 3).mean(axis=0)


def _close(color: np.ndarray, expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.abs(color - np.array(expected)).max() < tolerance)


async def _publisher(studio: Studio, uid: str, role: str, tracks: dict) -> None:
    client = await studio.client(await studio.token("physics-1", uid, role), name=uid)
    await client.publish(tracks)


def _logo_png(path: Path) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 64, 32, "rgba"
        image = np.zeros((32, 64, 4), np.uint8)
        image[:, :] = (255, 230, 0, 255)
        frame = av.VideoFrame.from_ndarray(image, format="rgba")
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)


async def test_grid_tiles_publishers_names_absent_cameras_and_watermarks_the_logo(studio: Studio,
                                                                                  tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    _logo_png(logo)
    await studio.svc.store.set_branding(studio.org.id, logo_url=logo.as_uri())
    teacher = await studio.client(await studio.create_room(), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=RED)), "microphone": ClipAudio(MarkerClip())})
    await _publisher(studio, "second", "TEACHER", {"camera": ClipVideo(MarkerClip(color=BLUE))})
    await _publisher(studio, "ada", "ADMIN", {"microphone": ClipAudio(MarkerClip())})  # no camera
    egress = await _record(studio, 4.0, {"preset": "H264_720P_30", "layout": "grid", "showLogo": True})
    frame = decode_all(studio.file_path(egress))["video_frames"][-5][1]
    # Three tiles: 2 columns x 2 rows of 640x360, in the order the publishers joined.
    assert _close(_center(frame, 320, 180), RED)
    assert _close(_center(frame, 960, 180), BLUE)
    name_tile = frame[360:720, 0:640]
    assert _close(_center(frame, 40, 400), NAME, 12)  # the name tile's background, not green or black
    assert (name_tile.min(axis=2) > 200).sum() > 200  # the name written in white
    assert _close(_center(frame, 960, 540), (24, 24, 24), 12)  # the empty fourth cell
    # The logo (yellow, 80% opaque) sits in the top-right corner: 120x60 at 18 px from the edges.
    assert _close(_center(frame, 1280 - 18 - 60, 18 + 30), (255, 230, 0), 70)


async def test_speaker_puts_the_screen_share_large_and_cameras_small_at_1080p(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=RED)),
                           "screen": ClipVideo(MarkerClip(color=GREEN, size=(640, 360)), fps=10)})
    await _publisher(studio, "second", "TEACHER", {"camera": ClipVideo(MarkerClip(color=BLUE))})
    egress = await _record(studio, 4.0, {"preset": "H264_1080P_30", "layout": "speaker", "showLogo": False})
    path = studio.file_path(egress)
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (1920, 1080)
    frame = decode_all(path)["video_frames"][-5][1]
    assert _close(_center(frame, 960, 432), GREEN)  # the screen share fills the top four fifths
    # Cameras in the bottom strip (216 px high, tiles 384 px wide, centred): red then blue.
    assert _close(_center(frame, 768, 972), RED)
    assert _close(_center(frame, 1152, 972), BLUE)
    assert _close(_center(frame, 200, 972), (24, 24, 24), 12)


async def test_vp8_publisher_gives_a_playable_h264_mp4(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=BLUE))}, video_codec="video/VP8")
    egress = await _record(studio, 4.0, {"mode": "track"})
    info = decode_all(studio.file_path(egress, "camera"))
    assert info["codecs"] == ["h264"]  # VP8 is transcoded, never put in an MP4
    assert len(info["video_frames"]) > 60
    assert _close(_center(info["video_frames"][-1][1], 160, 120), BLUE)


async def test_sigkill_leaves_a_decodable_file_and_a_failed_job(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=RED)), "microphone": ClipAudio(MarkerClip())})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                     {"options": {"preset": "H264_720P_30"}})
    egress = body["data"]["egressId"]
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    await asyncio.sleep(6.0)
    recordings: Recordings = studio.recordings
    pid = recordings.supervisor.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    job = await studio.wait_status("physics-1", egress, "EGRESS_FAILED", "EGRESS_COMPLETE")
    assert job["status"] == "EGRESS_FAILED" and "exited" in job["error"]
    info = decode_all(studio.file_path(egress))  # plays up to its last fragment, every frame decodes
    assert info["codecs"] == ["aac", "h264"]
    assert len(info["video_frames"]) >= 30 * 2  # output lags 2 s behind live, fragments every second
    assert job["files"][0]["size"] > 0 and job["files"][0]["duration"] >= 2
    # The supervisor restarted the recorder: recording works again.
    for _ in range(100):
        if recordings.supervisor.running and recordings.supervisor.pid != pid:
            break
        await asyncio.sleep(0.1)
    assert recordings.supervisor.pid not in (None, pid)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {})
    assert status == 200, body


async def test_screen_share_start_stop_and_teacher_rejoin_give_one_continuous_file(studio: Studio) -> None:
    token = await studio.create_room()
    teacher = await studio.client(token, name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=RED)), "microphone": ClipAudio(MarkerClip())})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                      {"options": {"preset": "H264_720P_30", "layout": "speaker"}})
    egress = body["data"]["egressId"]
    await asyncio.sleep(2)
    await teacher.publish({"screen": ClipVideo(MarkerClip(color=GREEN, size=(640, 360)), fps=10)})
    await asyncio.sleep(3)
    await teacher.send({"type": "unpublish", "source": "screen"})
    await asyncio.sleep(1.5)
    await teacher.leave()
    await asyncio.sleep(1.5)
    back = await studio.client(token, name="teacher-again")
    await back.publish({"camera": ClipVideo(MarkerClip(color=BLUE)), "microphone": ClipAudio(MarkerClip())})
    await asyncio.sleep(3)
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    info = decode_all(studio.file_path(egress))
    times = [t for t, _ in info["video_frames"]]
    steps = np.diff(times)
    assert np.allclose(steps, 1 / 30, atol=1e-3)  # one picture every 1/30 s from start to end, no gap, no jump
    audio_seconds = sum(pcm.shape[-1] / rate for _, pcm, rate in info["audio"])
    assert abs(audio_seconds - (times[-1] + 1 / 30)) < 0.1  # audio continuous over the same span
    assert abs(job["duration"] - (times[-1] + 1 / 30)) < 0.1
    seen = [(t, _center(f, 640, 288)) for t, f in info["video_frames"]]
    shared = [t for t, c in seen if _close(c, GREEN)]
    # The share, large, for its 3 s less the wait for its first keyframe after publishing.
    assert shared and 1.5 < max(shared) - min(shared) < 3.5
    red = [t for t, c in seen if _close(c, RED)]
    blue = [t for t, c in seen if _close(c, BLUE)]
    # The camera before and after the share, the teacher's name while away, the new camera after the rejoin.
    assert red and blue and min(red) < min(shared) < max(shared) < max(red) < min(blue)
    away = [t for t, f in info["video_frames"] if max(red) < t < min(blue) and _close(_center(f, 20, 20), NAME, 12)]
    assert away and max(away) - min(away) > 1.0


async def test_a_moderator_mute_leaves_the_microphone_out_of_the_recording(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=RED)), "microphone": ToneAudioTrack()})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                     {"options": {"preset": "H264_720P_30", "showLogo": False}})
    egress = body["data"]["egressId"]
    await asyncio.sleep(2.5)
    t_mute = (await studio.recordings.svc.store.get_recording(egress)).started_at  # type: ignore[union-attr]
    status, _ = await studio.rest("POST", "/v1/room/physics-1/participants/teacher/mute")
    assert status == 200
    muted_at = studio.svc.clock.now_ms() - t_mute
    await asyncio.sleep(2.5)
    await studio.rest("POST", "/v1/room/physics-1/participants/teacher/unmute")
    unmuted_at = studio.svc.clock.now_ms() - t_mute
    await asyncio.sleep(2.5)
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    audio = decode_all(studio.file_path(egress))["audio"]

    def loudness(start: float, end: float) -> float:
        parts = [np.abs(pcm).max() for t, pcm, _ in audio if start <= t < end]
        return float(max(parts)) if parts else 0.0

    before, during, after = muted_at / 1000, (muted_at + unmuted_at) / 2000, unmuted_at / 1000
    assert loudness(before - 1.5, before - 0.3) > 0.1  # the tone is there
    assert loudness(during - 0.5, during + 0.5) < 0.01  # silent while muted
    assert loudness(after + 0.5, after + 1.5) > 0.1  # back after the unmute


async def test_a_muted_camera_shows_the_name_not_a_frozen_picture(studio: Studio) -> None:
    teacher = await studio.client(await studio.create_room(), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip(color=RED)), "microphone": ClipAudio(MarkerClip())})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                     {"options": {"preset": "H264_720P_30", "showLogo": False}})
    egress = body["data"]["egressId"]
    await asyncio.sleep(2.5)
    await teacher.send({"type": "mute", "source": "camera", "muted": True})  # the client keeps sending pictures
    await asyncio.sleep(2.5)
    await teacher.send({"type": "mute", "source": "camera", "muted": False})
    await asyncio.sleep(2.5)
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    frames = decode_all(studio.file_path(egress))["video_frames"]
    kinds = ["red" if _close(_center(f, 640, 360), RED) else "name" if _close(_center(f, 200, 40), NAME, 12)
             else "other" for _, f in frames]
    runs = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert runs[-3:] == ["red", "name", "red"], runs  # camera, the name while muted, the camera again
    assert kinds.count("name") > 30  # the name for at least a second of the mute, never the last picture frozen
