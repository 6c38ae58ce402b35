"""WHIP ingest and WHEP playback with the Python client over HTTP, against the real server and SFU.

An encoder (here sfu/whip_client.py with aiortc's synthetic tracks) publishes with a teacher's token; a student on
the WebSocket receives its frames as from a browser teacher; a WHEP player receives them too; the session's PATCH
and DELETE behave as RFC 9725 says; the room's allowIngress and the token's role gate it.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from control.api import whip
from control.api.whip import SESSIONS
from sfu.client import SyntheticVideoTrack, ToneAudioTrack
from sfu.whip_client import WhipClient, WhipError
from tests.sfu.conftest import Classroom

INGRESS = {"customization": {"allowIngress": True}}


async def _frame_size(track: object, timeout: float = 10) -> tuple[int, int]:
    frame = await asyncio.wait_for(track.recv(), timeout)  # type: ignore[attr-defined]
    return frame.width, frame.height


async def _post(url: str, token: str | None, body: str, content_type: str = "application/sdp") -> tuple[int, str]:
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {token}"} if token else {})
    async with aiohttp.ClientSession() as s, s.post(url, data=body.encode(), headers=headers) as resp:
        return resp.status, await resp.text()


async def test_whip_publishes_like_a_teacher_and_whep_plays_it(classroom: Classroom) -> None:
    teacher_token = await classroom.create_room(**INGRESS)
    encoder = WhipClient(classroom.base + "/v1/whip/physics-1", teacher_token, ice=classroom.svc.config.ice)
    await encoder.publish({"camera": SyntheticVideoTrack(320, 240, 15), "microphone": ToneAudioTrack()})
    assert encoder.location is not None and encoder.location.startswith(classroom.base + "/v1/whip/physics-1/")
    assert encoder.answer is not None and encoder.answer.startswith("v=0") and encoder.etag
    await encoder.wait_connected()

    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    assert {p["uid"] for p in student.joined["roster"]} >= {"teacher", "s1"}  # type: ignore[index]
    sources = {(t["uid"], t["source"]) for t in student.joined["tracks"]}  # type: ignore[index]
    assert sources == {("teacher", "camera"), ("teacher", "microphone")}
    camera = await student.remote_track("camera", "teacher")
    assert await _frame_size(camera) == (320, 240)
    microphone = await student.remote_track("microphone", "teacher")
    assert (await asyncio.wait_for(microphone.recv(), 10)).sample_rate == 48000

    player = WhipClient(classroom.base + "/v1/whep/physics-1", await classroom.token("physics-1", "viewer"),
                        ice=classroom.svc.config.ice)
    await player.play("?quality=high")
    await player.wait_connected()
    for _ in range(100):
        if {"video", "audio"} <= set(player.tracks):
            break
        await asyncio.sleep(0.05)
    assert await _frame_size(player.tracks["video"]) == (320, 240)
    assert (await asyncio.wait_for(player.tracks["audio"].recv(), 10)).sample_rate == 48000
    await player.close()

    since = len(student.messages)
    status, _ = await encoder.request("DELETE")
    assert status == 200
    gone = await student.wait_for("track_unpublished", since=since)
    assert gone["track"]["uid"] == "teacher"
    status, body = await encoder.request("DELETE")
    assert status == 404 and "SESSION_NOT_FOUND" in body
    encoder.location = None
    await encoder.close()


async def test_patch_trickles_and_refuses_ice_restart(classroom: Classroom) -> None:
    teacher_token = await classroom.create_room(**INGRESS)
    encoder = WhipClient(classroom.base + "/v1/whip/physics-1", teacher_token, ice=classroom.svc.config.ice)
    await encoder.publish({"microphone": ToneAudioTrack()})
    ufrag = next(x[12:] for x in encoder.pc.localDescription.sdp.splitlines() if x.startswith("a=ice-ufrag:"))
    fragment = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:whatever\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n")
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    assert (await encoder.request("PATCH", fragment, frag))[0] == 204
    assert (await encoder.request("PATCH", fragment, frag | {"If-Match": encoder.etag or ""}))[0] == 204
    status, body = await encoder.request("PATCH", fragment, frag | {"If-Match": '"stale"'})
    assert status == 412, body
    status, body = await encoder.request("PATCH", fragment.replace(ufrag, "newfrag"), frag | {"If-Match": "*"})
    assert status == 422 and "ICE_RESTART_UNSUPPORTED" in body
    status, body = await encoder.request("PATCH", fragment.replace(ufrag, "newfrag"), frag)
    assert status == 422
    status, body = await encoder.request("PATCH", fragment, {"Content-Type": "application/sdp"})
    assert status == 415
    await encoder.wait_connected()
    await encoder.close()


async def test_ingest_is_gated_by_allow_ingress_role_and_token(classroom: Classroom) -> None:
    closed = await classroom.create_room("closed-room")
    offer = WhipClient(classroom.base, closed, ice=classroom.svc.config.ice)
    offer.pc.addTransceiver("audio", direction="sendonly")
    await offer.pc.setLocalDescription(await offer.pc.createOffer())
    sdp = offer.pc.localDescription.sdp
    status, body = await _post(classroom.base + "/v1/whip/closed-room", closed, sdp)
    assert status == 403 and "INGRESS_NOT_ALLOWED" in body and "allowIngress" in body

    teacher = await classroom.create_room("open-room", **INGRESS)
    student = await classroom.token("open-room", "s2")
    status, body = await _post(classroom.base + "/v1/whip/open-room", student, sdp)
    assert status == 403 and "Only a teacher, a moderator or an admin" in body
    status, body = await _post(classroom.base + "/v1/whip/open-room", None, sdp)
    assert status == 401
    status, body = await _post(classroom.base + "/v1/whip/closed-room", teacher, sdp)
    assert status == 403 and "another room" in body
    status, body = await _post(classroom.base + "/v1/whip/open-room", teacher, sdp, "application/json")
    assert status == 415
    status, body = await _post(classroom.base + "/v1/whip/open-room", teacher, "v=0\r\nnonsense\r\n")
    assert status == 400
    status, body = await _post(classroom.base + "/v1/whep/open-room", student, sdp)
    assert status == 409 and "NOTHING_PUBLISHED" in body  # nobody publishes yet
    await offer.pc.close()


async def test_a_whip_session_ends_with_the_class(classroom: Classroom) -> None:
    teacher_token = await classroom.create_room(**INGRESS)
    encoder = WhipClient(classroom.base + "/v1/whip/physics-1", teacher_token, ice=classroom.svc.config.ice)
    await encoder.publish({"camera": SyntheticVideoTrack(160, 120, 15)})
    await encoder.wait_connected()
    status, _ = await classroom.rest("DELETE", "/v1/room/physics-1")
    assert status == 200
    # The class's end removes the session (its SFU participant leaves) without the client asking.
    sessions = classroom.server.app[SESSIONS].sessions
    for _ in range(100):
        if not sessions:
            break
        await asyncio.sleep(0.05)
    assert not sessions
    status, body = await encoder.request("DELETE")
    assert status == 410, body  # the token's class is over
    encoder.location = None
    await encoder.close()
    try:
        await WhipClient(classroom.base + "/v1/whip/physics-1", teacher_token).publish(
            {"camera": SyntheticVideoTrack(160, 120, 15)})
        raise AssertionError("a WHIP publish into an ended class was accepted")
    except WhipError as exc:
        assert exc.status in (401, 404, 410), exc


EMPTY_OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


async def _offer(classroom: Classroom, kind: str, direction: str) -> str:
    pc = WhipClient(classroom.base, "", ice=classroom.svc.config.ice).pc
    pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_whep_and_whip_offers_that_could_never_connect_are_refused(classroom: Classroom) -> None:
    """An offer with nothing to play opened a session that no connection state would ever end: it billed and stayed
    in the roster for good. One without a fingerprint hung in `connecting` the same way."""
    teacher = await classroom.create_room(**INGRESS)
    encoder = WhipClient(classroom.base + "/v1/whip/physics-1", teacher, ice=classroom.svc.config.ice)
    await encoder.publish({"microphone": ToneAudioTrack()})
    student = await classroom.token("physics-1", "s1")
    url = classroom.base + "/v1/whep/physics-1"
    for sdp, why in ((EMPTY_OFFER, "receives"), (await _offer(classroom, "audio", "sendonly"), "receives"),
                     ((await _offer(classroom, "audio", "recvonly")).replace("a=fingerprint:", "a=x-print:"),
                      "fingerprint")):
        status, body = await _post(url, student, sdp)
        assert status == 400 and "BAD_SDP" in body and why in body, body
    sdp = (await _offer(classroom, "audio", "sendonly")).replace("a=fingerprint:", "a=x-print:")
    status, body = await _post(classroom.base + "/v1/whip/physics-1", teacher, sdp)
    assert status == 400 and "fingerprint" in body, body
    sessions = classroom.server.app[SESSIONS].sessions
    assert [s.kind for s in sessions.values()] == ["whip"]  # the encoder's own
    await encoder.close()


async def test_one_way_sessions_are_capped_and_end_when_they_never_connect(classroom: Classroom,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whip, "CONNECT_DEADLINE_S", 3.0)
    teacher = await classroom.create_room(**INGRESS)
    encoder = WhipClient(classroom.base + "/v1/whip/physics-1", teacher, ice=classroom.svc.config.ice)
    await encoder.publish({"microphone": ToneAudioTrack()})
    await encoder.wait_connected()
    student = await classroom.token("physics-1", "s1")
    url = classroom.base + "/v1/whep/physics-1"
    offer = await _offer(classroom, "audio", "recvonly")  # answered, never connected: nobody runs its ICE
    for _ in range(whip.MAX_SESSIONS_PER_UID):
        status, body = await _post(url, student, offer)
        assert status == 201, body
    status, body = await _post(url, student, offer)
    assert status == 409 and "TOO_MANY_SESSIONS" in body, body
    others = await classroom.token("physics-1", "s2")  # at once: each is counted while it opens, not only once open
    statuses = [status for status, _ in await asyncio.gather(*(_post(url, others, offer) for _ in range(10)))]
    assert sorted(statuses) == [201] * whip.MAX_SESSIONS_PER_UID + [409] * (10 - whip.MAX_SESSIONS_PER_UID)
    sessions = classroom.server.app[SESSIONS].sessions
    assert sum(s.uid == "s1" for s in sessions.values()) == whip.MAX_SESSIONS_PER_UID
    assert not classroom.server.app[SESSIONS].opening  # every reservation handed back
    room = await classroom.svc.store.get_room(classroom.org.id, "physics-1")
    assert room is not None
    for _ in range(200):  # the deadline ends them: the registry's entries and the sessions that bill
        active = {p.uid for p in await classroom.svc.store.active_participants(room.sid)}
        if active == {"teacher"} and not any(s.uid in ("s1", "s2") for s in sessions.values()):
            break
        await asyncio.sleep(0.05)
    assert active == {"teacher"}
    assert [s.uid for s in sessions.values()] == ["teacher"]  # the encoder connected: it stays
    status, body = await _post(url, student, offer)
    assert status == 201, body  # room for new ones again
    await encoder.close()
