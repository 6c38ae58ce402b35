"""One UDP port for all media (issue 14): the ICE-lite server carries every participant, drops what is not theirs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aioice import stun

from control.signaling import HUB
from sfu.client import SyntheticVideoTrack, ToneAudioTrack
from sfu.ice import IceConfig
from sfu.peer import SpentDtls
from sfu.router import Router
from sfu.rtcserver import MuxConnection, RtcServer, prioritize_reader, rtc_server_for
from tests.sfu.conftest import Classroom

# Media in the server process (CLASSCAST_SFU_WORKERS=0): the tests read its shared port, engine and counters.
pytestmark = pytest.mark.in_process_sfu("reads the SFU's shared media port, its engine and its counters")


def _router(classroom: Classroom) -> Router:
    return next(iter(classroom.server.app[HUB].sfu.routers.values()))


def _server(classroom: Classroom) -> RtcServer:
    sfu = classroom.server.app[HUB].sfu
    server = rtc_server_for(sfu.ice, sfu.bridge.engine, create=False)
    assert server is not None and server.listening
    return server


def _dtls(participant: Any) -> Any:
    return participant.peer.pc.getTransceivers()[0].receiver.transport


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _request(username: str, password: str | None, *, fingerprint: bool = True, nominate: bool = False) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLING"] = 1
    if nominate:
        message.attributes["USE-CANDIDATE"] = None
    if password is not None:
        message.add_message_integrity(password.encode())
    if not fingerprint:
        message.attributes.pop("FINGERPRINT", None)
    return bytes(message)


async def test_every_participant_goes_through_the_one_port(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240), "microphone": ToneAudioTrack()})
    students = [await classroom.client(await classroom.token("physics-1", f"s{i}"), name=f"s{i}")
                for i in range(2)]
    for student in students:
        frame = await asyncio.wait_for((await student.remote_track("camera")).recv(), 10)
        assert (frame.width, frame.height) == (320, 240)
    server = _server(classroom)
    participants = list(_router(classroom).participants.values())
    assert len(participants) == 3
    await _until(lambda: all(c.path() is not None for p in participants for c in p.peer._mux.values()))
    if server.engine is not None:  # native receive: the engine reads and unprotects the teacher's media
        teacher_transport = next(p.transport for p in participants if p.uid == "teacher")
        await _until(lambda: server.engine.rx_stats(teacher_transport)["packets"] > 10)
    fingerprints = set()
    for participant in participants:
        pc = participant.peer.pc
        transports = {t.receiver.transport for t in pc.getTransceivers()}
        assert len(transports) == 1  # bundled
        dtls = next(iter(transports))
        connection = dtls.transport._connection
        assert isinstance(connection, MuxConnection)  # no aioice socket of its own
        assert [c.port for c in connection.local_candidates] == [server.port]
        assert connection.path() is not None and connection.path()[0] == server._listeners[0].fileno()
        local = pc.localDescription.sdp
        assert "a=ice-lite" in local
        fingerprints |= {line for line in local.splitlines() if line.startswith("a=fingerprint:sha-256")}
    assert len(fingerprints) == 1, "one DTLS certificate for the process"
    for participant in participants:  # aiortc's receive path is replaced: none of its receivers' parts were made
        for transceiver in participant.peer.pc.getTransceivers():
            receiver = transceiver.receiver
            assert receiver._RTCRtpReceiver__remote_bitrate_estimator is None
            assert receiver._RTCRtpReceiver__jitter_buffer is None
    if server.engine is not None:
        # once the engine authenticated a client's packet, its DTLS session is let go (OpenSSL's ~90 kB), and
        # media keeps flowing both ways; a DTLS record that comes later is dropped and counted
        await _until(lambda: all(isinstance(_dtls(p)._ssl, SpentDtls) for p in participants))
        before = server.drops.get("dtls_after_handshake", 0)
        pair = next(iter(teacher.pc.getTransceivers())).receiver.transport.transport._connection._nominated[1]
        pair.protocol.transport.sendto(bytes([21, 0xFE, 0xFD]) + os.urandom(30), (server.config.hosts[0], server.port))
        await _until(lambda: server.drops.get("dtls_after_handshake", 0) == before + 1)
        for student in students:
            frame = await asyncio.wait_for((await student.remote_track("camera")).recv(), 10)
            assert (frame.width, frame.height) == (320, 240)
        assert all(_dtls(p).state == "connected" for p in participants)
    stats = server.stats()
    if server.engine is not None:
        assert stats["native_receive"]["packets"] > 10
        # the teacher's camera and microphone SSRCs are routed: the engine forwards them where it reads them
        assert server.engine.rx_stats(teacher_transport)["pushed"] > 10
        if hasattr(server.engine, "reader_start") and server.config.media_reader == "thread":  # on its own thread
            assert stats["reader"]["running"] and stats["reader"]["sockets"] == len(server._listeners)
            assert stats["reader"]["batches"] > 10 and stats["reader"]["overflow"] == 0
            # forwarding first when the loop's work wants the same core (CLASSCAST_READER_PRIORITY, 5 steps)
            if os.geteuid() == 0:
                assert _nice(stats["reader"]["thread"]) == max(-20, _nice(threading.get_native_id()) - 5)
    assert stats["connections"] == 3 and stats["nominations"] >= 3 and stats["binding_requests"] >= 3
    metrics = classroom.server.app[HUB].sfu.metrics()
    assert metrics["rtc"]["port"] == server.port


def _nice(tid: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def test_the_reader_thread_is_given_priority_where_the_process_may() -> None:
    """prioritize_reader: a thread `steps` nice steps above the caller's, the same after a second call; 0 steps
    leave it; a process without CAP_SYS_NICE (here: root's child turned nobody) changes no thread and says so in
    the log, once."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        tid = thread.native_id
        assert tid is not None
        own = _nice(threading.get_native_id())
        assert prioritize_reader(tid, 0) is None and _nice(tid) == own
        if os.geteuid() == 0:
            assert prioritize_reader(tid, 5) == prioritize_reader(tid, 5) == max(-20, own - 5) == _nice(tid)
            assert _nice(threading.get_native_id()) == own
    finally:
        stop.set()
        thread.join()
    unprivileged = (
        "import logging, os, threading, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from sfu.rtcserver import prioritize_reader\n"  # imported first: nobody may not read the interpreter's files
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "e = threading.Event(); t = threading.Thread(target=e.wait); t.start()\n"
        "own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
        "first, again = prioritize_reader(t.native_id, 5), prioritize_reader(t.native_id, 5)\n"
        "print('result', first, again, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - own,\n"
        "      os.getpriority(os.PRIO_PROCESS, t.native_id) - own); e.set(); t.join()\n")
    if os.geteuid() == 0:
        out = subprocess.run([sys.executable, "-c", unprivileged], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parents[2])
        assert "result None None 0 0" in out.stdout, out.stdout + out.stderr[-2000:]  # no thread changed
        assert out.stdout.count("raising it needs CAP_SYS_NICE") == 1  # said once
    assert IceConfig.from_env({}).reader_priority == 5
    assert IceConfig.from_env({"CLASSCAST_READER_PRIORITY": "0"}).reader_priority == 0
    for bad in ("-3", "20", "high"):
        with pytest.raises(ValueError, match="CLASSCAST_READER_PRIORITY must be a whole number"):
            IceConfig.from_env({"CLASSCAST_READER_PRIORITY": bad})


async def test_the_event_loop_reads_the_port_when_asked(classroom: Classroom) -> None:
    """CLASSCAST_MEDIA_READER=loop: no reader thread, the loop reads the port (as with the Python engine), and the
    class goes on the same; a value that is neither is refused with a clear message."""
    sfu = classroom.server.app[HUB].sfu
    sfu.ice = dataclasses.replace(sfu.ice, media_reader="loop")
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    student = await classroom.client(await classroom.token("physics-1", "s0"), name="s0")
    frame = await asyncio.wait_for((await student.remote_track("camera")).recv(), 10)
    assert (frame.width, frame.height) == (320, 240)
    server = _server(classroom)
    assert server.stats()["reader"] is None
    if server.engine is not None:
        assert server.engine.rx_stats()["pushed"] > 0
    assert IceConfig.from_env({"CLASSCAST_MEDIA_READER": "LOOP"}).media_reader == "loop"
    assert IceConfig.from_env({}).media_reader == "thread"
    with pytest.raises(ValueError, match="CLASSCAST_MEDIA_READER must be thread or loop"):
        IceConfig.from_env({"CLASSCAST_MEDIA_READER": "threads"})


async def test_bad_datagrams_are_dropped_and_counted_without_growth(classroom: Classroom,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"microphone": ToneAudioTrack()})
    server = _server(classroom)
    connection = next(iter(server._by_ufrag.values()))
    await _until(lambda: connection.path() is not None)
    before = dict(server.drops)
    username = f"{connection.local_username}:{connection.remote_username}"
    addresses = server.stats()["addresses"]
    target = (server.config.hosts[0], server.port)
    rng = os.urandom
    caplog.set_level(logging.DEBUG)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        n = 300
        for _ in range(n):
            attacker.sendto(bytes([200]) + rng(99), target)  # no protocol starts with 200
            attacker.sendto(_request(username, "wrong-password-wrong-pass"), target)
            attacker.sendto(_request("nobody:x", "whatever-password-whatever"), target)
            attacker.sendto(_request(username, connection.local_password,
                                     fingerprint=False), target)
            attacker.sendto(bytes([22, 0xFE, 0xFD]) + rng(60), target)  # a DTLS record from a stranger
            attacker.sendto(bytes([0x80, 111]) + rng(100), target)  # SRTP from a stranger
            attacker.sendto(b"\x00\x01" + rng(10), target)  # looks like STUN, too short to be one
            await asyncio.sleep(0)
        reasons = ("unknown_type", "stun_malformed", "stun_bad_integrity", "stun_unknown_ufrag",
                   "stun_no_fingerprint", "dtls_unknown_address", "rtp_unknown_address")
        # every kind was read (the last one sent may come in the reader's next batch), then each counted exactly n
        await _until(lambda: all(server.drops.get(r, 0) - before.get(r, 0) >= n for r in reasons))
        for reason in reasons:
            assert server.drops.get(reason, 0) - before.get(reason, 0) == n, reason
        assert server.stats()["addresses"] == addresses  # nothing learned from any of it
        # SRTP that fails authentication, from an address that did authenticate (this socket, with the password)
        attacker.sendto(_request(username, connection.local_password), target)
        reply = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(_nonblocking(attacker), 2048), 5)
        response = stun.parse_message(reply)
        assert response.message_class == stun.Class.RESPONSE
        assert response.check_message_integrity(connection.local_password.encode())
        assert response.attributes["XOR-MAPPED-ADDRESS"] == attacker.getsockname()
        header = struct.pack("!BBHII", 0x80, 111, 1, 1, 0x1234)
        for _ in range(50):
            attacker.sendto(header + rng(120), target)
        await _until(lambda: server.drops.get("srtp_auth_failed", 0) - before.get("srtp_auth_failed", 0) >= 50)
    assert connection.srtp_failures >= 50
    if server.engine is not None:  # the same from the client's own (selected) address: failed in C, counted there
        pair = next(iter(teacher.pc.getTransceivers())).receiver.transport.transport._connection._nominated[1]
        failed = server.engine.rx_stats()["auth_failed"]
        for _ in range(50):
            pair.protocol.transport.sendto(header + rng(120), target)
        await _until(lambda: server.engine.rx_stats()["auth_failed"] - failed >= 50)
        assert server.all_drops()["srtp_auth_failed"] >= connection.srtp_failures + 50
    assert not [r for r in caplog.records if r.name.startswith(("classcast.sfu", "aiortc", "aioice"))
                and r.levelno >= logging.INFO and "rtcserver" in r.name], "no log line per bad datagram"
    sfu = classroom.server.app[HUB].sfu
    metrics = sfu.metrics()
    assert metrics["drops"]["stun_bad_integrity"] >= n
    # a reason both count (send_error: the engine's copies, the server's STUN/DTLS datagrams) is their sum
    server.drop("send_error")
    engine_errors = sfu.bridge.engine.totals()["drops"].get("send_error", 0)
    assert sfu.metrics()["drops"]["send_error"] == engine_errors + server.drops["send_error"]


def _nonblocking(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    return sock


async def test_a_client_that_stops_answering_is_closed_by_consent(classroom: Classroom) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher", reconnect=False)
    await teacher.publish({"microphone": ToneAudioTrack()})
    server = _server(classroom)
    server.consent_timeout = 2.0
    participant = next(iter(_router(classroom).participants.values()))
    await _until(lambda: participant.peer.pc.connectionState == "connected")
    for transceiver in teacher.pc.getTransceivers():  # the client goes silent: no more consent checks
        connection = transceiver.receiver.transport.transport._connection
        if connection._query_consent_task is not None:
            connection._query_consent_task.cancel()
    started = time.monotonic()
    await _until(lambda: participant.peer.pc.connectionState in ("failed", "closed"), timeout=15)
    assert time.monotonic() - started < server.consent_timeout + 6
    assert server.drops.get("consent_expired", 0) >= 1
    assert participant.peer._mux and all(c.path() is None for c in participant.peer._mux.values())


def test_configuration() -> None:
    ice = IceConfig.from_env({})
    assert ice.single_port and ice.rtc_port == 7882 and ice.announced is None
    ice = IceConfig.from_env({"CLASSCAST_RTC_PORT": "9000", "CLASSCAST_ANNOUNCED_ADDRESS": "203.0.113.7"})
    assert ice.rtc_port == 9000 and ice.announced == "203.0.113.7"
    assert not IceConfig.from_env({"CLASSCAST_ICE_PORT_RANGE": "40000-40010"}).single_port
    for bad in ({"CLASSCAST_RTC_PORT": "80"}, {"CLASSCAST_RTC_PORT": "x"}, {"CLASSCAST_RTC_PORT": "70000"},
                {"CLASSCAST_ANNOUNCED_ADDRESS": "a b"}):
        with pytest.raises(ValueError):
            IceConfig.from_env(bad)


async def test_candidates_advertise_the_announced_address() -> None:
    server = RtcServer(IceConfig(rtc_port=0, announced="203.0.113.7"))
    await server.start()
    try:
        candidates = server.candidates()
        assert [(c.host, c.port, c.type) for c in candidates] == [("203.0.113.7", server.port, "host")]
        assert server.port != 0
        busy = RtcServer(IceConfig(rtc_port=server.port))  # the port is taken: the next one
        await busy.start()
        assert busy.port == server.port + 1 or busy.port > server.port
        busy.close()
    finally:
        server.close()


async def test_a_port_range_selects_the_per_connection_mode(classroom: Classroom) -> None:
    """CLASSCAST_ICE_PORT_RANGE keeps the old mode: a socket per connection in the range, full ICE, no a=ice-lite."""
    sfu = classroom.server.app[HUB].sfu
    sfu.ice = IceConfig(port_min=47300, port_max=47399)  # read by the rooms made from now on
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240)})
    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    frame = await asyncio.wait_for((await student.remote_track("camera")).recv(), 10)
    assert (frame.width, frame.height) == (320, 240)
    for participant in _router(classroom).participants.values():
        assert not participant.peer._mux
        connection = participant.peer.pc.getTransceivers()[0].receiver.transport.transport._connection
        assert not isinstance(connection, MuxConnection)
        assert all(47300 <= c.port <= 47399 for c in connection.local_candidates)
        assert "a=ice-lite" not in participant.peer.pc.localDescription.sdp
    assert sfu.metrics()["rtc"] is None


def test_a_closed_loops_server_gives_its_port_back() -> None:
    """A test suite runs one event loop per test and closes it: the server's linger timer never runs then, and
    each loop's socket kept a port of the range until none was left ('no free UDP port from 7882 to 7945', seen
    in a full run). The next server made closes the sockets of servers whose loop has closed."""
    from sfu.engine import new_engine

    config = IceConfig(rtc_port=0)
    engine = new_engine()

    async def start() -> RtcServer:
        server = rtc_server_for(config, engine)
        assert server is not None
        await server.start()
        return server

    old_loop = asyncio.new_event_loop()
    old = old_loop.run_until_complete(start())
    port = old.port
    old_loop.close()  # as pytest-asyncio does at the end of a test, the server never told
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))  # still held
    probe.close()
    new_loop = asyncio.new_event_loop()
    try:
        new = new_loop.run_until_complete(start())
        assert new is not old and not old.listening
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # given back
        probe.close()
        new.close()
    finally:
        new_loop.close()


async def test_a_failing_handler_loses_nothing_after_it() -> None:
    """The reader's queue is taken whole: when one datagram's handler raises, the datagrams after it are still
    handled, and the failure is counted (with one log line), never silent."""
    import pylibsrtp

    from sfu.engine import new_engine

    engine = new_engine()
    server = RtcServer(IceConfig(rtc_port=0), engine)
    await server.start()
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        source.bind(("127.0.0.1", 0))
        key = bytes(range(1, 31))
        tid = engine.add_transport()
        engine.set_srtp_rx(tid, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, key)
        engine.set_path(tid, server._listeners[0].fileno(), *source.getsockname())
        sender = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                    srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
        got: list[int] = []

        def receiver(kind: int, data: bytes, arrival: float, *flags: int) -> None:
            seq = struct.unpack_from("!H", data, 2)[0]
            got.append(seq)
            if seq == 1:
                raise RuntimeError("a handler's bug")

        server.register_receiver(tid, receiver)
        for seq in range(3):  # sent before the loop runs again: one batch (the reader's queue, or one recvmmsg)
            source.sendto(sender.protect(struct.pack("!BBHII", 0x80, 96, seq, 0, 0x42) + bytes(20)),
                          ("127.0.0.1", server.port))
        await _until(lambda: len(got) == 3)
        assert got == [0, 1, 2]
        assert server.drops.get("handler_error") == 1
    finally:
        source.close()
        server.close()
