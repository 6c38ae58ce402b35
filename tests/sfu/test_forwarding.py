"""Teachers publish, students receive: real aiortc peers over loopback through the SFU."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from control.signaling import HUB
from sfu.client import Client, SyntheticVideoTrack, ToneAudioTrack
from sfu.peer import aiortc_decoder_threads
from sfu.producer import SPOKEN_KEPT_S, Producer
from sfu.router import Router
from sfu.rtp import parse_rtp
from tests.sfu.conftest import Classroom
from tests.sfu.test_peer_contract import until

# Media in the server process (CLASSCAST_SFU_WORKERS=0): the tests read its routers, producers and peers.
pytestmark = pytest.mark.in_process_sfu("reads the routers, producers and peers (forwarding, NACK, RTCP state)")


async def _frame_size(track, timeout: float = 10) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    frame = await asyncio.wait_for(track.recv(), timeout)
    return frame.width, frame.height


async def _frame_gaps(track, frames: int, timeout: float) -> list[float]:  # type: ignore[no-untyped-def]
    """The wall time between each two of the next `frames` decoded frames (a freeze is a long one)."""
    gaps = []
    last = time.monotonic()
    for _ in range(frames):
        await _frame_size(track, timeout=timeout)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    return gaps


def _router(classroom: Classroom) -> Router:
    routers = classroom.server.app[HUB].sfu.routers
    assert len(routers) == 1
    return next(iter(routers.values()))


def _producer(classroom: Classroom, source: str) -> Producer:
    return next(p for p in _router(classroom).producers.values() if p.source == source)


async def _teacher(classroom: Classroom, screen: bool = True) -> Client:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    tracks = {"camera": SyntheticVideoTrack(320, 240), "microphone": ToneAudioTrack()}
    if screen:
        tracks["screen"] = SyntheticVideoTrack(640, 360, fps=10)
    await teacher.publish(tracks)
    return teacher


async def test_three_students_see_camera_and_screen_and_hear_audio(classroom: Classroom) -> None:
    teacher = await _teacher(classroom)
    students = [await classroom.client(await classroom.token("physics-1", f"s{i}"), name=f"s{i}")
                for i in range(3)]
    for student in students:
        assert await _frame_size(await student.remote_track("camera")) == (320, 240)
        assert await _frame_size(await student.remote_track("screen")) == (640, 360)
        audio = await student.remote_track("microphone")
        loud = 0.0
        for _ in range(25):  # the first frames may be decoder warm-up silence
            frame = await asyncio.wait_for(audio.recv(), 10)
            loud = max(loud, float(np.abs(frame.to_ndarray()).max()))
        assert loud > 1000, "the 440 Hz tone should be audible"
    # H.264 is preferred for the teacher's camera and screen (MP4 recordings without transcoding).
    assert _producer(classroom, "camera").codec.mime_type == "video/H264"
    assert _producer(classroom, "screen").codec.mime_type == "video/H264"
    assert _producer(classroom, "microphone").codec.mime_type == "audio/opus"
    # Each track is labelled with its source for everyone.
    infos = {(r.info["uid"], r.info["source"]) for r in students[0].remote.values()}
    assert infos == {("teacher", "camera"), ("teacher", "microphone"), ("teacher", "screen")}
    # No decoder ever ran in the SFU's peers: every decoder thread in this process is a client's.
    router = _router(classroom)
    for participant in router.participants.values():
        for t in participant.peer.pc.getTransceivers():
            assert t.receiver._RTCRtpReceiver__decoder_thread is None  # type: ignore[attr-defined]
            assert not t.receiver._RTCRtpReceiver__started  # type: ignore[attr-defined]
    client_receivers = sum(1 for c in [teacher, *students] for t in c.pc.getTransceivers()  # type: ignore[union-attr]
                           if t.receiver._RTCRtpReceiver__started)  # type: ignore[attr-defined]
    assert len(aiortc_decoder_threads()) == client_receivers


async def test_late_student_gets_a_picture_at_once_from_the_cached_keyframe(classroom: Classroom) -> None:
    """Two seconds after the teacher's keyframe the cached group is longer than a joiner is replayed in one burst
    (REPLAY_MAX packets): the late student is sent the keyframe at once, and one request brings the next."""
    await _teacher(classroom, screen=False)
    first = await classroom.client(await classroom.token("physics-1", "early"), name="early")
    await _frame_size(await first.remote_track("camera"))
    camera = _producer(classroom, "camera")
    await asyncio.sleep(2)  # the class goes on: the cached group of pictures grows past the keyframe
    requested = camera.keyframes.requested
    late = await classroom.client(await classroom.token("physics-1", "late"), name="late")
    track = await late.remote_track("camera")
    started = time.monotonic()
    assert await _frame_size(track, timeout=1.0) == (320, 240)
    assert time.monotonic() - started < 1.0
    assert camera.keyframes.requested <= requested + 1, "one throttled request for the next keyframe, at most"
    for _ in range(30):  # and the live stream continues to decode after the replayed pictures
        await _frame_size(track, timeout=2.0)


async def _sfu_counters(classroom: Classroom) -> dict[str, float]:
    """The SFU's counters as an operator scrapes them from /metrics."""
    import aiohttp

    from tests.control.test_health_metrics import samples

    async with aiohttp.ClientSession() as session, session.get(classroom.base + "/metrics") as resp:
        assert resp.status == 200
        found = samples(await resp.text())
    return {name.removeprefix("classcast_sfu_").removesuffix("_total"): value
            for (name, labels), value in found.items() if name.startswith("classcast_sfu_") and not labels}


async def test_nack_recovery_under_five_percent_loss(classroom: Classroom) -> None:
    before = await _sfu_counters(classroom)  # the process's counters: earlier tests' classes are in them
    teacher = await _teacher(classroom, screen=False)
    student = await classroom.client(await classroom.token("physics-1", "lossy"), name="lossy")
    track = await student.remote_track("camera")
    await _frame_size(track)
    participant = next(p for p in _router(classroom).participants.values() if p.uid == "lossy")
    engine = participant.bridge.engine
    engine.set_loss(participant.transport, 50, 7)  # the engine's test hook: 5% of what leaves is lost
    consumer = next(c for c in participant.consumers.values() if c.producer.source == "camera")
    gaps = await _frame_gaps(track, 150, timeout=2.0)  # 5 seconds of 30 fps
    stats = engine.transport_stats(participant.transport)
    dropped, sent = stats["drops"]["simulated_loss"], stats["packets_out"] + stats["drops"]["simulated_loss"]
    assert dropped >= 5 and 0.02 < dropped / sent < 0.09
    assert consumer.retransmitted > 0, "lost packets were resent from the SFU's cache"
    assert max(gaps) < 0.5, f"a freeze of {max(gaps):.2f} s"
    assert consumer.nacks_forwarded == 0, "the cache had every packet: nothing went to the publisher"

    # /metrics counts the student's NACKs and the teacher's packets, and keeps them once the class is over
    during = await _sfu_counters(classroom)
    assert consumer.nacks_received > 0
    assert during["nacks_received"] - before.get("nacks_received", 0) >= consumer.nacks_received
    assert during["retransmitted_packets"] - before["retransmitted_packets"] >= consumer.retransmitted
    received = during["received_packets"] - before["received_packets"]
    assert received > 150, "5 s of the teacher's camera and microphone"
    await teacher.close()
    await until(lambda: not any(r.producers for r in classroom.server.app[HUB].sfu.routers.values()), 10,
                "the teacher's tracks closed")
    after = await _sfu_counters(classroom)
    assert after["received_packets"] >= during["received_packets"], (during, after)
    assert after["nacks_received"] >= during["nacks_received"], (during, after)


async def test_a_student_whose_nack_was_lost_asks_again_and_its_picture_goes_on(classroom: Classroom) -> None:
    """A burst of the student's packets is lost, and so is the NACK that asks for them. A browser asks again
    (libwebrtc: every round trip, up to ten times); aiortc alone asks once, when it sees the gap, and its jitter
    buffer then holds the picture until 512 packets queued behind it. The Python client asks again
    (sfu/nack_retry.py), and the picture stops for a moment, not for seconds."""
    from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

    await _teacher(classroom, screen=False)
    student = await classroom.client(await classroom.token("physics-1", "lossy"), name="lossy")
    track = await student.remote_track("camera")
    await _frame_size(track)
    participant = next(p for p in _router(classroom).participants.values() if p.uid == "lossy")
    consumer = next(c for c in participant.consumers.values() if c.producer.source == "camera")
    assert student.pc is not None
    receiver = next(t.receiver for t in student.pc.getTransceivers() if t.receiver.track is track)
    lost_nacks: list[list[int]] = []
    send = receiver._send_rtcp

    async def first_nack_lost(packet: Any) -> None:  # the network loses the student's first NACK
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK and not lost_nacks:
            lost_nacks.append(list(packet.lost))
            return
        await send(packet)

    receiver._send_rtcp = first_nack_lost  # type: ignore[method-assign]
    engine = participant.bridge.engine
    engine.set_loss(participant.transport, 1000, 3)  # a burst: everything for 0.2 s
    await asyncio.sleep(0.2)
    engine.set_loss(participant.transport, 0, 3)
    gaps = await _frame_gaps(track, 90, timeout=3.0)  # 3 seconds of 30 fps
    assert lost_nacks and len(lost_nacks[0]) >= 3, "the burst was lost and the NACK that named it too"
    assert student.nacks_repeated >= len(lost_nacks[0]), "the lost packets were asked for again"
    assert consumer.retransmitted >= len(lost_nacks[0])
    assert max(gaps) < 1.0, f"a freeze of {max(gaps):.2f} s"


async def test_rtcp_per_leg(classroom: Classroom) -> None:
    teacher = await _teacher(classroom, screen=False)
    student = await classroom.client(await classroom.token("physics-1", "s"), name="s")
    track = await student.remote_track("camera")
    await _frame_size(track)
    await asyncio.sleep(2.5)  # reports go out every second
    # The student's receiver got sender reports for the forwarded stream (translated from the teacher's).
    stats = await student.pc.getStats()  # type: ignore[union-attr]
    remote_out = [s for s in stats.values() if s.type == "remote-outbound-rtp" and s.kind == "video"]
    assert remote_out and remote_out[0].packetsSent > 0
    # and those reports left through the engine's SRTP context of that student, the one its media copies use
    from sfu.peer import EngineSrtp

    server_side = next(p for p in _router(classroom).participants.values() if p.uid == "s")
    assert all(isinstance(d._tx_srtp, EngineSrtp) for d in server_side.peer._dtls if d.state == "connected")
    # The teacher's sender got receiver reports from the SFU.
    stats = await teacher.pc.getStats()  # type: ignore[union-attr]
    remote_in = [s for s in stats.values() if s.type == "remote-inbound-rtp"]
    assert {s.kind for s in remote_in} == {"audio", "video"}


async def test_keyframe_requests_are_throttled(classroom: Classroom) -> None:
    await _teacher(classroom, screen=False)
    student = await classroom.client(await classroom.token("physics-1", "s"), name="s")
    await _frame_size(await student.remote_track("camera"))
    camera = _producer(classroom, "camera")
    consumer = camera.consumers[0]
    before = camera.keyframes.requested
    start = time.monotonic()
    for _ in range(100):
        await consumer.on_keyframe_request(time.monotonic())
    elapsed = time.monotonic() - start
    assert camera.keyframes.requested - before <= 1 + int(elapsed / 0.5)
    assert camera.keyframes.suppressed >= 99 - int(elapsed / 0.5)


async def test_vp8_publisher_is_forwarded_with_picture_ids(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)}, video_codec="video/VP8")
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    track = await student.remote_track("camera")
    for _ in range(20):
        assert await _frame_size(track) == (320, 240)
    camera = _producer(classroom, "camera")
    assert camera.codec.mime_type == "video/VP8"
    # the engine read every packet's VP8 descriptor (none malformed) and found the keyframes in them
    stats = camera.bridge.engine.stream_stats(camera.streams[0].sid)
    assert stats["packets_in"] > 20 and stats["keyframes"] >= 1 and "malformed" not in stats["drops"]


async def test_publish_a_pre_encoded_file(classroom: Classroom, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import av

    path = str(tmp_path / "lesson.ts")
    with av.open(path, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 352, 288, "yuv420p"
        stream.options = {"profile": "baseline", "tune": "zerolatency", "g": "30"}
        for i in range(90):
            img = np.zeros((288, 352, 3), np.uint8)
            img[:, (i * 3) % 352 :] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    from sfu.client import file_tracks

    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish(file_tracks(path))
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    track = await student.remote_track("camera")
    assert await _frame_size(track) == (352, 288)
    assert _producer(classroom, "camera").codec.mime_type == "video/H264"


async def test_quality_off_keeps_audio_only(classroom: Classroom) -> None:
    await _teacher(classroom, screen=False)
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await _frame_size(await student.remote_track("camera"))
    reply = await student.request({"type": "set_quality", "quality": "off"}, "quality_changed")
    assert reply["quality"] == "off"
    participant = next(p for p in _router(classroom).participants.values() if p.uid == "s1")
    video = next(c for c in participant.consumers.values() if c.producer.kind == "video")
    audio = next(c for c in participant.consumers.values() if c.producer.kind == "audio")
    v, a = video.slot.packets_sent, audio.slot.packets_sent
    await asyncio.sleep(0.5)
    assert video.slot.packets_sent == v and audio.slot.packets_sent > a
    await student.request({"type": "set_quality", "quality": "auto"}, "quality_changed")
    await asyncio.sleep(0.5)
    assert video.slot.packets_sent > v
    # what was not forwarded meanwhile is counted by reason, per consumer, in the SFU's stats and its metrics
    sfu = classroom.server.app[HUB].sfu
    stats = sfu.stats(_router(classroom).room_sid)
    mine = {c["trackId"]: c for c in stats["consumers"] if c["uid"] == "s1"}
    assert mine[video.producer.id]["drops"].get("paused", 0) > 10
    assert "paused" not in mine[audio.producer.id]["drops"] and mine[audio.producer.id]["packetsSent"] > a
    assert stats["engine"] in ("native", "python") and sum(t["packets_out"] for t in stats["transports"]) > 0
    metrics = sfu.metrics()
    assert metrics["forwarded_packets"] >= sum(c["packetsSent"] for c in stats["consumers"]) - 50
    assert metrics["drops"].get("paused", 0) > 10


class RecordingTap:
    def __init__(self) -> None:
        self.added: list[dict] = []  # type: ignore[type-arg]
        self.removed: list[str] = []
        self.packets: dict[str, int] = {}
        self.reports: list[tuple[str, int, int]] = []

    def track_added(self, room_sid: str, track: dict) -> None:  # type: ignore[type-arg]
        self.added.append(track)

    def track_removed(self, room_sid: str, track_id: str) -> None:
        self.removed.append(track_id)

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        self.packets[track_id] = self.packets.get(track_id, 0) + 1

    def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
        self.reports.append((track_id, ntp, rtp_timestamp))


async def test_taps_see_tracks_packets_and_sender_reports(classroom: Classroom) -> None:
    teacher = await _teacher(classroom, screen=False)
    tap = RecordingTap()
    sfu = classroom.server.app[HUB].sfu
    room_sid = next(iter(sfu.routers))
    sfu.add_tap(room_sid, tap)
    assert {t["source"] for t in tap.added} == {"camera", "microphone"}
    assert all(t["codec"]["mimeType"] in ("video/H264", "audio/opus") for t in tap.added)
    await asyncio.sleep(2.5)
    assert all(tap.packets.get(t["trackId"], 0) > 10 for t in tap.added)
    assert {r[0] for r in tap.reports} == {t["trackId"] for t in tap.added}
    await teacher.send({"type": "unpublish", "source": "camera"})
    await teacher.request({"type": "ping"}, "pong")
    camera = next(t["trackId"] for t in tap.added if t["source"] == "camera")
    assert tap.removed == [camera]
    sfu.remove_tap(room_sid, tap)


async def test_a_tap_added_late_hears_what_the_microphone_said_since_it_asked(classroom: Classroom) -> None:
    """The transcriber's process starts when the class goes live, after the teacher may have begun to speak: its tap
    is given the microphone's packets since `hear_since` (up to SPOKEN_KEPT_S back) as they arrived, in order, and
    nothing of the camera; a tap that does not ask (the recorder) gets no past."""
    await _teacher(classroom, screen=False)
    sfu = classroom.server.app[HUB].sfu
    room_sid = next(iter(sfu.routers))
    microphone = _producer(classroom, "microphone")
    await until(lambda: microphone.packets_in > 100, 10, "two seconds of the microphone")
    heard: list[tuple[str, bytes, float]] = []
    everything, recent = RecordingTap(), RecordingTap()
    everything.hear_since = 0.0  # type: ignore[attr-defined]
    recent.hear_since = time.monotonic() - 1.0  # type: ignore[attr-defined]
    everything.rtp = lambda track_id, data, arrival: heard.append((track_id, data, arrival))  # type: ignore[method-assign]
    added = time.monotonic()
    sfu.add_tap(room_sid, everything)  # synchronous: what it is given is the past, nothing live yet
    sfu.add_tap(room_sid, recent)
    assert {track_id for track_id, _, _ in heard} == {microphone.id}
    sequences = [parse_rtp(data).sequence_number for _, data, _ in heard]
    arrivals = [at for _, _, at in heard]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))  # every packet, in order
    assert arrivals == sorted(arrivals) and added - arrivals[0] > 1.5 and added - arrivals[-1] < 0.2
    assert added - arrivals[0] <= SPOKEN_KEPT_S + 0.1
    assert 40 <= recent.packets[microphone.id] <= 60  # a second of 20 ms packets
    assert recent.packets[microphone.id] == sum(at >= recent.hear_since for at in arrivals)  # type: ignore[attr-defined]
    sfu.remove_tap(room_sid, everything)
    sfu.remove_tap(room_sid, recent)


async def test_a_tap_added_mid_track_gets_each_tracks_latest_sender_report_at_once(classroom: Classroom) -> None:
    """A recording started mid-class places sound by the publisher's report from its first frame, not by arrival
    times until the next report (every ~5 s for a browser's audio)."""
    await _teacher(classroom, screen=False)
    sfu = classroom.server.app[HUB].sfu
    room_sid = next(iter(sfu.routers))
    producers = [_producer(classroom, source) for source in ("camera", "microphone")]
    await until(lambda: all(p.streams[0].last_sr for p in producers), 10, "a sender report of each track")
    tap = RecordingTap()
    arrivals: list[float] = []
    tap.sender_report = lambda track_id, ntp, rtp, arrival, clock: (  # type: ignore[method-assign]
        tap.reports.append((track_id, ntp, rtp)), arrivals.append(arrival))
    sfu.add_tap(room_sid, tap)  # synchronous: no packet or report of the publisher can come in between
    assert tap.packets == {}
    assert sorted(tap.reports) == sorted((p.id, p.streams[0].last_sr.ntp, p.streams[0].last_sr.rtp_timestamp)
                                         for p in producers)
    assert sorted(arrivals) == sorted(p.streams[0].stats.last_sr_at for p in producers)
    assert all(0 < time.monotonic() - at < 10 for at in arrivals)  # when they arrived, not now
    sfu.remove_tap(room_sid, tap)
