"""What a publisher sends that no decoder or player would: the SFU forwards it untouched (it never decodes), so the
recorder meets it first. Each case below made a recording fail, a file that does not open, or gigabytes of memory
(a probe of the recorder with hostile media); each now costs at most the publisher's own frames."""

from __future__ import annotations

import fractions
import re
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.depacketize import MAX_FRAME_BYTES, Frame, H264Depacketizer, RtpPacket, Vp8Depacketizer
from recorder.job import QUEUE_LIMIT, Job
from recorder.mux import MAX_PIXELS, CompositeSink, TrackInfo, TrackSink
from tests.recorder.test_feed import _h264_frames
from tests.recorder.test_timeline import T0, Placements, _errors, _ntp, _publisher, _rtp, _run, _track

CAMERA = TrackInfo(id="TR_1", uid="mallory", source="camera", kind="video", mime="video/VP8", clock_rate=90000,
                   name="Mallory", role="TEACHER")


def _vp8_frames(width: int, height: int, count: int) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    out = []
    for i in range(count):
        picture = av.VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8), format="rgb24")
        picture.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(picture.reformat(format="yuv420p"))]
    return out + [(bytes(p), p.is_keyframe) for p in enc.encode(None)]


def _decoded_sizes(path: str) -> list[tuple[int, int]]:
    with av.open(path) as c:
        return [(f.width, f.height) for f in c.decode(video=0)]


def test_a_vp8_picture_one_pixel_high_is_recorded_not_the_end_of_the_job(tmp_path: Path) -> None:
    """Its file was to be 64x0: the encoder refused it, the error left the job, and every file of it stopped."""
    events: list[dict] = []
    sink = TrackSink("EG_x", tmp_path, events.append)
    sink.track_added(CAMERA)
    for i, (data, key) in enumerate(_vp8_frames(64, 1, 10)):
        sink.frame(CAMERA, Frame(i * 3000, data, key, 0.0), i / 30)
    [result] = sink.finish(1.0)
    assert [e["t"] for e in events] == ["file", "active"]
    assert set(_decoded_sizes(result["path"])) == {(64, 2)}


def test_a_claimed_size_past_4k_is_scaled_down_not_encoded(tmp_path: Path) -> None:
    """The SFU takes a VP8 track's size from keyframe headers it never decodes: one header claiming 8192x8192 made
    every picture of the file be encoded at that size (12 s of CPU and 1.4 GB per second of video)."""
    info = TrackInfo(**{**CAMERA.__dict__, "size": (8192, 8192)})
    sink = TrackSink("EG_x", tmp_path, lambda m: None)
    sink.track_added(info)
    for i, (data, key) in enumerate(_vp8_frames(320, 240, 10)):
        sink.frame(info, Frame(i * 3000, data, key, 0.0), i / 30)
    [result] = sink.finish(1.0)
    [(width, height)] = set(_decoded_sizes(result["path"]))
    assert width * height <= MAX_PIXELS and width == height  # the claimed shape, scaled down to 4K's pixels


def test_a_first_keyframe_an_mp4_cannot_describe_is_refused_and_another_asked_for(tmp_path: Path) -> None:
    """32 SPS in the first keyframe: the decoder took it, the muxer wrote an empty avcC, and the finished file,
    reported as good, did not open."""
    first, second = _h264_frames(320, 240, 5, 0), _h264_frames(320, 240, 30, 5)
    sps = re.search(rb"\x00\x00\x00\x01(\x67[^\x00]*)", first[0][0])
    assert sps is not None
    first[0] = (sps.group(0) * 31 + first[0][0], True)
    events: list[dict] = []
    info = TrackInfo(**{**CAMERA.__dict__, "mime": "video/H264"})
    sink = TrackSink("EG_x", tmp_path, events.append)
    sink.track_added(info)
    for i, (data, key) in enumerate(first + second):
        sink.frame(info, Frame(i * 3000, data, key, 0.0), i / 30)
    [result] = sink.finish(2.0)
    assert events[0] == {"t": "keyframe", "j": "EG_x", "id": "TR_1"}
    assert _decoded_sizes(result["path"]) == [(320, 240)] * 30


def test_a_picture_that_never_ends_is_dropped_at_its_bound() -> None:
    """One timestamp and no marker: the depacketizers kept every byte (240 MB and growing in the probe)."""
    h264, vp8 = H264Depacketizer(), Vp8Depacketizer()
    chunk = bytes(1200)
    h264.push(RtpPacket(0, 0, False, b"\x7c\x85" + chunk, 0.0), False)  # FU-A start of an IDR
    for seq in range(1, 2 * MAX_FRAME_BYTES // len(chunk)):
        h264.push(RtpPacket(seq, 0, False, b"\x7c\x05" + chunk, 0.0), False)
        vp8.push(RtpPacket(seq, 0, False, (b"\x10" if seq == 1 else b"\x00") + chunk, 0.0), False)
        assert h264.held <= MAX_FRAME_BYTES and vp8.held <= MAX_FRAME_BYTES
    assert len(h264.fu or b"") + sum(map(len, h264.nals)) <= MAX_FRAME_BYTES
    assert sum(map(len, vp8.parts)) <= MAX_FRAME_BYTES
    # The broken picture is dropped when the next one begins, and the next keyframe is taken.
    sps, idr = b"\x67\x42\x00\x1f\x00", b"\x65\x88\x84" + bytes(30)
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(idr).to_bytes(2, "big") + idr
    [frame] = h264.push(RtpPacket(99999, 3000, True, stap, 0.1), False)
    assert frame.keyframe and frame.timestamp == 3000


def test_a_flood_of_pictures_holds_one_per_output_frame(tmp_path: Path) -> None:
    """600 pictures a second waited in memory until their frame came: 2.8 GB for 3 s of 1080p in the probe."""
    sink = CompositeSink("EG_x", tmp_path, lambda m: None, "grid", "H264_720P_30", None)
    info = TrackInfo(**{**CAMERA.__dict__, "mime": "video/H264"})
    sink.track_added(info)
    frames = _h264_frames(160, 120, 120, 0)
    for i, (data, key) in enumerate(frames):
        sink.frame(info, Frame(i * 150, data, key, 0.0), 1.0 + i / 600)  # 120 pictures in 0.2 s
    assert len(sink.videos["TR_1"].pending) == 7  # one per 1/30 s slot
    sink.finish(0.5)


@pytest.mark.parametrize("jump", [3600, -3600])
def test_frames_placed_far_from_their_arrival_are_left_out(jump: int) -> None:
    """An RTP timestamp that jumped an hour: ahead, a track file became an hour of frozen picture, and a composite
    held every later picture in memory (40 MB a second at 720p); behind, a track file's frames were squeezed one
    tick apart."""
    job = Job({"j": "EG_t", "t0": T0, "mode": "track", "dir": "/nonexistent"}, lambda m: None, threaded=False)
    sink = job.sink = Placements()  # type: ignore[assignment]
    job._handle(_track("TR_cam", "camera", "video", "video/H264", 90000))
    sps, idr = b"\x67\x42\x00\x1f\x00", b"\x65\x88\x84" + bytes(30)
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(idr).to_bytes(2, "big") + idr
    for i in range(90):
        moved = jump * 90000 if i >= 45 else 0
        job._handle({"t": "rtp", "j": "EG_t", "id": "TR_cam", "a": T0 + i / 30,
                     "d": _rtp(2, 102, i, i * 3000 + moved, stap)})
    job._finish(T0 + 3.0)
    placed = [seconds for _, seconds in sink.placed["TR_cam"]]
    assert len(placed) == 45 and 0 <= min(placed) and max(placed) < 2.0
    assert job.tracks["TR_cam"].misplaced == 45


def test_one_sender_report_from_the_future_moves_nothing() -> None:
    """One camera report whose NTP time is an hour ahead lowered the publisher's tie by an hour: the microphone was
    placed an hour early and left out of the file from then on. A report alone is left out now; every frame of
    both tracks stays within 25 ms of where it belongs."""
    messages = _publisher((T0, T0), seconds=6.0, mic_report_at=T0 + 1.0)
    bogus = T0 + 2.0
    messages.append((bogus, {"t": "sr", "j": "EG_t", "id": "TR_cam", "ntp": _ntp(bogus + 3600),
                             "rtp": round((bogus - 90.0) * 90000), "a": bogus}))
    messages.sort(key=lambda item: item[0])
    sink = _run(messages)
    assert len(sink.placed["TR_mic"]) >= 295  # 6 s of 20 ms packets
    assert max(_errors(sink).values()) < 0.025


def test_a_job_far_behind_drops_its_own_media_instead_of_holding_the_reader(tmp_path: Path) -> None:
    """One job's full inbox blocked the socket reader that serves every job of the connection (all the rooms of an
    SFU worker), so a publisher that made its own recording slow stalled the others. Media past the bound is
    dropped and counted; what is not media still waits for room, so no stop or track is lost."""
    import threading

    job = Job({"j": "EG_t", "t0": T0, "mode": "track", "dir": str(tmp_path)}, lambda m: None, threaded=False)
    message = {"t": "rtp", "j": "EG_t", "id": "TR_cam", "a": T0, "d": _rtp(2, 102, 0, 0, b"\x65")}
    reader = threading.Thread(target=lambda: [job.put(message) for _ in range(QUEUE_LIMIT + 500)], daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "the reader blocked on a job that does not keep up"
    assert job.dropped == 500 and job.inbox.qsize() == QUEUE_LIMIT
    job.inbox.get_nowait()
    job.put({"t": "stop", "j": "EG_t"})  # room for it: taken, never dropped
    assert job.inbox.qsize() == QUEUE_LIMIT and job.dropped == 500
