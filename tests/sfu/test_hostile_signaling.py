"""Hostile signaling: what a client can send on its socket gets the documented error code, never a traceback, and
whatever the server sends is strict JSON (issue 13, defects 3 to 5 and their siblings)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from control.signaling import HUB
from control.workers import WorkerPool
from sfu.client import ToneAudioTrack
from tests.sfu.conftest import Classroom


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"the server sent {name}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


class RawSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def next(self, kind: str | None = None, timeout: float = 10) -> dict[str, Any]:
        """The next message (of `kind`, skipping others such as roster events)."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            message = _strict(msg.data)
            if kind is None or message.get("type") == kind:
                return message


async def _joined(classroom: Classroom, session: aiohttp.ClientSession, token: str) -> RawSocket:
    ws = await session.ws_connect(classroom.base.replace("http", "ws") + f"/v1/rtc?token={token}")
    sock = RawSocket(ws)
    await sock.send('{"type": "join"}')
    await sock.next("joined")
    return sock


def _no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    faults = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert not faults, [r.getMessage() for r in faults]


async def test_nan_ping_is_refused_and_nothing_sent_is_nan(classroom: Classroom,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Defect 5: `{"type":"ping","ts":NaN}` was echoed as NaN, which a browser's JSON.parse throws on."""
    token = await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        sock = await _joined(classroom, session, token)
        for text in ('{"type": "ping", "ts": NaN}', '{"type": "ping", "ts": Infinity}',
                     '{"type": "ping", "ts": -Infinity}', '{"type": "chat", "text": "hi", "x": NaN}'):
            await sock.send(text)
            reply = await sock.next("error")
            assert reply["code"] == "BAD_MESSAGE", text
        # Found by the signaling fuzz target: a lone surrogate escape is valid JSON syntax but no UTF-8 text; the
        # chat message reached the store and came back SERVER_ERROR.
        await sock.send('{"type": "chat", "text": "\\ud800"}')
        assert (await sock.next("error"))["code"] == "BAD_MESSAGE"
        await sock.send('{"type": "chat", "text": "\\ud83d\\ude00 fine"}')  # a proper pair is text
        assert (await sock.next("chat"))["message"]["text"] == "\U0001F600 fine"
        await sock.send('{"type": "ping", "ts": 1.5e308}')
        assert (await sock.next("pong"))["ts"] == 1.5e308
        await sock.ws.close()
    _no_server_errors(caplog)


async def test_deeply_nested_json_is_bad_message_not_a_server_error(classroom: Classroom,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Defect 4: a deeply nested message raised RecursionError: SERVER_ERROR and a traceback per message."""
    token = await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        sock = await _joined(classroom, session, token)
        deep = 20_000  # within the 256 KiB message limit
        for text in ("[" * deep + "]" * deep,
                     '{"type": "chat", "text": ' + '{"a":' * deep + "1" + "}" * deep + "}"):
            await sock.send(text)
            reply = await sock.next("error")
            assert reply["code"] == "BAD_MESSAGE" and "nested" in reply["message"]
        await sock.send('{"type": "ping", "ts": 7}')
        assert (await sock.next("pong"))["ts"] == 7  # the connection and the server go on
        await sock.ws.close()
    _no_server_errors(caplog)


DTLS = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n"  # past the first check, to the parsers
MALFORMED_SDP = [
    DTLS + "m=video\r\n",  # aiortc: AssertionError
    DTLS + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96\r\n",  # ValueError (unpack)
    DTLS + "m=video 9 UDP/TLS/RTP/SAVPF x\r\na=mid:0\r\n",  # ValueError (int)
    DTLS + "a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=extmap:x y\r\n",
    DTLS + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtcp:abc\r\n",
    DTLS + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",  # no a=mid
    DTLS + "".join(f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\na=recvonly\r\n" for i in range(40)),
    # aiortc took these and failed later in a task of its own: the connection hung in `connecting`
    "v=0\r\na=setup:actpass\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n",  # no fingerprint
    "v=0\r\na=fingerprint:sha-256 AB:CD\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n",  # no setup
    # more candidates than trickling may bring
    DTLS + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
    + "".join(f"a=candidate:1 1 udp 2130706431 127.0.0.1 {10000 + i} typ host\r\n" for i in range(70)),
]


async def test_malformed_offers_are_bad_sdp(classroom: Classroom, caplog: pytest.LogCaptureFixture) -> None:
    """Defect 3: aiortc's SDP parser raises assertion and index errors that nothing caught: SERVER_ERROR."""
    token = await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        sock = await _joined(classroom, session, token)
        await sock.send('{"type": "publish", "tracks": [{"source": "camera", "mid": "0"}]}')
        await sock.next("publish_ready")
        for sdp in MALFORMED_SDP:
            await sock.send(json.dumps({"type": "offer", "sdp": sdp, "tracks": [{"source": "camera", "mid": "0"}]}))
            reply = await sock.next("error")
            assert reply["code"] == "BAD_SDP" and reply["ref"] == "offer", (sdp[:60], reply)
        # The same connection can still publish properly afterwards: nothing was left half-negotiated.
        await sock.send('{"type": "ping", "ts": 1}')
        assert (await sock.next("pong"))["ts"] == 1
        await sock.ws.close()
    _no_server_errors(caplog)


async def test_trickled_candidates_are_bounded(classroom: Classroom, caplog: pytest.LogCaptureFixture) -> None:
    token = await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        sock = await _joined(classroom, session, token)
        codes = []
        for port in range(10000, 10070):
            line = f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
            await sock.send(json.dumps({"type": "candidate",
                                        "candidate": {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}}))
        await sock.send('{"type": "ping", "ts": 2}')
        while True:
            message = await sock.next()
            if message["type"] == "pong":
                break
            if message["type"] == "error":
                codes.append(message["code"])
        assert codes and set(codes) == {"BAD_MESSAGE"} and len(codes) == 70 - 64
        await sock.ws.close()
    _no_server_errors(caplog)


async def test_an_offer_of_codecs_the_server_cannot_forward_is_unsupported_codec(
        classroom: Classroom, caplog: pytest.LogCaptureFixture) -> None:
    """aiortc's own refusal said "Failed to set remote audio description send parameters" as BAD_SDP."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    lines = pc.localDescription.sdp.split("\r\n")
    await pc.close()
    opus = next(line.split()[0][len("a=rtpmap:"):] for line in lines if "opus/48000" in line)
    lines = [line.replace(f" {opus} ", " ").replace(f" {opus}", "") if line.startswith("m=audio") else line
             for line in lines if not line.startswith((f"a=rtpmap:{opus} ", f"a=fmtp:{opus} ", f"a=rtcp-fb:{opus} "))]
    sdp = "\r\n".join(lines)
    mid = next(line[len("a=mid:"):] for line in lines if line.startswith("a=mid:"))
    assert "opus" not in sdp.lower() and "PCMU" in sdp
    token = await classroom.create_room()
    async with aiohttp.ClientSession() as session:
        sock = await _joined(classroom, session, token)
        tracks = [{"source": "microphone", "mid": mid}]
        await sock.send(json.dumps({"type": "publish", "tracks": tracks}))
        await sock.next("publish_ready")
        await sock.send(json.dumps({"type": "offer", "sdp": sdp, "tracks": tracks}))
        reply = await sock.next("error")
        assert reply["code"] == "UNSUPPORTED_CODEC" and "audio/PCMU" in reply["message"] \
            and "Opus" in reply["message"], reply
        await sock.ws.close()
    _no_server_errors(caplog)


async def test_an_answer_that_does_not_receive_says_so(classroom: Classroom,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A student's answer turning the offered m-section around (sendonly) was UNSUPPORTED_CODEC "cannot receive
    audio/opus": the codec was fine, the direction was not."""
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"microphone": ToneAudioTrack()})
    async with aiohttp.ClientSession() as session:
        token = await classroom.token("physics-1", "s1")
        sock = RawSocket(await session.ws_connect(classroom.base.replace("http", "ws") + f"/v1/rtc?token={token}"))
        await sock.send('{"type": "join"}')
        offer = await sock.next("offer")  # the server's offer of the teacher's track comes before `joined`
        pc = RTCPeerConnection()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp.replace("a=recvonly", "a=sendonly")
        finally:
            await pc.close()
        await sock.send(json.dumps({"type": "answer", "sdp": answer}))
        reply = await sock.next("error")
        assert reply["code"] == "NEGOTIATION" and "does not receive" in reply["message"], reply
        await sock.ws.close()
    await teacher.close()
    _no_server_errors(caplog)


async def test_what_msgpack_or_a_set_cannot_take_is_bad_message(classroom: Classroom,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """An integer past 64 bits in a media message could not reach the SFU worker (msgpack): SERVER_ERROR, a
    traceback and a request's future left behind per message. A publish whose source was a dict: a worker's
    traceback. A ping of 1e999 (Python reads an infinity) got no answer: its pong was not JSON."""
    token = await classroom.create_room()
    media = classroom.server.app[HUB].sfu
    async with aiohttp.ClientSession() as session:
        sock = await _joined(classroom, session, token)
        for text in ('{"type": "candidate", "candidate": null, "x": 18446744073709551616}',
                     '{"type": "set_quality", "quality": "auto", "maxWidth": 1' + "0" * 30 + "}",
                     '{"type": "publish", "tracks": [{"source": {"a": 1}}]}',
                     '{"type": "publish", "tracks": [{"source": ["camera"]}]}',
                     '{"type": "ping", "ts": 1e999}'):
            await sock.send(text)
            reply = await sock.next("error")
            assert reply["code"] == "BAD_MESSAGE", (text, reply)
        await sock.send('{"type": "ping", "ts": 3}')
        assert (await sock.next("pong"))["ts"] == 3
        await sock.ws.close()
    if isinstance(media, WorkerPool):  # the close's own leave may be in flight: the refused ones never are
        for _ in range(100):
            if not any(w.pending for w in media.workers):
                break
            await asyncio.sleep(0.05)
        assert not any(w.pending for w in media.workers), [w.pending for w in media.workers]
    _no_server_errors(caplog)


async def test_rest_bodies_are_strict_json(classroom: Classroom) -> None:
    async with aiohttp.ClientSession() as session:
        for body in ('{"roomId": "r1", "title": "T", "participant": {"uid": "t", "name": "T", "role": "TEACHER", '
                     '"metadata": {"x": NaN}}}',
                     '{"roomId": "r1", "title": "\\udfff", '
                     '"participant": {"uid": "t", "name": "T", "role": "TEACHER"}}',
                     '{"roomId": "r1", "title": "T", "x": ' + "[" * 10_000 + "]" * 10_000 + "}"):
            async with session.post(classroom.base + "/v1/room/create", data=body,
                                    headers={"VF-ORG-ID": classroom.org.id,
                                             "Content-Type": "application/json"}) as resp:
                assert resp.status == 400
                reply = _strict(await resp.text())
                assert reply["code"] == "INVALID_JSON"
