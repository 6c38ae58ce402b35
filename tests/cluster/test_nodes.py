"""Several nodes, one URL (issue 18 requirements 2 and 3) with real `classcast serve` processes on one PostgreSQL
and one Redis (tests/cluster/conftest.py): tokens minted by one node work on another, a WebSocket that reaches a
node not hosting the class is redirected to its host by the Python client, REST calls answer on any node (a
recording started through one is carried out by the host), a recording downloads from the other node, and a
killed node's class moves to a live node with the participants' sessions intact."""

from __future__ import annotations

import asyncio
import io
import time

import av

from sfu.client import Client, State, SyntheticVideoTrack, ToneAudioTrack
from sfu.whip_client import WhipClient
from tests.cluster.conftest import Cluster
from tests.control.serverproc import Server


def _socket_url(node: Server) -> str:
    return node.base.replace("http://", "ws://") + "/v1/rtc"


async def _status(cluster: Cluster, node: Server, room_id: str, egress: str, *statuses: str,
                  timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = await cluster.ok(node, "GET", f"/v1/room/{room_id}/recordings")
        job = next(r for r in data["recordings"] if r["egressId"] == egress)
        if job["status"] in statuses:
            return job
        assert job["status"] != "EGRESS_FAILED", job
        assert time.monotonic() < deadline, f"recording still {job['status']}"
        await asyncio.sleep(0.3)


async def test_one_url_tokens_redirect_rest_and_recordings_on_any_node(cluster: Cluster) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    assert a.org == b.org  # one database: the second node found the demo organization the first made
    room = await cluster.ok(a, "POST", "/v1/room/create", {
        "roomId": "geo", "title": "Geography", "participant": {"uid": "t1", "name": "Teacher", "role": "TEACHER"},
        "customization": {"allowIngress": True}})
    student_token = (await cluster.ok(b, "POST", "/v1/room/geo/join", {
        "participant": {"uid": "s1", "name": "Student", "role": "STUDENT"}}))["token"]
    clients: list[Client] = []
    try:
        # Node A's token on node B: the first socket places the class on B.
        teacher = Client(b.base, room["token"], name="teacher")
        clients.append(teacher)
        await teacher.connect()
        assert teacher.node_url == _socket_url(b)
        # The student's socket reaches A, which does not host the class: redirected, in the room on B.
        student = Client(a.base, student_token, name="student")
        clients.append(student)
        joined = await student.connect()
        assert student.node_url == _socket_url(b)
        assert {p["uid"] for p in joined["roster"]} == {"t1", "s1"}
        assert any(m.get("code") == "REDIRECT" for m in student.messages)
        await teacher.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        frame = await asyncio.wait_for((await student.remote_track("camera", timeout=20)).recv(), 20)
        assert frame.width > 0  # media flows through the host

        # An encoder's WHIP request reaching A is redirected (307) to B, where the class's media is.
        ingest_token = (await cluster.ok(a, "POST", "/v1/room/geo/join", {
            "participant": {"uid": "obs", "name": "Encoder", "role": "TEACHER"}}))["token"]
        encoder = WhipClient(a.base + "/v1/whip/geo", ingest_token)
        clients.append(encoder)  # type: ignore[arg-type]
        await encoder.publish({"camera": SyntheticVideoTrack(320, 240, 15)})
        assert encoder.location is not None and encoder.location.startswith(b.base + "/v1/whip/geo/")
        ingested = await asyncio.wait_for((await student.remote_track("camera", "obs", timeout=20)).recv(), 20)
        assert ingested.width == 320

        # Any node answers REST about the class.
        for node in (a, b):
            status = await cluster.ok(node, "GET", "/v1/room/geo/status")
            assert (status["isActive"], status["participantCount"], status["hasTeacher"]) == (True, 3, True)
        # A recording started through A is made by B, whose SFU has the media (A forwards the call).
        started = await cluster.ok(a, "POST", "/v1/room/geo/recording/start",
                                   {"options": {"preset": "H264_720P_30", "showLogo": False}})
        egress = started["egressId"]
        assert (await teacher.wait_for("recording_started", timeout=20))["egressId"] == egress
        await _status(cluster, a, "geo", egress, "EGRESS_ACTIVE")
        cluster.start_node()  # a node starting meanwhile leaves B's live recording alone
        await asyncio.sleep(2)
        assert (await _status(cluster, a, "geo", egress, "EGRESS_ACTIVE"))["status"] == "EGRESS_ACTIVE"
        await cluster.ok(a, "POST", "/v1/room/geo/recording/stop")
        job = await _status(cluster, b, "geo", egress, "EGRESS_COMPLETE")
        assert job["files"][0]["duration"] > 1
        # Downloaded from A, which never had the media: the shared recordings folder.
        links = await cluster.ok(a, "GET", "/v1/room/geo/recordings/download")
        [f] = links["files"]
        assert f["downloadUrl"].startswith(a.base + "/recordings/")
        assert cluster.http is not None
        async with cluster.http.get(f["downloadUrl"]) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
            content = await r.read()
        assert len(content) == f["size"]
        with av.open(io.BytesIO(content)) as mp4:
            frames = sum(1 for _ in mp4.decode(video=0))
        assert frames > 10
        # The end of class through A reaches the sockets on B.
        await cluster.ok(a, "DELETE", "/v1/room/geo")
        await student.wait_state(State.ENDED, timeout=15)
        await teacher.wait_state(State.ENDED, timeout=15)
    finally:
        for c in clients:
            await c.close()


async def test_a_killed_nodes_class_moves_and_its_participants_keep_their_sessions(cluster: Cluster) -> None:
    """SIGKILL the node hosting a class: within its lease (5 s, the default) the class is placed on the node the student
    reconnects through, and the student's reconnect, within the grace, keeps its session. A node that starts while
    others live leaves the sessions of live nodes alone (the student's, before and after it moved), and those of a
    dead node while their reconnect grace runs (the teacher's)."""
    a = cluster.start_node(CLASSCAST_RECONNECT_GRACE="30")
    b = cluster.start_node(CLASSCAST_RECONNECT_GRACE="30")
    room = await cluster.ok(b, "POST", "/v1/room/create", {
        "roomId": "bio", "title": "Biology", "participant": {"uid": "t1", "name": "Teacher", "role": "TEACHER"}})
    student_token = (await cluster.ok(b, "POST", "/v1/room/bio/join", {
        "participant": {"uid": "s1", "name": "Student", "role": "STUDENT"}}))["token"]
    teacher = Client(a.base, room["token"], reconnect=False, name="teacher")  # places the class on A
    student = Client(b.base, student_token, name="student", backoff=(0.2, 0.5))  # B's URL: redirected to A
    try:
        await teacher.connect()
        await student.connect()
        assert student.node_url == _socket_url(a)
        before = await _sessions(cluster, b)
        assert [x["isActive"] for x in before] == [True]
        cluster.start_node()  # a third node starts: A is alive, its sessions are A's
        assert [(x["sessionId"], x["isActive"]) for x in await _sessions(cluster, b)] == [
            (before[0]["sessionId"], True)]
        assert [x["isActive"] for x in await _sessions(cluster, b, "t1")] == [True]
        cluster.kill(a)
        killed = time.monotonic()
        await student.wait_state(State.RECONNECTING, timeout=10)
        await student.wait_state(State.CONNECTED, timeout=20)
        moved_after = time.monotonic() - killed
        assert student.node_url == _socket_url(b)
        assert moved_after < 10, moved_after
        after = await _sessions(cluster, b)
        # The same session, still open: the move was no leave and join (no second session, nothing billed twice).
        assert [(x["sessionId"], x["joinedAt"], x["isActive"]) for x in after] == [
            (before[0]["sessionId"], before[0]["joinedAt"], True)]
        summary = await cluster.ok(b, "GET", "/v1/room/bio/summary")
        assert summary["status"] == "live"
        # A fourth node starts after A died: the teacher's session, left open on A, is in its reconnect grace from
        # A's last heartbeat (30 s here; tests/cluster/test_failover.py sees it close when the grace is out), so the
        # start closes nothing; the student's, held by B now, goes on.
        cluster.start_node()
        [teacher_session] = await _sessions(cluster, b, "t1")
        assert teacher_session["isActive"]
        assert [x["isActive"] for x in await _sessions(cluster, b)] == [True]
    finally:
        await teacher.close()
        await student.close()


async def _sessions(cluster: Cluster, node: Server, uid: str = "s1") -> list[dict]:
    data = await cluster.ok(node, "POST", "/v1/participant/sessions", {"uid": uid, "roomId": "bio"})
    return data["sessions"]
