"""A lecture across nodes (issue 18 req 4) with two real `classcast serve` nodes on one PostgreSQL and Redis
(tests/cluster/conftest.py), each node taking 3 of the room's participants (CLASSCAST_NODE_CAPACITY): the teacher
(a browser-like simulcast publisher) and two students on the host, the next students redirected to the other node,
which gets the teacher's tracks through ONE SRTP relay whatever its number of students. Layer selection, NACKs and
keyframe requests work on the far node; the relay closes when its students leave. Then the same with media in SFU
worker processes: each node's relay sits on the room's origin worker, which passes tracks between the node's other
workers and the other node."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.fanout import Publisher
from bench.targets.classcast import ClasscastTarget
from control.relay import HEADER, Signer
from sfu.client import Client, State, SyntheticVideoTrack, ToneAudioTrack
from tests.cluster.conftest import SECRET, Cluster
from tests.control.serverproc import Server
from tests.sfu.test_forwarding import _frame_size
from tests.sfu.test_hostile_peers import LOOPBACK
from tests.workers.test_pipe import LayerProbe


def _socket_url(node: Server) -> str:
    return node.base.replace("http://", "ws://") + "/v1/rtc"


async def _relay_stats(cluster: Cluster, node: Server, worker: int | None = None) -> dict[str, Any]:
    """The room's media on `node` (its pipes to other nodes included; with SFU workers, its origin worker's or
    `worker`'s): the signed operators' call."""
    assert cluster.http is not None
    path = f"/internal/relay/stats?roomId=lecture&org={node.org}" + (f"&worker={worker}" if worker is not None else "")
    async with cluster.http.get(node.base + path,
                                headers={HEADER: Signer(SECRET.encode()).sign("GET", path, b"")}) as reply:
        assert reply.status == 200, await reply.text()
        return dict(await reply.json())


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_lecture_past_one_node_is_relayed_once_to_the_other_node(cluster: Cluster) -> None:
    a = cluster.start_node(CLASSCAST_NODE_CAPACITY="3", CLASSCAST_RELAY_TEST_LOSS="0.03")  # the relay drops 3%
    b = cluster.start_node(CLASSCAST_NODE_CAPACITY="3")
    assert cluster.http is not None
    async with cluster.http.get(b.base + "/internal/relay/stats?room=x") as unsigned:
        assert unsigned.status == 401  # the calls between nodes need the district's secret
    body = b'{"room": "x", "node": "evil", "url": "http://127.0.0.1:9", "host": "127.0.0.1", "port": 9, "pipe": "p"}'
    async with cluster.http.post(b.base + "/internal/relay/open", data=body, headers={
            HEADER: Signer(b"another-districts-secret-01234567").sign("POST", "/internal/relay/open", body)}) as forged:
        assert forged.status == 401

    target = ClasscastTarget("127.0.0.1", url=a.base, org=a.org)
    target.room = "lecture"
    teacher = Publisher("lecture", "h264", LOOPBACK)
    session = aiohttp.ClientSession()
    students: list[Client] = []
    try:
        await teacher.start(session, target)  # its socket is the room's first: node A hosts the class
        for i in range(1, 5):
            token = (await cluster.ok(a, "POST", "/v1/room/lecture/join", {
                "participant": {"uid": f"s{i}", "name": f"Student {i}", "role": "STUDENT"}}))["token"]
            student = Client(a.base, token, name=f"s{i}")
            students.append(student)
            await student.connect()
        s1, s2, s3, s4 = students
        # teacher, s1, s2 fill A; s3 and s4 are sent to B
        assert [s.node_url for s in students] == [_socket_url(a)] * 2 + [_socket_url(b)] * 2
        assert any(m.get("code") == "REDIRECT" for m in s3.messages)
        for s in students:
            await s.remote_track("camera", uid="teacher", timeout=20)
        probes = [LayerProbe(s) for s in (s3, s4)]
        for probe in probes:
            await _until_sync(lambda probe=probe: len(probe.layers) > 50, "a student on B receives the camera")

        far = await _relay_stats(cluster, b)  # first: what B received is then at most what A sent by the next read
        near = await _relay_stats(cluster, a)
        # ONE relay each way, SRTP, between the two nodes: A's pipe to B, B's pipe to A
        [pipe_a], [pipe_b] = near["pipes"], far["pipes"]
        assert pipe_a["peer"] == far["node"] and pipe_b["peer"] == near["node"]
        assert pipe_a["srtp"] and pipe_b["srtp"] and pipe_b["authFailed"] == 0
        teacher_tracks = {t["trackId"] for t in near["tracks"] if t["uid"] == "teacher"}
        assert set(pipe_a["sent"]) == teacher_tracks == set(pipe_b["received"])
        # once per node, not per student: A's students and the relay are each one copy of what the teacher sent,
        # and B's two students are fed from the relay's single copy
        packets_in = sum(t["packetsIn"] for t in near["tracks"] if t["uid"] == "teacher")
        assert 0 < pipe_a["rtpSent"] + pipe_a["dropped"] <= packets_in
        far_camera = next(t for t in far["tracks"] if t["uid"] == "teacher" and t["source"] == "camera")
        assert far_camera["consumers"] == 2
        assert 0 < pipe_b["rtpReceived"] <= pipe_a["rtpSent"] + pipe_a["retransmitted"]
        sent_to = {c["uid"] for c in far["consumers"] if c["packetsSent"] > 0}
        assert {"s3", "s4"} <= sent_to

        # layer selection on B: low, then high, each the teacher's own layer's packets
        probe = probes[0]
        await s3.request({"type": "set_quality", "quality": "low"}, "quality_changed")
        await _until(lambda: _only(probe, {0}), "s3 (on B) on the low layer")
        await s3.request({"type": "set_quality", "quality": "high"}, "quality_changed")
        await _until(lambda: _only(probe, {2}), "s3 (on B) on the high layer")

        # a keyframe request (PLI) of s3 crosses the relay to A and reaches the teacher
        await asyncio.sleep(1.1)  # both nodes' keyframe throttles (500 ms per layer) are open again
        asked = (await _relay_stats(cluster, a))["pipes"][0]["keyframeRequests"]
        publisher_asked = teacher.keyframe_requests
        ssrc = max(probe.counts, key=probe.counts.__getitem__)  # B's SSRC for the camera toward s3 (not RTX)
        await probe.receiver._send_rtcp_pli(ssrc)
        await _until(lambda: _pipe(cluster, a, "keyframeRequests", asked), "the PLI crossed the relay")
        await _until_sync(lambda: teacher.keyframe_requests > publisher_asked, "the teacher was asked for a keyframe")

        # NACKs: what the relay lost (its 3%) was asked back over it and resent from A's ring
        near, far = await _relay_stats(cluster, a), await _relay_stats(cluster, b)
        assert near["pipes"][0]["dropped"] > 0, "the test's relay loss happened"
        assert near["pipes"][0]["nacksReceived"] > 0 and near["pipes"][0]["retransmitted"] > 0
        assert sum(t["nacksSent"] for t in far["tracks"] if t["uid"] == "teacher") > 0

        # a student's NACK on B is answered by B itself, from its own engine cache
        def retransmitted(stats: dict[str, Any]) -> int:
            return sum(c["retransmitted"] for c in stats["consumers"] if c["uid"] == "s3")

        before = retransmitted(far)
        seq = probe.last_seq[ssrc]
        await probe.receiver._send_rtcp_nack(ssrc, [(seq - 5) & 0xFFFF, (seq - 4) & 0xFFFF])
        await _until(lambda: _more(cluster, b, retransmitted, before), "B answered s3's NACK")

        # B's students leave: its relay closes at both ends; A's students go on
        await s3.close()
        await s4.close()
        await _until(lambda: _no_pipes(cluster, a), "A's relay to B closed")
        near_probe = LayerProbe(s1)
        await _until_sync(lambda: len(near_probe.layers) > 20, "s1 (on A) still receives the camera")
        assert s2.node_url == _socket_url(a)
    finally:
        for s in students:
            await s.close()
        await teacher.close()
        await target.close()
        await session.close()


async def test_with_sfu_workers_a_track_crosses_to_each_node_and_each_worker_once(cluster: Cluster) -> None:
    """A: 2 workers of 2 participants, node capacity 3: the teacher and s1 on its origin worker, the moderator on
    the other. B: 2 workers of 1: s2 on its origin worker, s3 on the other. The moderator's camera goes A.w1 -> A's
    origin (worker pipe) -> B's origin (the SRTP relay) -> B.w1 (worker pipe); one relay between the nodes."""
    a = cluster.start_node(CLASSCAST_NODE_CAPACITY="3", CLASSCAST_SFU_WORKERS="2", CLASSCAST_SFU_WORKER_CAPACITY="2")
    b = cluster.start_node(CLASSCAST_NODE_CAPACITY="3", CLASSCAST_SFU_WORKERS="2", CLASSCAST_SFU_WORKER_CAPACITY="1")
    room = await cluster.ok(a, "POST", "/v1/room/create", {
        "roomId": "lecture", "title": "Lecture",
        "participant": {"uid": "teacher", "name": "Teacher", "role": "TEACHER"}})
    clients: list[Client] = []
    try:
        async def join(uid: str, role: str) -> Client:
            token = (await cluster.ok(a, "POST", "/v1/room/lecture/join", {
                "participant": {"uid": uid, "name": uid, "role": role}}))["token"]
            client = Client(a.base, token, name=uid, backoff=(0.2, 0.5))
            clients.append(client)
            await client.connect()
            return client

        teacher = Client(a.base, room["token"], name="teacher")
        clients.append(teacher)
        await teacher.connect()
        await teacher.publish({"camera": SyntheticVideoTrack(320, 240), "microphone": ToneAudioTrack()})
        s1 = await join("s1", "STUDENT")
        mod = await join("mod", "MODERATOR")
        s2 = await join("s2", "STUDENT")
        s3 = await join("s3", "STUDENT")
        assert [c.node_url for c in (teacher, s1, mod, s2, s3)] == [_socket_url(a)] * 3 + [_socket_url(b)] * 2
        await mod.publish({"camera": SyntheticVideoTrack(176, 144)})
        for student in (s2, s3):  # B's gateway worker and B's other worker
            assert await _frame_size(await student.remote_track("camera", uid="teacher", timeout=20), 20) == (320, 240)
            assert await _frame_size(await student.remote_track("camera", uid="mod", timeout=20), 20) == (176, 144)
        assert await _frame_size(await s1.remote_track("camera", uid="mod", timeout=20), 20) == (176, 144)

        near, far = await _relay_stats(cluster, a), await _relay_stats(cluster, b)  # each node's origin worker
        assert len(near["workers"]) == 2 and len(far["workers"]) == 2, "each node spread the room over its workers"
        relays_a = [p for p in near["pipes"] if isinstance(p["peer"], str)]
        relays_b = [p for p in far["pipes"] if isinstance(p["peer"], str)]
        assert [p["peer"] for p in relays_a] == [far["node"]] and [p["peer"] for p in relays_b] == [near["node"]]
        cameras = {t["trackId"] for t in near["tracks"] if t["source"] == "camera"}
        assert len(cameras) == 2 and set(relays_a[0]["sent"]) >= cameras and set(relays_b[0]["received"]) >= cameras
        assert relays_a[0]["srtp"] and relays_b[0]["rtpReceived"] > 0
        for node, stats in ((a, near), (b, far)):  # the other worker of each node holds no relay to another node
            other = (await _relay_stats(cluster, node, stats["workers"][1]))["pipes"]
            assert [p["peer"] for p in other] == [stats["worker"]]

        # track changes cross too: the teacher's mute and the moderator's unpublish reach both of B's workers
        await teacher.send({"type": "mute", "source": "microphone", "muted": True})
        await mod.send({"type": "unpublish", "source": "camera"})
        for student in (s2, s3):
            muted = await student.wait_for("track_muted", lambda m: m["track"]["uid"] == "teacher", timeout=10)
            assert muted["track"]["source"] == "microphone" and muted["track"]["muted"] is True
            await student.wait_for("track_unpublished", lambda m: m["track"]["uid"] == "mod", timeout=10)
        await _until(lambda: _relay_sends(cluster, a, 2), "the moderator's camera left the relay")
        await mod.publish({"camera": SyntheticVideoTrack(176, 144)})  # and comes back

        # A's gateway worker dies (SIGKILL): its relay with it. A reopens it from the room's new origin worker, the
        # teacher reconnects and publishes again on A, and B's students (their sockets never closed) get the new
        # camera through the new relay
        origin = near["worker"]
        [pid] = re.findall(rf"SFU worker {origin}: pid (\d+)", cluster.log(a))[-1:]
        old_camera = next(t["trackId"] for t in near["tracks"] if t["uid"] == "teacher" and t["source"] == "camera")
        os.kill(int(pid), signal.SIGKILL)
        published = await s2.wait_for("track_published", lambda m: m["track"]["uid"] == "teacher" and
                                      m["track"]["source"] == "camera" and m["track"]["trackId"] != old_camera,
                                      timeout=30)
        new_camera = published["track"]["trackId"]
        await _until(lambda: _sent_to(cluster, b, "s2", new_camera), "s2 on B receives the republished camera", 30)
        assert s2.node_url == s3.node_url == _socket_url(b) and s2.state == s3.state == State.CONNECTED
        near = await _relay_stats(cluster, a)
        assert [p["peer"] for p in near["pipes"] if isinstance(p["peer"], str)] == [far["node"]]

        # B dies (SIGKILL): once its lease lapses A closes its relay, and B's students, reconnecting through the
        # class's URL, are taken by the host (no other node left: a full node beats no class)
        cluster.kill(b)
        await _until(lambda: _no_relays(cluster, a), "A's relay to the dead node closed")
        for student in (s2, s3):
            await _until_sync(lambda student=student: student.state == State.CONNECTED and
                              student.node_url == _socket_url(a), f"{student.name} back in class on A", 30)
            assert await _frame_size(await student.remote_track("camera", uid="mod", timeout=20), 20) == (176, 144)
    finally:
        for c in clients:
            await c.close()


async def test_three_nodes_fill_in_turn_and_pipe_as_a_mesh(cluster: Cluster) -> None:
    """Each node takes 2 of the class: the teacher and s1 on A, s2 and s3 on the first overflow node (B), s4 on the
    next (C), which is piped to A (the teacher's tracks, once) and to B (the mesh: a track published on B would reach
    C directly)."""
    a, b, c = (cluster.start_node(CLASSCAST_NODE_CAPACITY="2") for _ in range(3))
    room = await cluster.ok(a, "POST", "/v1/room/create", {
        "roomId": "lecture", "title": "Lecture",
        "participant": {"uid": "teacher", "name": "Teacher", "role": "TEACHER"}})
    clients: list[Client] = []
    try:
        teacher = Client(a.base, room["token"], name="teacher")
        clients.append(teacher)
        await teacher.connect()
        await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
        for i in range(1, 5):
            token = (await cluster.ok(b, "POST", "/v1/room/lecture/join", {
                "participant": {"uid": f"s{i}", "name": f"Student {i}", "role": "STUDENT"}}))["token"]
            client = Client(b.base, token, name=f"s{i}")  # through B's URL: redirected to the host first
            clients.append(client)
            await client.connect()
        # the first overflow node (B or C: their load ties) takes s2 and s3, the other one s4
        first = b if clients[3].node_url == _socket_url(b) else c
        b, c = first, (c if first is b else b)
        assert [x.node_url for x in clients] == [_socket_url(n) for n in (a, a, b, b, c)]
        for student in clients[1:]:
            assert await _frame_size(await student.remote_track("camera", uid="teacher", timeout=20), 20) == (320, 240)
        ids = {n: (await _relay_stats(cluster, n))["node"] for n in (a, b, c)}
        stats = {n: await _relay_stats(cluster, n) for n in (a, b, c)}
        assert sorted(p["peer"] for p in stats[c]["pipes"]) == sorted([ids[a], ids[b]])
        assert sorted(p["peer"] for p in stats[a]["pipes"]) == sorted([ids[b], ids[c]])
        teacher_camera = next(t["trackId"] for t in stats[a]["tracks"])
        for node in (b, c):  # the teacher's camera reaches each node once, from A, never through the other
            from_a = next(p for p in stats[node]["pipes"] if p["peer"] == ids[a])
            assert from_a["received"] == [teacher_camera] and from_a["srtp"]
            others = [p for p in stats[node]["pipes"] if p["peer"] != ids[a]]
            assert all(p["received"] == [] and p["sent"] == [] for p in others)

        # the end of the class, asked of any node, ends it on all three and closes every relay
        await cluster.ok(c, "DELETE", "/v1/room/lecture")
        for x in clients:
            await x.wait_state(State.ENDED, timeout=15)
        for node in (a, b, c):
            await _until(lambda node=node: _no_pipes(cluster, node), "the relays closed with the class")
    finally:
        for x in clients:
            await x.close()


async def _until_sync(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    async def wrapped() -> bool:
        return check()

    await _until(wrapped, what, timeout)


async def _only(probe: LayerProbe, layers: set[int]) -> bool:
    return await probe.layer() == layers


async def _pipe(cluster: Cluster, node: Server, key: str, before: int) -> bool:
    pipes = (await _relay_stats(cluster, node))["pipes"]
    return bool(pipes) and pipes[0][key] > before


async def _more(cluster: Cluster, node: Server, count: Callable[[dict[str, Any]], int], before: int) -> bool:
    return count(await _relay_stats(cluster, node)) > before


async def _sent_to(cluster: Cluster, node: Server, uid: str, track_id: str) -> bool:
    return any(c["uid"] == uid and c["trackId"] == track_id and c["packetsSent"] > 0
               for c in (await _relay_stats(cluster, node))["consumers"])


async def _relay_sends(cluster: Cluster, node: Server, count: int) -> bool:
    [relay] = [p for p in (await _relay_stats(cluster, node))["pipes"] if isinstance(p["peer"], str)]
    return len(relay["sent"]) == count


async def _no_relays(cluster: Cluster, node: Server) -> bool:
    return not [p for p in (await _relay_stats(cluster, node))["pipes"] if isinstance(p["peer"], str)]


async def _no_pipes(cluster: Cluster, node: Server) -> bool:
    return not (await _relay_stats(cluster, node)).get("pipes")  # none, or the room's router is gone
