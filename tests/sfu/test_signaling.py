"""The signaling protocol: roles, lifecycle events, classroom interaction, bad input, reconnection."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any

import aiohttp
import pytest

from sfu.client import Client, ClientError, State, SyntheticVideoTrack, ToneAudioTrack
from sfu.peer import negotiation_turn
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _frame_size, _router


async def test_join_returns_room_self_and_roster(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    joined = student.joined
    assert joined is not None
    assert joined["room"]["roomId"] == "physics-1" and joined["room"]["title"] == "Physics"
    assert joined["participant"]["uid"] == "s1" and joined["participant"]["role"] == "STUDENT"
    assert "publish" not in joined["participant"]["permissions"]
    assert {p["uid"] for p in joined["roster"]} == {"teacher", "s1"}
    assert "hands" not in joined  # the queue is for teachers and moderators
    msg = await teacher.wait_for("participant_joined")
    assert msg["participant"]["uid"] == "s1"
    assert (await teacher.request({"type": "ping", "ts": 5}, "pong"))["ts"] == 5


@pytest.mark.in_process_sfu("reads the router's producers")
async def test_student_cannot_publish_and_nothing_is_forwarded(classroom: Classroom) -> None:
    await classroom.client(await classroom.create_room(), name="teacher")
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    other = await classroom.client(await classroom.token("physics-1", "s2"), name="s2")
    with pytest.raises(ClientError) as err:
        await student.publish({"camera": SyntheticVideoTrack()})
    assert err.value.code == "FORBIDDEN"
    # An offer without permission, whatever its SDP says, is refused too.
    pc = student.pc
    assert pc is not None
    pc.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    reply = await student.request({"type": "offer", "sdp": pc.localDescription.sdp,
                                   "tracks": [{"source": "camera", "mid": "0"}]}, "error",
                                  predicate=lambda m: m.get("ref") == "offer")
    assert reply["code"] in ("FORBIDDEN", "NEGOTIATION")
    await asyncio.sleep(0.5)
    assert not _router(classroom).producers
    assert not other.remote


async def test_malformed_messages_get_errors_and_the_server_lives(classroom: Classroom) -> None:
    token = await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(classroom.base.replace("http", "ws") + f"/v1/rtc?token={token}")
        bad = ["not json", "[1,2]", '{"no": "type"}', '{"type": 5}', '{"type": "publish"}',
               '{"type": "fly"}', json.dumps({"type": "join"})]
        replies = []
        for text in bad:
            await ws.send_str(text)
        while len(replies) < len(bad):
            replies.append(json.loads((await ws.receive(timeout=5)).data))
        codes = [r.get("code") for r in replies[:6]]
        assert codes == ["BAD_MESSAGE", "BAD_MESSAGE", "BAD_MESSAGE", "BAD_MESSAGE", "NOT_JOINED", "NOT_JOINED"]
        assert replies[6]["type"] == "joined"
        for text in ['{"type": "offer", "sdp": "garbage", "tracks": [{"source": "camera"}]}',
                     '{"type": "publish", "tracks": [{"source": "webcam"}]}',
                     '{"type": "answer", "sdp": "v=0"}', '{"type": "candidate", "candidate": 7}',
                     '{"type": "chat", "text": ""}', '{"type": "poll_answer", "pollId": "nope", "option": 0}',
                     '{"type": "mute", "source": "camera", "muted": "yes"}', '{"type": "join"}',
                     '{"type": "kick", "uid": 12}']:
            await ws.send_str(text)
            reply = json.loads((await ws.receive(timeout=5)).data)
            assert reply["type"] == "error", text
        await ws.send_bytes(b"\x00\x01")
        assert json.loads((await ws.receive(timeout=5)).data)["code"] == "BAD_MESSAGE"
        await ws.send_str(json.dumps({"type": "ping"}))
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
        await ws.close()
    status, body = await classroom.rest("GET", "/v1/room/physics-1/status")
    assert status == 200


async def test_bad_tokens_are_refused_with_a_reason(classroom: Classroom) -> None:
    await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(classroom.base.replace("http", "ws") + "/v1/rtc?token=forged")
        msg = json.loads((await ws.receive(timeout=5)).data)
        assert msg == {"type": "error", "code": "INVALID_TOKEN", "message": msg["message"]}
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_hands_polls_and_chat(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    s1 = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    s2 = await classroom.client(await classroom.token("physics-1", "s2"), name="s2")

    await s1.send({"type": "raise_hand"})
    # Two sockets give no order between them on the server: s2 raises once s1's hand is known to be up.
    await teacher.wait_for("hand_raised", lambda m: m["uid"] == "s1")
    await s2.send({"type": "raise_hand"})
    hands = await teacher.wait_for("hands", lambda m: len(m["queue"]) == 2)
    assert [h["uid"] for h in hands["queue"]] == ["s1", "s2"]
    assert not [m for m in s1.messages if m["type"] == "hands"]  # students don't see the queue
    assert (await s2.wait_for("hand_raised", lambda m: m["uid"] == "s1"))["uid"] == "s1"
    with pytest.raises(ClientError) as err:
        await s1.request({"type": "lower_hand", "uid": "s2"}, "hand_lowered")
    assert err.value.code == "FORBIDDEN"
    await teacher.send({"type": "lower_hand", "uid": "s1"})
    hands = await teacher.wait_for("hands", lambda m: [h["uid"] for h in m["queue"]] == ["s2"])

    with pytest.raises(ClientError) as err:
        await s1.request({"type": "poll_create", "question": "Q?", "options": ["a", "b"]}, "poll_created")
    assert err.value.code == "FORBIDDEN"
    created = await teacher.request({"type": "poll_create", "question": "Is light a wave?",
                                     "options": ["Yes", "No", "Both"]}, "poll_created")
    poll_id = created["poll"]["pollId"]
    await s1.wait_for("poll_created")
    answered = await s1.request({"type": "poll_answer", "pollId": poll_id, "option": 2}, "poll_answered")
    assert answered["option"] == 2
    with pytest.raises(ClientError) as err:
        await s1.request({"type": "poll_answer", "pollId": poll_id, "option": 0}, "poll_answered",
                         timeout=3)
    assert err.value.code == "ALREADY_ANSWERED"
    await s2.request({"type": "poll_answer", "pollId": poll_id, "option": 2}, "poll_answered")
    live = await teacher.wait_for("poll_results", lambda m: m["results"]["total"] == 2)
    assert live["results"]["counts"] == [0, 0, 2]
    closed = await teacher.request({"type": "poll_close", "pollId": poll_id}, "poll_closed")
    assert closed["poll"]["results"] == {"counts": [0, 0, 2], "total": 2}
    assert (await s2.wait_for("poll_closed"))["poll"]["results"]["total"] == 2

    await s2.send({"type": "chat", "text": "  Hello class  "})
    msg = await teacher.wait_for("chat")
    assert msg["message"]["text"] == "Hello class" and msg["message"]["uid"] == "s2"

    # A participant who reconnects is given the current state.
    s3 = await classroom.client(await classroom.token("physics-1", "s3"), name="s3")
    assert s3.joined is not None
    assert [m["text"] for m in s3.joined["chat"]] == ["Hello class"]
    assert s3.joined["polls"][0]["results"]["counts"] == [0, 0, 2]
    late_teacher = await classroom.client(await classroom.token("physics-1", "mod", "MODERATOR"), name="mod")
    assert [h["uid"] for h in late_teacher.joined["hands"]] == ["s2"]  # type: ignore[index]


async def test_a_class_joining_at_once_reads_its_brief_once_and_the_next_joiner_sees_a_change(
        classroom: Classroom) -> None:
    """The topic, chat, captions, recording and polls of `joined` are read once for a class that joins together
    (control/room_brief.py), and a chat message sent meanwhile is in the next joiner's `joined`."""
    from control.signaling import HUB

    briefs = classroom.server.app[HUB].briefs
    briefs._max_age = 60.0  # the count below must not depend on how fast this machine joins five students
    reads: list[str] = []
    load = briefs._load

    async def counted(room: Any) -> Any:
        reads.append(room.sid)
        return await load(room)

    briefs._load = counted
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    students = [await classroom.client(await classroom.token("physics-1", f"s{i}"), name=f"s{i}") for i in range(5)]
    assert len(reads) == 1
    await students[0].send({"type": "chat", "text": "Page 12"})
    await teacher.wait_for("chat")  # the hub has handled the chat's event
    late = await classroom.client(await classroom.token("physics-1", "late"), name="late")
    assert late.joined is not None
    assert [m["text"] for m in late.joined["chat"]] == ["Page 12"]
    assert len(reads) == 2


async def test_kick_closes_the_connection_and_the_uid_cannot_return(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    token = await classroom.token("physics-1", "s1")
    student = await classroom.client(token, name="s1")
    started = time.monotonic()
    await teacher.send({"type": "kick", "uid": "s1", "reason": "spam"})
    await student.wait_state(State.KICKED, timeout=1.0)
    removed = await teacher.wait_for("participant_removed")
    assert removed["participant"]["uid"] == "s1" and removed["self"] is False
    await asyncio.wait_for(student.socket_closed.wait(), 1.0)
    assert time.monotonic() - started < 1.0
    again = Client(classroom.base, token, reconnect=False)
    classroom.clients.append(again)
    with pytest.raises(ClientError) as err:
        await again.connect()
    assert err.value.code == "PARTICIPANT_REMOVED"
    assert again.state == State.KICKED


async def test_students_cannot_moderate(classroom: Classroom) -> None:
    await classroom.client(await classroom.create_room(), name="teacher")
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    for message in ({"type": "kick", "uid": "teacher"}, {"type": "end_class"},
                    {"type": "mute_participant", "uid": "teacher"}):
        with pytest.raises(ClientError) as err:
            await student.request(message, "never", timeout=3)
        assert err.value.code == "FORBIDDEN"
    moderator = await classroom.client(await classroom.token("physics-1", "m", "MODERATOR"), name="m")
    with pytest.raises(ClientError) as err:
        await moderator.request({"type": "end_class"}, "class_ended", timeout=3)
    assert err.value.code == "FORBIDDEN"


@pytest.mark.in_process_sfu("reads the SFU's routers")
async def test_end_class_closes_everyone_and_ends_the_room(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    students = [await classroom.client(await classroom.token("physics-1", f"s{i}"), name=f"s{i}")
                for i in range(2)]
    await _frame_size(await students[0].remote_track("camera"))
    started = time.monotonic()
    await teacher.send({"type": "end_class"})
    for c in (teacher, *students):
        await c.wait_state(State.ENDED, timeout=1.0)
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.3)
    assert not classroom.server.app[__import__("control.signaling", fromlist=["HUB"]).HUB].sfu.routers
    status, body = await classroom.rest("GET", "/v1/room/physics-1/summary")
    assert body["data"]["status"] == "finished" and body["data"]["totalParticipants"] == 3


@pytest.mark.in_process_sfu("reads the microphone producer's counters")
async def test_moderator_mute_stops_forwarding_audio(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"microphone": ToneAudioTrack()})
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await student.remote_track("microphone")
    status, _ = await classroom.rest("POST", "/v1/room/physics-1/participants/teacher/mute")
    assert status == 200
    await teacher.wait_for("participant_muted")
    muted = await student.wait_for("track_muted", lambda m: m["track"]["muted"] is True)
    assert muted["track"]["source"] == "microphone"
    mic = next(p for p in _router(classroom).producers.values() if p.source == "microphone")
    sent = mic.consumers[0].slot.packets_sent
    await asyncio.sleep(0.5)
    assert mic.consumers[0].slot.packets_sent == sent, "nothing is forwarded while muted"
    await classroom.rest("POST", "/v1/room/physics-1/participants/teacher/unmute")
    await student.wait_for("track_muted", lambda m: m["track"]["muted"] is False)
    await asyncio.sleep(0.5)
    assert mic.consumers[0].slot.packets_sent > sent


async def test_publisher_mute_state_is_announced(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack()})
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await teacher.send({"type": "mute", "source": "camera", "muted": True})
    msg = await student.wait_for("track_muted")
    assert msg["track"]["muted"] is True and msg["track"]["source"] == "camera"


async def test_reconnect_keeps_one_participant(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await _frame_size(await student.remote_track("camera"))
    before = len(teacher.messages)
    await teacher.drop()  # the teacher's network goes away for a moment
    await teacher.wait_state(State.RECONNECTING, timeout=5)
    await teacher.wait_state(State.CONNECTED, timeout=10)
    assert teacher.states[-3:] == [State.CONNECTED, State.RECONNECTING, State.CONNECTED]
    # the student keeps receiving the teacher after the teacher republished
    track = await student.remote_track("camera")
    for _ in range(10):
        await _frame_size(track, timeout=5)
    await asyncio.sleep(0.3)
    left = [m for m in student.messages if m["type"] == "participant_left"]
    assert not left, "a reconnect within the grace period is not a leave"
    assert not [m for m in teacher.messages[before:] if m["type"] == "participant_joined"]
    status, body = await classroom.rest("GET", "/v1/room/physics-1/status")
    assert body["data"]["participantCount"] == 2
    sessions = await classroom.svc.store.room_sessions((await classroom.svc.store.get_room(
        classroom.org.id, "physics-1")).sid)  # type: ignore[union-attr]
    assert len([s for s in sessions if s.uid == "teacher"]) == 1


async def test_a_drop_longer_than_the_grace_is_a_leave(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    student = Client(classroom.base, await classroom.token("physics-1", "s1"), reconnect=False)
    classroom.clients.append(student)
    await student.connect()
    await student.drop()
    msg = await teacher.wait_for("participant_left", timeout=5)
    assert msg["participant"]["uid"] == "s1" and msg["reason"] == "disconnected"


async def test_transport_restart_over_the_same_socket(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack()})
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    await _frame_size(await student.remote_track("camera"))
    await student.restart()
    await student.wait_for("restarted")
    track = await student.remote_track("camera", timeout=10)
    assert await _frame_size(track) == (320, 240)


async def test_closing_a_client_while_it_reconnects_ends_its_reconnect(classroom: Classroom) -> None:
    """close() during the reconnect's backoff: the reconnect must not go on with the closed session and die with an
    exception nobody retrieves (the Python client's users saw 'Task exception was never retrieved')."""
    await classroom.client(await classroom.create_room(), name="teacher")
    student = Client(classroom.base, await classroom.token("physics-1", "s1"), name="s1", backoff=(0.5, 1.0))
    classroom.clients.append(student)
    await student.connect()
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        await student.drop()
        await student.wait_state(State.RECONNECTING, timeout=5)
        await student.close()
        await asyncio.sleep(1.0)  # past the backoff: a reconnect left running would have tried by now
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled, [c.get("message") for c in unhandled]
    assert student.state == State.RECONNECTING  # closed by its user, not turned into an error or a new session


@pytest.mark.in_process_sfu("holds the process's negotiation turn and reads the router's consumers")
async def test_a_teacher_and_a_student_leaving_at_once_end_the_teachers_session(classroom: Classroom) -> None:
    """The teacher leaves while a student is leaving too: the teacher's unpublish waits for its turn to offer that
    student the track's removal, and the student's connection closes meanwhile. The other student is still taken
    off the track, and the teacher's session ends (a failed leave used to keep it open, billed, and the track
    held by the other student)."""
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    s1 = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    s2 = await classroom.client(await classroom.token("physics-1", "s2"), name="s2")
    for student in (s1, s2):
        await student.remote_track("camera")
    router = _router(classroom)
    async with negotiation_turn(None):  # every offer of this process waits for the turn this test holds
        await teacher.close()
        deadline = time.monotonic() + 5
        while _present(router, "teacher"):  # the teacher's leave is under way (then waits to offer s1 the removal)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await s1.close()
        while _present(router, "s1"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    deadline = time.monotonic() + 5
    while True:
        status, body = await classroom.rest("POST", "/v1/participant/sessions",
                                            {"uid": "teacher", "roomId": "physics-1"})
        assert status == 200, body
        if not body["data"]["sessions"][0]["isActive"]:
            break
        assert time.monotonic() < deadline, "the teacher's session is still open"
        await asyncio.sleep(0.1)
    [other] = [p for p in router.participants.values() if p.uid == "s2"]
    assert not other.consumers
    assert s2.state == State.CONNECTED


def _present(router: Any, uid: str) -> bool:
    return any(p.uid == uid for p in router.participants.values())
