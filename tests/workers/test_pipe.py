"""One lecture spread over two SFU workers (issue 15 req 2): the room's audience outgrows a worker's capacity, new
participants go to the other worker, and each publisher's tracks are piped there once (sfu/pipe.py).

Real worker processes, real aiortc peers; a worker capacity of 2 participants makes the spread happen at the third.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

from bench.fanout import MAGIC, TRAILER
from sfu.client import Client, State, SyntheticVideoTrack, ToneAudioTrack
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size
from tests.sfu.test_hostile_peers import BrowserLikeTeacher
from tests.workers.conftest import pool_of


async def _until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not met in {timeout} s"
        await asyncio.sleep(0.05)


async def _until_async(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not met in {timeout} s"
        await asyncio.sleep(0.1)


def _worker_of(pool: Any, client: Client) -> int:
    """The worker index whose UDP port the client's media comes from (its remote description's candidates)."""
    sdp = client.pc.remoteDescription.sdp  # type: ignore[union-attr]
    (worker,) = [w.index for w in pool.workers if f" {w.port} typ host" in sdp]
    return worker


async def test_a_room_over_capacity_spreads_and_everyone_decodes_the_teacher(workers_room: Classroom) -> None:
    pool = pool_of(workers_room)
    pool.capacity = 2
    teacher = await workers_room.client(await workers_room.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240), "microphone": ToneAudioTrack()})
    (room_sid,) = list(pool.rooms)
    origin = pool.rooms[room_sid].index
    s1 = await workers_room.client(await workers_room.token("physics-1", "s1"), name="s1")
    assert [w.index for w in pool.workers_of(room_sid)] == [origin], "under capacity: one worker"
    # two joining at once past capacity: one spread, both on the far worker (a moderator, who may publish)
    s2, s3 = await asyncio.gather(
        workers_room.client(await workers_room.token("physics-1", "s2"), name="s2"),
        workers_room.client(await workers_room.token("physics-1", "mod", role="MODERATOR"), name="mod"))
    other = 1 - origin
    assert [w.index for w in pool.workers_of(room_sid)] == [origin, other], "the third participant spread the room"
    for student, worker in ((s1, origin), (s2, other), (s3, other)):
        assert await _frame_size(await student.remote_track("camera", timeout=15), timeout=15) == (320, 240)
        assert await student.remote_track("microphone", timeout=15) is not None
        assert _worker_of(pool, student) == worker, f"{student.name}'s media comes from worker {worker}"

    # one copy per worker: the origin has one pipe, and the far worker received through it no more packets
    # than the teacher sent (two students there, one copy)
    far = await pool.room_stats(room_sid, other)
    near = await pool.room_stats(room_sid, origin)
    assert [p["peer"] for p in near["pipes"]] == [other] and [p["peer"] for p in far["pipes"]] == [origin]
    (pipe_near,), (pipe_far,) = near["pipes"], far["pipes"]
    teacher_tracks = {t["trackId"] for t in near["tracks"] if t["uid"] == "teacher"}
    assert set(pipe_near["sent"]) == teacher_tracks == set(pipe_far["received"])
    packets_in = sum(t["packetsIn"] for t in near["tracks"] if t["uid"] == "teacher")
    assert 0 < pipe_far["rtpReceived"] <= packets_in
    assert {t["trackId"] for t in far["tracks"]} == teacher_tracks
    assert far["participants"] == 2 and near["participants"] == 2
    # operators see the pipes per worker (the workers' load reports)
    await _until(lambda: [w["pipes"] for w in pool.metrics()["workers"]] == [1, 1] and
                 pool.metrics()["workers"][other]["pipe_packets_in"] > 0, what="per-worker pipe figures")
    # the publisher's sender reports cross too (the far worker translates them for its subscribers' lip sync)
    await _until_async(lambda: _pipe_figure(pool, room_sid, other, "senderReports", 0),
                       what="a sender report crossed the pipe")

    # mute, a publisher on the far worker, unpublish: mirrored on both sides
    await teacher.send({"type": "mute", "source": "microphone", "muted": True})
    muted = await s2.wait_for("track_muted", lambda m: m["track"]["source"] == "microphone", timeout=10)
    assert muted["track"]["muted"] is True
    moderator = s3
    await moderator.publish({"camera": SyntheticVideoTrack(176, 144), "microphone": ToneAudioTrack()})
    # piped the other way: the origin's student decodes the far worker's publisher
    assert await _frame_size(await s1.remote_track("camera", uid="mod", timeout=15), timeout=15) == (176, 144)
    assert await _frame_size(await s2.remote_track("camera", uid="mod", timeout=15), timeout=15) == (176, 144)
    await moderator.send({"type": "unpublish", "source": "camera"})
    await s1.wait_for("track_unpublished", lambda m: m["track"]["uid"] == "mod", timeout=10)
    near = await pool.room_stats(room_sid, origin)
    assert {(t["uid"], t["source"]) for t in near["tracks"]} == {("teacher", "camera"), ("teacher", "microphone"),
                                                                 ("mod", "microphone")}
    # the far publisher leaves: its microphone's copy leaves the origin too
    await moderator.leave()
    await s1.wait_for("track_unpublished", lambda m: m["track"]["uid"] == "mod" and
                      m["track"]["source"] == "microphone", timeout=10)
    near = await pool.room_stats(room_sid, origin)
    assert all(t["uid"] == "teacher" for t in near["tracks"]), "the far publisher's copies left the origin"

    # the far worker's audience leaves: its pipes close at both ends, the room is on one worker again
    await s2.leave()
    await _until(lambda: [w.index for w in pool.workers_of(room_sid)] == [origin], what="the far worker left")
    await _until_async(lambda: _no_pipes(pool, room_sid, origin), what="the origin's pipe closed")
    assert await _frame_size(await s1.remote_track("camera", uid="teacher"), timeout=10) == (320, 240)


async def test_the_far_worker_dies_the_lecture_goes_on(workers_room: Classroom) -> None:
    """SIGKILL of the worker a room spread to: the origin's pipe to it closes, the origin's students go on, the far
    student reconnects by itself (to the origin, over capacity, while no other worker is up: capacity is a
    preference, never a refusal), and the room spreads again to the restarted worker."""
    pool = pool_of(workers_room)
    pool.capacity = 2
    teacher = await workers_room.client(await workers_room.create_room(), name="teacher", backoff=(0.1, 1.0))
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    (room_sid,) = list(pool.rooms)
    origin = pool.rooms[room_sid].index
    s1 = await workers_room.client(await workers_room.token("physics-1", "s1"), name="s1", backoff=(0.1, 1.0))
    s2 = await workers_room.client(await workers_room.token("physics-1", "s2"), name="s2", backoff=(0.1, 1.0))
    other = 1 - origin
    assert _worker_of(pool, s2) == other
    assert await _frame_size(await s2.remote_track("camera", timeout=15), timeout=15) == (320, 240)
    far = pool.workers[other]
    old_pid = far.pid
    os.kill(old_pid, signal.SIGKILL)
    await asyncio.wait_for(far.down.wait(), 1.0)
    assert [w.index for w in pool.workers_of(room_sid)] == [origin]
    await _until_async(lambda: _no_pipes(pool, room_sid, origin), what="the origin's pipe to the dead worker closed")
    assert await _frame_size(await s1.remote_track("camera"), timeout=10) == (320, 240), "the origin goes on"
    await s2.wait_for("reconnecting", timeout=2)
    await _until(lambda: far.alive and far.pid != old_pid, what="the far worker restarted")
    assert await s2.wait_state(State.CONNECTED, timeout=15) == State.CONNECTED
    assert await _frame_size(await s2.remote_track("camera", timeout=15), timeout=15) == (320, 240)
    s3 = await workers_room.client(await workers_room.token("physics-1", "s3"), name="s3")
    assert _worker_of(pool, s3) == other, "the origin is full: the room spread again to the restarted worker"
    assert [w.index for w in pool.workers_of(room_sid)] == [origin, other]
    assert await _frame_size(await s3.remote_track("camera", timeout=15), timeout=15) == (320, 240)


async def test_a_room_over_three_workers_is_a_mesh_of_pipes(three_workers_room: Classroom) -> None:
    """Capacity 1: the teacher, a moderator and a student each on their own worker. Each worker sends its own
    publishers' tracks to each other worker once: the moderator's camera reaches the third worker from the second
    directly, never through the first (a piped copy is never piped again)."""
    room = three_workers_room
    pool = pool_of(room)
    pool.capacity = 1
    teacher = await room.client(await room.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    (room_sid,) = list(pool.rooms)
    moderator = await room.client(await room.token("physics-1", "mod", role="MODERATOR"), name="mod")
    student = await room.client(await room.token("physics-1", "s1"), name="s1")
    a, b, c = (w.index for w in pool.workers_of(room_sid))
    assert len({a, b, c}) == 3
    assert (_worker_of(pool, teacher), _worker_of(pool, moderator), _worker_of(pool, student)) == (a, b, c)
    await moderator.publish({"camera": SyntheticVideoTrack(176, 144)})
    assert await _frame_size(await student.remote_track("camera", uid="teacher", timeout=15), timeout=15) == (320, 240)
    assert await _frame_size(await student.remote_track("camera", uid="mod", timeout=15), timeout=15) == (176, 144)
    assert await _frame_size(await teacher.remote_track("camera", uid="mod", timeout=15), timeout=15) == (176, 144)
    stats = {w: await pool.room_stats(room_sid, w) for w in (a, b, c)}
    pipes = {w: {p["peer"]: p for p in stats[w]["pipes"]} for w in stats}
    assert {w: set(p) for w, p in pipes.items()} == {a: {b, c}, b: {a, c}, c: {a, b}}, "a full mesh"
    teacher_cam = next(t["trackId"] for t in stats[a]["tracks"] if t["uid"] == "teacher")
    mod_cam = next(t["trackId"] for t in stats[b]["tracks"] if t["uid"] == "mod")
    assert pipes[a][b]["sent"] == [teacher_cam] and pipes[a][c]["sent"] == [teacher_cam]
    assert pipes[b][a]["sent"] == [mod_cam] and pipes[b][c]["sent"] == [mod_cam]
    assert pipes[c][a]["sent"] == [] and pipes[c][b]["sent"] == [], "the third worker publishes nothing"
    assert set(pipes[c][b]["received"]) == {mod_cam} and set(pipes[c][a]["received"]) == {teacher_cam}


async def _no_pipes(pool: Any, room_sid: str, worker: int) -> bool:
    return not (await pool.room_stats(room_sid, worker))["pipes"]


class LayerProbe:
    """Reads which of the browser-like teacher's layers a subscriber's video packets carry (the bench clip's
    trailer names its layer), by wrapping the aiortc receiver's RTP handler; counts what it saw."""

    def __init__(self, client: Client) -> None:
        self.layers: list[int] = []
        self.last_seq: dict[int, int] = {}
        self.counts: dict[int, int] = {}  # per SSRC: the media one, and the retransmissions' (RTX)
        self.receiver: Any = None
        for transceiver in client.pc.getTransceivers():  # type: ignore[union-attr]
            if transceiver.kind == "video" and transceiver.receiver.track is not None:
                self._wrap(transceiver.receiver)

    def _wrap(self, receiver: Any) -> None:
        self.receiver = receiver
        handle = receiver._handle_rtp_packet

        async def handle_rtp(packet: Any, arrival_time_ms: int) -> None:
            payload = packet.payload
            if len(payload) >= TRAILER.size:
                magic, index, *_ = TRAILER.unpack_from(payload, len(payload) - TRAILER.size)
                if magic == MAGIC:
                    self.layers.append(index)
                    self.last_seq[packet.ssrc] = packet.sequence_number
                    self.counts[packet.ssrc] = self.counts.get(packet.ssrc, 0) + 1
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp

    async def layer(self, seconds: float = 0.6) -> set[int]:
        start = len(self.layers)
        await asyncio.sleep(seconds)
        return set(self.layers[start:])


async def test_layers_nacks_and_keyframes_cross_the_pipe(workers_room: Classroom) -> None:
    pool = pool_of(workers_room)
    pool.capacity = 2
    pool.pipe_loss = 0.03  # the pipe drops 3% of what it carries: the far worker must NACK it back
    teacher = BrowserLikeTeacher(workers_room)
    await teacher.start()
    try:
        (room_sid,) = list(pool.rooms)
        origin = pool.rooms[room_sid].index
        s1 = await workers_room.client(await workers_room.token("physics-1", "s1"), name="s1")
        far_student = await workers_room.client(await workers_room.token("physics-1", "s2"), name="s2")
        other = 1 - origin
        assert _worker_of(pool, far_student) == other
        await far_student.remote_track("camera", timeout=15)
        probe = LayerProbe(far_student)
        await _until(lambda: len(probe.layers) > 50, what="the far student receives the teacher's camera")

        # layer selection on the far worker: low, then high, each the teacher's own layer's packets
        await far_student.request({"type": "set_quality", "quality": "low"}, "quality_changed")
        await _until_async(lambda: _only(probe, {0}), what="the far student on the low layer")
        await far_student.request({"type": "set_quality", "quality": "high"}, "quality_changed")
        await _until_async(lambda: _only(probe, {2}), what="the far student on the high layer")
        assert s1 is not None

        # a keyframe request (PLI) of the far subscriber reaches the real publisher through the pipe
        await asyncio.sleep(1.1)  # both workers' keyframe throttles (500 ms per layer) are open again
        far = await pool.room_stats(room_sid, other)
        near = await pool.room_stats(room_sid, origin)
        asked_before = near["pipes"][0]["keyframeRequests"]
        publisher_before = teacher.publisher.keyframe_requests
        ssrc = max(probe.counts, key=probe.counts.__getitem__)  # the far worker's SSRC for this camera (not RTX)
        await probe.receiver._send_rtcp_pli(ssrc)
        await _until_async(lambda: _pipe_figure(pool, room_sid, origin, "keyframeRequests", asked_before),
                           what="the PLI crossed the pipe")
        await _until(lambda: teacher.publisher.keyframe_requests > publisher_before,
                     what="the publisher was asked for a keyframe")

        # NACKs: the pipe's losses are asked back and resent from the origin's ring
        near = await pool.room_stats(room_sid, origin)
        far = await pool.room_stats(room_sid, other)
        assert near["pipes"][0]["dropped"] > 0, "the test's pipe loss happened"
        assert near["pipes"][0]["nacksReceived"] > 0 and near["pipes"][0]["retransmitted"] > 0
        assert sum(t["nacksSent"] for t in far["tracks"]) > 0, "the far worker's copy of the track NACKed"

        # a subscriber's NACK is answered by the far worker itself, from its own engine cache
        def retransmitted(stats: dict[str, Any]) -> int:
            return sum(c["retransmitted"] for c in stats["consumers"] if c["uid"] == "s2")

        before = retransmitted(far)
        seq = probe.last_seq[ssrc]
        await probe.receiver._send_rtcp_nack(ssrc, [(seq - 5) & 0xFFFF, (seq - 4) & 0xFFFF])
        await _until_async(lambda: _far_retransmitted(pool, room_sid, other, before, retransmitted),
                           what="the far worker answered the subscriber's NACK")
        far = await pool.room_stats(room_sid, other)
        assert sum(c["nacksReceived"] for c in far["consumers"] if c["uid"] == "s2") >= 1, far["consumers"]
        assert (await pool.room_stats(room_sid, origin))["pipes"][0]["nacksReceived"] >= 1
        # /metrics' NACKs from subscribers: the far worker's next load report (every 0.5 s) carries its count
        await _until(lambda: pool.workers[other].load.get("metrics", {}).get("nacks_received", 0) >= 1,
                     what="the far worker reported the NACK it received")
        assert pool.metrics()["nacks_received"] >= 1
    finally:
        await teacher.close()


async def _only(probe: LayerProbe, layers: set[int]) -> bool:
    return await probe.layer() == layers


async def _pipe_figure(pool: Any, room_sid: str, worker: int, key: str, before: int) -> bool:
    return (await pool.room_stats(room_sid, worker))["pipes"][0][key] > before


async def _far_retransmitted(pool: Any, room_sid: str, worker: int, before: int, count: Any) -> bool:
    return count(await pool.room_stats(room_sid, worker)) > before


