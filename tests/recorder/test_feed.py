"""The feed never slows forwarding, and depacketizing survives loss and reordering."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from control.sinks.feed import MEDIA_QUEUE_LIMIT, FeedLink, FeedTap
from recorder.depacketize import H264Depacketizer, Reorder
from recorder.layout import fit, grid, speaker
from recorder.timeline import TrackClock


async def test_a_dead_or_slow_recorder_costs_forwarding_nothing(tmp_path: Path) -> None:
    link = FeedLink(lambda m: None)
    tap = FeedTap(link, "EG_x", {})
    tap.rtp("TR_1", b"x" * 1200, 1.0)  # nobody connected: dropped and counted
    assert link.dropped == 1
    # A recorder that accepts the connection but never reads.
    path = tmp_path / "r.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    await link.connect(path)
    conn, _ = server.accept()
    for i in range(20000):
        tap.rtp("TR_1", b"x" * 1200, float(i))
        if i % 500 == 0:
            await asyncio.sleep(0)  # the event loop runs the writer as it would between packets
    assert link.dropped > 20000 - MEDIA_QUEUE_LIMIT - 8000  # the socket buffer took some; the rest dropped
    assert tap.dropped == link.dropped  # counted per job too (logged when it stops)
    # (tap.rtp is synchronous and never awaits: it cannot wait on the recorder by construction)
    conn.close()
    server.close()
    await link.close()


def _rtp(seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 102, seq & 0xFFFF, ts, 1234) + payload


def _fu(nal: bytes, seq: int, ts: int, size: int = 500) -> list[bytes]:
    header, body = nal[0], nal[1:]
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    out = []
    for i, chunk in enumerate(chunks):
        fu = bytes([(header & 0xE0) | 28, (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
                    | (header & 0x1F)])
        out.append(_rtp(seq + i, ts, fu + chunk, marker=i == len(chunks) - 1))
    return out


def _frames(packets: list[bytes]) -> list:
    reorder, dep = Reorder(window=8), H264Depacketizer()
    frames = []
    for i, p in enumerate(packets):
        for packet, gap in reorder.push(p, float(i)):
            frames += dep.push(packet, gap)
    return frames


def test_h264_loss_never_yields_a_broken_frame_and_reordering_is_repaired() -> None:
    sps, pps = b"\x67" + b"\x01" * 10, b"\x68" + b"\x02" * 4
    idr = b"\x65" + bytes(range(256)) * 8
    p_frame = b"\x41" + b"\x03" * 1500
    stap = _rtp(1, 0, b"\x18" + struct.pack("!H", len(sps)) + sps + struct.pack("!H", len(pps)) + pps)
    key = [stap, *_fu(idr, 2, 0)]
    seq = 2 + len(key) - 1
    p1 = _fu(p_frame, seq, 3000)
    p2 = _fu(p_frame, seq + len(p1), 6000)
    # In order: a keyframe (SPS, PPS, IDR) then two P frames.
    frames = _frames(key + p1 + p2)
    assert [f.keyframe for f in frames] == [True, False, False]
    assert frames[0].data.startswith(b"\x00\x00\x00\x01\x67") and frames[0].data.endswith(idr[-100:])
    # Swapped packets are put back in order.
    swapped = [*key, p1[1], p1[0], *p1[2:], *p2]
    assert [f.timestamp for f in _frames(swapped)] == [0, 3000, 6000]
    # A lost packet in the middle of the first P frame: that frame and the ones depending on it are dropped
    # (no broken picture), and nothing is emitted until the next keyframe.
    lossy = [*key, p1[0], *p1[2:], *p2]
    filler = [_rtp(seq + len(p1) + len(p2) + i, 9000 + 3000 * i, b"\x41\x00", marker=True) for i in range(10)]
    assert [f.timestamp for f in _frames(lossy + filler)] == [0]


def test_sender_reports_put_a_publishers_tracks_on_one_timeline() -> None:
    offsets: dict[str, float] = {}
    t0 = 100.0
    audio, video = TrackClock(48000, t0, offsets, "ada"), TrackClock(90000, t0, offsets, "ada")
    ntp = lambda s: int(s * 2**32)  # noqa: E731
    # The same NTP instant (publisher wall clock 5000.0 s) is RTP 48000 for audio and 900000 for video.
    audio.on_sender_report(ntp(5000.0), 48000, arrival=101.0)
    video.on_sender_report(ntp(5000.5), 900000 + 45000, arrival=101.6)  # its report came later, delayed more
    # Both are mapped through the publisher's first report: 5000.0 NTP == 101.0 monotonic == 1.0 s recorded.
    assert abs(audio.seconds(48000 + 48000, 999.0) - 2.0) < 1e-6
    assert abs(video.seconds(900000 + 90000, 999.0) - 2.0) < 1e-6


def test_layout_geometry() -> None:
    tiles = grid(["a", "b", "c"], 1280, 720)
    assert [(t.x, t.y, t.w, t.h) for t in tiles] == [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360)]
    tiles = speaker("s", ["a", "b"], 1920, 1080)
    assert [(t.key, t.x, t.y, t.w, t.h) for t in tiles] == [
        ("s", 0, 0, 1920, 864), ("a", 576, 864, 384, 216), ("b", 960, 864, 384, 216)]
    assert fit(320, 240, 640, 360) == (80, 0, 480, 360)


def test_ten_minutes_of_clock_drift_stay_within_20_ms() -> None:
    """A publisher whose audio RTP clock runs 0.1% fast (48048 Hz): its sender reports say so every second, and
    the recording time follows the NTP clock (drift would otherwise reach 600 ms in 10 minutes)."""
    offsets: dict[str, float] = {}
    clock = TrackClock(48000, 0.0, offsets, "ada")
    true_rate = 48048.0
    worst = 0.0
    for second in range(600):
        clock.on_sender_report(int((1000.0 + second) * 2**32), int(second * true_rate) & 0xFFFFFFFF, 5.0 + second)
        for frame in range(50):  # 20 ms packets
            t = second + frame * 0.02
            rtp = int(t * true_rate) & 0xFFFFFFFF
            worst = max(worst, abs(clock.seconds(rtp, 5.0 + t) - (5.0 + t)))
    assert worst <= 0.021


def _h264_frames(width: int, height: int, count: int, first_pts: int,
                 bright: frozenset[int] = frozenset()) -> list[tuple[bytes, bool]]:
    """`count` grey frames, white where their index is in `bright`."""
    import fractions

    import av
    import numpy as np

    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = {"preset": "ultrafast", "repeat-headers": "1", "annexb": "1", "bf": "0"}
    out = []
    for i in range(count):
        level = 255 if i in bright else 90
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), level, np.uint8), format="rgb24")
        frame.pts = first_pts + i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(frame.reformat(format="yuv420p"))]
    out += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    return out


def test_track_mode_follows_a_resolution_change_without_reencoding(tmp_path: Path) -> None:
    """A publisher switching from 320x240 to 640x360 (a simulcast layer switch looks the same): one file, both
    sizes decodable, the new parameter sets carried in band."""
    import av

    from recorder.depacketize import Frame
    from recorder.mux import TrackInfo, TrackSink

    events: list[dict] = []
    sink = TrackSink("EG_x", tmp_path, events.append)
    info = TrackInfo(id="TR_1", uid="ada", source="camera", kind="video", mime="video/H264", clock_rate=90000,
                     name="Ada", role="TEACHER")
    sink.track_added(info)
    packets = _h264_frames(320, 240, 30, 0) + _h264_frames(640, 360, 30, 30)
    for i, (data, key) in enumerate(packets):
        sink.frame(info, Frame(i * 3000, data, key, 0.0), i / 30)
    [result] = sink.finish(2.0)
    assert [e["t"] for e in events] == ["file", "active"]
    with av.open(result["path"]) as c:
        sizes = [(f.width, f.height) for f in c.decode(video=0)]
    assert len(sizes) == 60 and sizes[0] == (320, 240) and sizes[-1] == (640, 360)


def test_a_keyframe_the_decoder_refuses_is_skipped_not_the_end_of_the_recording(tmp_path: Path) -> None:
    """A publisher's first keyframe that is not H.264 at all (a buggy or hostile encoder: the SFU never decodes, so
    it reaches the recorder as sent) raised out of the track file's size probe and failed the whole job: every
    track's file of the class was left unfinished. It is dropped; the next good keyframe opens the file."""
    import random

    import av

    from recorder.depacketize import Frame
    from recorder.mux import TrackInfo, TrackSink

    noise = random.Random(7).randbytes
    bad = b"\x00\x00\x00\x01\x67" + noise(20) + b"\x00\x00\x00\x01\x68" + noise(8) + \
        b"\x00\x00\x00\x01\x65" + noise(500)
    events: list[dict] = []
    sink = TrackSink("EG_x", tmp_path, events.append)
    info = TrackInfo(id="TR_1", uid="ada", source="camera", kind="video", mime="video/H264", clock_rate=90000,
                     name="Ada", role="TEACHER")
    sink.track_added(info)
    packets = [(bad, True), (noise(300), False), *_h264_frames(320, 240, 30, 2)]
    for i, (data, key) in enumerate(packets):
        sink.frame(info, Frame(i * 3000, data, key, 0.0), i / 30)
    [result] = sink.finish(2.0)
    assert events[0] == {"t": "keyframe", "j": "EG_x", "id": "TR_1"}  # the publisher is asked for a good one
    assert [e["t"] for e in events[1:]] == ["file", "active"]
    with av.open(result["path"]) as c:
        sizes = [(f.width, f.height) for f in c.decode(video=0)]
    assert len(sizes) == 30 and set(sizes) == {(320, 240)}


@pytest.mark.parametrize("phase", [0.004, 0.012, 0.021, 0.029])
def test_a_composite_shows_a_picture_at_the_output_frame_nearest_its_placement(tmp_path: Path, phase: float) -> None:
    """A camera whose pictures are placed `phase` seconds after the composite's 30 fps output frames: its one white
    picture is in the file within half an output frame of where it was placed (the sound is mixed at sample
    accuracy, so this is the composite's whole share of the A/V offset)."""
    import av

    from recorder.depacketize import Frame
    from recorder.layout import FPS
    from recorder.mux import CompositeSink, TrackInfo

    sink = CompositeSink("EG_x", tmp_path, lambda m: None, "grid", "H264_720P_30", None)
    info = TrackInfo(id="TR_1", uid="ada", source="camera", kind="video", mime="video/H264", clock_rate=90000,
                     name="Ada", role="TEACHER")
    sink.track_added(info)
    flash = phase + 1.0
    for i, (data, key) in enumerate(_h264_frames(320, 240, 45, 0, bright=frozenset({30}))):
        sink.frame(info, Frame(i * 3000, data, key, 0.0), phase + i / 30)
    [result] = sink.finish(1.6)
    with av.open(result["path"]) as c:
        shown = [float(f.time) for f in c.decode(video=0) if f.to_ndarray(format="gray")[300:420, 560:720].mean() > 200]
    assert len(shown) == 1 and abs(shown[0] - flash) <= 0.5 / FPS + 1e-6, (shown, flash)


def test_a_late_first_sender_report_does_not_shift_the_publisher() -> None:
    """The first report waited 1.5 s in a busy loop; the next one arrived at once: frames follow the prompt one."""
    from recorder.timeline import TrackClock

    offsets: dict[str, float] = {}
    clock = TrackClock(90000, t0=100.0, publisher_offsets=offsets, uid="teacher")
    ntp0 = (3_900_000_000 << 32)  # the publisher's NTP time at monotonic 100.0 (the truth)
    clock.on_sender_report(ntp0, 1000, arrival=100.0 + 1.5)  # delayed
    late = clock.seconds(1000 + 90000, arrival=101.5)
    assert abs(late - 2.5) < 0.01  # placed 1.5 s too late while nothing better is known
    clock.on_sender_report(ntp0 + (2 << 32), 1000 + 2 * 90000, arrival=102.0 + 0.01)  # prompt
    assert abs(clock.seconds(1000 + 3 * 90000, arrival=103.0) - 3.0) < 0.02
