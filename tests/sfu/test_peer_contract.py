"""Contract + loopback tests for sfu/peer.py (aiortc used only for SDP/ICE/DTLS/SRTP).

(a) Every aiortc/aioice private internal that sfu/peer.py relies on still exists
    with the expected kind and parameters, and the call sites that make the
    per-instance hooks effective are still there.
(b) End to end on 127.0.0.1 only: aiortc publisher (real VP8 encoding) ->
    server Peer (raw RTP via on_rtp, no decoder thread) -> SSRC/PT rewrite ->
    server Peer -> aiortc subscriber, whose track decodes real frames.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import re
import struct
import time
from collections.abc import Awaitable, Callable

import aioice.ice
import aiortc
import numpy as np
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCRtpSender, VideoStreamTrack
from aiortc import sdp as aiortc_sdp
from aiortc.rtcpeerconnection import RTCPeerConnection as _PC
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
)
from av import VideoFrame

from sfu import peer as peer_module
from sfu.ice import IceConfig
from sfu.peer import AIORTC_INTERNALS, Internal, Peer, aiortc_decoder_threads, peer_configuration

PINNED_AIORTC = "1.16.0"
PINNED_AIOICE = "0.13.0"

# Internals used only by these tests to prove no decoder runs, and to keep ICE on loopback.
TEST_INTERNALS: tuple[Internal, ...] = (
    Internal("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "_RTCRtpReceiver__decoder_thread", "attribute"),
    Internal("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "_RTCRtpReceiver__started", "attribute"),
    Internal("aioice.ice", None, "get_host_addresses", "function", ("use_ipv4", "use_ipv6")),
)

# Call sites the hooks depend on: (module, qualified function, regex that must match its source).
CALL_SITES = (
    # the one-port mode swaps the module's RTCCertificate name while the constructor runs
    ("aiortc.rtcpeerconnection", "RTCPeerConnection.__init__", r"\[RTCCertificate\.generateCertificate\(\)\]"),
    # RTCIceTransport copies the connection's recv/send: the one-port mode replaces the copies too
    ("aiortc.rtcicetransport", "RTCIceTransport.__init__", r"self\._recv = self\._connection\.recv"),
    # the DTLS receive loop looks the handlers up on the instance -> per-instance replacement works
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._recv_next", r"self\._rx_srtp\.unprotect_rtcp\(data\)"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._recv_next", r"await self\._handle_rtcp_data\(data\)"),
    (
        "aiortc.rtcdtlstransport",
        "RTCDtlsTransport._recv_next",
        r"await self\._handle_rtp_data\(data, arrival_time_ms=arrival_time_ms\)",
    ),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._send_rtp", r"self\._tx_srtp\.protect_rtcp\(data\)"),
    # after the handshake the DTLS loop's calls on _ssl are the few sfu.peer.SpentDtls answers, errors caught
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._recv_next",
     r"self\._ssl\.bio_write\(data\)\n\s+try:\n\s+data = self\._ssl\.recv\(1500\)"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._recv_next", r"except SSL\.Error:\n\s+data = b\"\""),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._write_ssl",
     r"data = self\._ssl\.bio_read\(1500\)\n\s+except SSL\.Error:"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport.stop", r"self\._ssl\.shutdown\(\)\n\s+except SSL\.Error:"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._send_rtp", r"self\._tx_srtp\.protect\(data\)"),
    # __connect starts senders/receivers through the instance attributes we replace
    (
        "aiortc.rtcpeerconnection",
        "RTCPeerConnection._RTCPeerConnection__connect",
        r"transceiver\.sender\.send\(",
    ),
    (
        "aiortc.rtcpeerconnection",
        "RTCPeerConnection._RTCPeerConnection__connect",
        r"transceiver\.receiver\.receive\(",
    ),
    # every transceiver is created through the (wrapped) private factory
    ("aiortc.rtcpeerconnection", "RTCPeerConnection.addTransceiver", r"self\.__createTransceiver\("),
    ("aiortc.rtcpeerconnection", "RTCPeerConnection.addTrack", r"self\.__createTransceiver\("),
    ("aiortc.rtcpeerconnection", "RTCPeerConnection.setRemoteDescription", r"self\.__createTransceiver\("),
    # the receiver's parts that a Peer swaps for stand-ins while it is made (sfu.peer._lean_receiver)
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__init__", r"= RemoteBitrateEstimator\(\)"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__init__", r"= JitterBuffer\(capacity=512"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__init__", r"= NackGenerator\(\)"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__init__", r"= queue\.Queue\(\)"),
    # the receiver's decoder thread is what we must never start
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.receive", r'name=self\.__kind \+ "-decoder"'),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.receive", r"target=decoder_worker"),
    # aioice gathering goes through the per-instance method with the host address list
    ("aioice.ice", "Connection.gather_candidates", r"addresses = get_host_addresses\("),
    ("aioice.ice", "Connection.gather_candidates", r"self\.get_component_candidates\("),
)

LOOPBACK = "127.0.0.1"
WIDTH, HEIGHT = 320, 240


# --------------------------------------------------------------------------- (a) contract


async def _instances() -> tuple[RTCPeerConnection, dict[str, object]]:
    pc = RTCPeerConnection(peer_configuration())
    transceiver = pc.addTransceiver("video")
    dtls = transceiver.receiver.transport
    gatherer = dtls.transport.iceGatherer
    instances: dict[str, object] = {
        "RTCPeerConnection": pc,
        "RTCRtpTransceiver": transceiver,
        "RTCRtpSender": transceiver.sender,
        "RTCRtpReceiver": transceiver.receiver,
        "RTCDtlsTransport": dtls,
        "RTCIceTransport": dtls.transport,
        "RTCIceGatherer": gatherer,
    }
    connection = vars(gatherer).get("_connection")
    if connection is not None:
        instances["Connection"] = connection
    return pc, instances


def _check(item: Internal, instances: dict[str, object]) -> str | None:
    try:
        module = importlib.import_module(item.module)
    except ImportError as exc:
        return f"{item.label}: module {item.module} not importable ({exc})"
    if item.kind == "name":
        return None if hasattr(module, item.name) else f"{item.label}: name missing from {item.module}"
    if item.owner is None:
        target = getattr(module, item.name, None)
        if not inspect.isfunction(target):
            return f"{item.label}: expected a module-level function, got {target!r}"
        names = list(inspect.signature(target).parameters)
    else:
        cls = getattr(module, item.owner, None)
        if not inspect.isclass(cls):
            return f"{item.label}: class {item.owner} missing from {item.module}"
        if item.kind == "attribute":
            instance = instances.get(item.owner)
            if not isinstance(instance, cls):
                return f"{item.label}: no {item.owner} instance to inspect"
            if item.name not in vars(instance):
                return f"{item.label}: instance attribute missing (has: {sorted(vars(instance))})"
            return None
        try:
            raw = inspect.getattr_static(cls, item.name)
        except AttributeError:
            return f"{item.label}: method missing"
        func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
        if not inspect.isfunction(func):
            return f"{item.label}: expected a method, got {raw!r}"
        if item.kind == "coroutine method" and not inspect.iscoroutinefunction(func):
            return f"{item.label}: expected a coroutine method"
        if item.kind == "method" and inspect.iscoroutinefunction(func):
            return f"{item.label}: expected a plain (non-async) method"
        names = list(inspect.signature(func).parameters)[1:]  # drop self / cls
    if item.params and names[: len(item.params)] != list(item.params):
        return f"{item.label}: parameters {names}, expected to start with {list(item.params)}"
    return None


def test_pinned_versions() -> None:
    assert aiortc.__version__ == PINNED_AIORTC, (
        f"sfu/peer.py hooks aiortc internals audited against {PINNED_AIORTC}; "
        f"installed {aiortc.__version__}: re-audit and update AIORTC_INTERNALS"
    )
    assert importlib.metadata.version("aioice") == PINNED_AIOICE


async def test_private_internals_exist() -> None:
    pc, instances = await _instances()
    try:
        failures = [msg for item in AIORTC_INTERNALS + TEST_INTERNALS if (msg := _check(item, instances))]
    finally:
        await pc.close()
    assert not failures, "aiortc/aioice internals changed:\n  " + "\n  ".join(failures)


def test_docstring_lists_every_internal() -> None:
    doc = peer_module.__doc__ or ""
    missing = [item.label for item in AIORTC_INTERNALS if item.label not in doc]
    assert not missing, f"sfu/peer.py docstring does not list: {missing}"
    kinds = {item.kind for item in AIORTC_INTERNALS}
    assert kinds <= {"method", "coroutine method", "attribute", "function", "name"}


@pytest.mark.parametrize(("module_name", "qualname", "pattern"), CALL_SITES)
def test_hooked_call_sites(module_name: str, qualname: str, pattern: str) -> None:
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)
    source = inspect.getsource(obj)  # type: ignore[arg-type]
    assert re.search(pattern, source), f"{module_name}.{qualname} no longer matches {pattern!r}"


# --------------------------------------------------------------------------- (b) loopback


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every aioice connection in this test (also the plain aiortc clients) gather
    only 127.0.0.1: aioice.ice.get_host_addresses skips loopback and would offer the
    machine's other interfaces."""

    def host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", host_addresses)


def assert_loopback_sdp(sdp: str) -> None:
    """No candidate or connection address other than 127.0.0.1 (0.0.0.0 = discard) may appear."""
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates, "no ICE candidates in SDP"
    for line in candidates:
        assert line.split()[4] == LOOPBACK, line
    for line in sdp.splitlines():
        if line.startswith("c="):
            assert line.split()[-1] in (LOOPBACK, "0.0.0.0"), line


def vp8_only() -> list:
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType in ("video/VP8", "video/rtx")]


class PatternTrack(VideoStreamTrack):
    """320x240 frames: left half white, right half black."""

    def __init__(self) -> None:
        super().__init__()
        image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[:, : WIDTH // 2] = 255
        self._image = image

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


def is_vp8_keyframe_start(payload: bytes) -> bool:
    """RFC 7741: payload descriptor, then (if S=1, PID=0) the VP8 header, P bit 0 = keyframe."""
    if not payload:
        return False
    first = payload[0]
    pos = 1
    if first & 0x80:  # X
        ext = payload[pos]
        pos += 1
        if ext & 0x80:  # I: picture id, 2 bytes if M
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K
            pos += 1
    start, pid = first & 0x10, first & 0x07
    return bool(start) and pid == 0 and pos < len(payload) and payload[pos] & 0x01 == 0


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc))


def announced_ssrc(sdp: str) -> int:
    [media] = aiortc_sdp.SessionDescription.parse(sdp).media
    return media.ssrc[0].ssrc


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


def receiver_started(pc: RTCPeerConnection) -> list[tuple[object, object]]:
    return [
        (r._RTCRtpReceiver__started, r._RTCRtpReceiver__decoder_thread)  # type: ignore[attr-defined]
        for r in pc.getReceivers()
    ]


async def test_loopback_publish_forward_subscribe(loopback_only: None) -> None:
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        await asyncio.wait_for(_scenario(closers), timeout=90)
    finally:
        for close in reversed(closers):
            await asyncio.wait_for(close(), timeout=15)
    assert not aiortc_decoder_threads(), "decoder threads left after close"


async def _scenario(closers: list[Callable[[], Awaitable[None]]]) -> None:
    state: dict[str, object] = {"forward": None}
    from_pub: list[tuple[bytes, float]] = []
    rtcp_from_pub: list[object] = []
    rtcp_from_sub: list[object] = []

    async def on_pub_rtp(data: bytes, arrival: float) -> None:
        from_pub.append((data, arrival))
        forward = state["forward"]
        if forward is not None:
            await forward(data)  # type: ignore[operator]

    def on_pub_rtcp(data: bytes) -> None:
        rtcp_from_pub.extend(RtcpPacket.parse(data))

    # ---- publisher: a normal aiortc client encoding VP8, offering to the server
    pub = RTCPeerConnection(peer_configuration())
    closers.append(pub.close)
    pub_transceiver = pub.addTransceiver(PatternTrack(), direction="sendonly")
    pub_transceiver.setCodecPreferences(vp8_only())
    await pub.setLocalDescription(await pub.createOffer())
    assert_loopback_sdp(pub.localDescription.sdp)
    pub_ssrc = announced_ssrc(pub.localDescription.sdp)
    assert pub_ssrc == pub_transceiver.sender._ssrc

    server_pub = Peer(on_rtp=on_pub_rtp, on_rtcp=on_pub_rtcp, ice=IceConfig(hosts=(LOOPBACK,)), name="server-pub")
    closers.append(server_pub.close)
    answer = await server_pub.accept_offer(pub.localDescription)
    assert_loopback_sdp(answer.sdp)
    await pub.setRemoteDescription(answer)
    await asyncio.wait_for(server_pub.wait_connected(), timeout=20)

    await until(lambda: len(from_pub) >= 40, 20, "40 RTP packets at the server")
    await until(
        lambda: any(isinstance(p, RtcpSrPacket) and p.ssrc == pub_ssrc for p in rtcp_from_pub),
        10,
        "the publisher's RTCP SR at on_rtcp",
    )

    [inbound] = server_pub.media_sections()
    assert (inbound.kind, inbound.direction) == ("video", "recvonly")
    assert inbound.remote_media_ssrcs == (pub_ssrc,)
    assert inbound.remote_rtx.get(pub_ssrc) is not None
    vp8 = inbound.primary_codec
    assert vp8 is not None and (vp8.name, vp8.clock_rate) == ("VP8", 90000)
    assert "nack pli" in vp8.rtcp_fb
    assert inbound.rtx_payload_type(vp8.payload_type) is not None
    assert inbound.mid_extension_id is not None and inbound.abs_send_time_extension_id is not None
    assert server_pub.ssrc_to_mid()[pub_ssrc] == inbound.mid

    # every packet is raw, parseable RTP from the announced SSRC, tagged with the MID extension
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in inbound.header_extensions.items()
            ]
        )
    )
    arrivals = [arrival for _, arrival in from_pub]
    assert arrivals == sorted(arrivals)
    for data, _ in from_pub[:40]:
        assert isinstance(data, bytes)
        packet = RtpPacket.parse(data, ext_map)
        assert packet.ssrc == pub_ssrc
        assert packet.payload_type == vp8.payload_type
        assert packet.extensions.mid == inbound.mid
        assert packet.extensions.abs_send_time is not None
    assert any(is_vp8_keyframe_start(RtpPacket.parse(d).payload) for d, _ in from_pub[:40])

    # nothing decodes: the publisher only sends, and the server's receiver was never started
    assert pub_transceiver.currentDirection == "sendonly"
    assert aiortc_decoder_threads() == []
    assert receiver_started(server_pub.pc) == [(False, None)]
    assert server_pub.stats.suppressed_starts == [(inbound.mid, "receiver")]
    assert server_pub.stats.callback_errors == 0

    # ---- subscriber: the server offers a sendonly m-section, a normal aiortc client answers
    async def on_sub_rtcp(data: bytes) -> None:
        for packet in RtcpPacket.parse(data):
            rtcp_from_sub.append(packet)
            # relay the subscriber's keyframe requests to the publisher
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
                await server_pub.send_rtcp(pli(inbound.local_ssrc, pub_ssrc))

    server_sub = Peer(on_rtcp=on_sub_rtcp, ice=IceConfig(hosts=(LOOPBACK,)), name="server-sub")
    closers.append(server_sub.close)
    out_transceiver = server_sub.add_send_transceiver("video", stream_id="teacher-camera")
    out_transceiver.setCodecPreferences(vp8_only())
    offer = await server_sub.create_offer()
    assert_loopback_sdp(offer.sdp)

    sub = RTCPeerConnection(peer_configuration())
    closers.append(sub.close)
    tracks: list = []
    sub.on("track", tracks.append)
    await sub.setRemoteDescription(offer)
    await sub.setLocalDescription(await sub.createAnswer())
    assert_loopback_sdp(sub.localDescription.sdp)
    await server_sub.accept_answer(sub.localDescription)
    await asyncio.wait_for(server_sub.wait_connected(), timeout=20)

    [outbound] = server_sub.media_sections()
    assert (outbound.kind, outbound.direction) == ("video", "sendonly")
    assert outbound.local_ssrc == out_transceiver.sender._ssrc == announced_ssrc(offer.sdp)
    assert outbound.local_rtx_ssrc == out_transceiver.sender._rtx_ssrc
    assert outbound.local_msid is not None and outbound.local_msid.startswith("teacher-camera ")
    out_codec = outbound.primary_codec
    assert out_codec is not None and out_codec.name == "VP8"
    assert sub.getTransceivers()[0].currentDirection == "recvonly"

    forwarded: list[bytes] = []

    async def forward(data: bytes) -> None:
        buf = bytearray(data)
        struct.pack_into("!I", buf, 8, outbound.local_ssrc)
        buf[1] = (buf[1] & 0x80) | out_codec.payload_type
        if await server_sub.send_rtp(bytes(buf)):
            forwarded.append(bytes(buf))

    state["forward"] = forward
    # aiortc's VP8 encoder has gop 3000: the subscriber needs a fresh keyframe -> PLI
    assert await server_pub.send_rtcp(pli(inbound.local_ssrc, pub_ssrc))

    await until(lambda: bool(tracks), 10, "the subscriber's track event")
    [track] = tracks
    frames = []
    while len(frames) < 5:
        frames.append(await asyncio.wait_for(track.recv(), timeout=20))
    for frame in frames:
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
    gray = frames[-1].to_ndarray(format="gray").astype(float)
    assert gray[:, : WIDTH // 2 - 8].mean() > 200, "left half should decode white"
    assert gray[:, WIDTH // 2 + 8 :].mean() < 60, "right half should decode black"

    assert any(is_vp8_keyframe_start(RtpPacket.parse(d).payload) for d in forwarded)
    assert all(RtpPacket.parse(d).ssrc == outbound.local_ssrc for d in forwarded)
    assert server_sub.stats.rtp_out == len(forwarded) > 0

    # the subscriber reports on the SSRC we announced (SFU-side RTCP reaches on_rtcp)
    await until(
        lambda: any(
            isinstance(p, RtcpRrPacket) and any(r.ssrc == outbound.local_ssrc for r in p.reports) for p in rtcp_from_sub
        ),
        10,
        "the subscriber's receiver report",
    )

    # the only decoder in the process is the subscriber client's; the servers never started one
    threads = aiortc_decoder_threads()
    assert [t.name for t in threads] == ["video-decoder"]
    assert sub.getReceivers()[0]._RTCRtpReceiver__decoder_thread is threads[0]  # type: ignore[attr-defined]
    assert receiver_started(server_pub.pc) == [(False, None)]
    assert receiver_started(server_sub.pc) == [(False, None)]
    assert server_sub.stats.suppressed_starts == [(outbound.mid, "sender")]
    assert server_pub.stats.callback_errors == server_sub.stats.callback_errors == 0


async def test_teacher_offers_mic_camera_screen_and_receives(loopback_only: None) -> None:
    """One client-offered PC: 3 sendonly m-sections up, 1 recvonly m-section down (server answers)."""
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        await asyncio.wait_for(_teacher_scenario(closers), timeout=60)
    finally:
        for close in reversed(closers):
            await asyncio.wait_for(close(), timeout=15)


async def _teacher_scenario(closers: list[Callable[[], Awaitable[None]]]) -> None:
    state: dict[str, object] = {"forward": None}
    received: list[bytes] = []

    async def on_rtp(data: bytes, arrival: float) -> None:
        received.append(data)
        forward = state["forward"]
        if forward is not None:
            await forward(data)  # type: ignore[operator]

    teacher = RTCPeerConnection(peer_configuration())
    closers.append(teacher.close)
    teacher.addTransceiver(AudioStreamTrack(), direction="sendonly")
    for _ in ("camera", "screen"):
        teacher.addTransceiver(PatternTrack(), direction="sendonly").setCodecPreferences(vp8_only())
    teacher.addTransceiver("video", direction="recvonly").setCodecPreferences(vp8_only())
    tracks: list = []
    teacher.on("track", tracks.append)
    await teacher.setLocalDescription(await teacher.createOffer())
    assert_loopback_sdp(teacher.localDescription.sdp)

    server = Peer(on_rtp=on_rtp, ice=IceConfig(hosts=(LOOPBACK,)), name="server-teacher")
    closers.append(server.close)
    answer = await server.accept_offer(teacher.localDescription)
    assert_loopback_sdp(answer.sdp)
    await teacher.setRemoteDescription(answer)
    await asyncio.wait_for(server.wait_connected(), timeout=20)

    sections = server.media_sections()
    assert [(m.mid, m.kind, m.direction) for m in sections] == [
        ("0", "audio", "recvonly"),
        ("1", "video", "recvonly"),
        ("2", "video", "recvonly"),
        ("3", "video", "sendonly"),
    ]
    mic, camera, screen, back = sections
    assert mic.primary_codec is not None and mic.primary_codec.name == "opus"
    assert mic.audio_level_extension_id is not None
    assert [t.currentDirection for t in teacher.getTransceivers()] == ["sendonly"] * 3 + ["recvonly"]
    inbound = {m.remote_media_ssrcs[0]: m for m in (mic, camera, screen)}
    assert len(inbound) == 3

    # all three bundled streams arrive; SSRC routing and MID-extension routing agree
    await until(lambda: {int.from_bytes(d[8:12], "big") for d in received} >= set(inbound), 15, "3 streams")
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in camera.header_extensions.items()]
        )
    )
    ssrc_to_mid = server.ssrc_to_mid()
    for data in received[:60]:
        packet = RtpPacket.parse(data, ext_map)
        assert packet.extensions.mid == ssrc_to_mid[packet.ssrc] == inbound[packet.ssrc].mid

    # send the camera back down the recvonly m-section; the teacher's own aiortc decoder shows it
    back_codec = back.primary_codec
    assert back_codec is not None and back.local_ssrc is not None

    async def forward(data: bytes) -> None:
        if int.from_bytes(data[8:12], "big") == camera.remote_media_ssrcs[0]:
            buf = bytearray(data)
            struct.pack_into("!I", buf, 8, back.local_ssrc)
            buf[1] = (buf[1] & 0x80) | back_codec.payload_type
            await server.send_rtp(bytes(buf))

    state["forward"] = forward
    assert await server.send_rtcp(pli(camera.local_ssrc, camera.remote_media_ssrcs[0]))
    await until(lambda: bool(tracks), 10, "the teacher's track event")
    frame = await asyncio.wait_for(tracks[0].recv(), timeout=20)
    assert (frame.width, frame.height) == (WIDTH, HEIGHT)

    assert receiver_started(server.pc) == [(False, None)] * 4
    assert sorted(server.stats.suppressed_starts) == [
        ("0", "receiver"),
        ("1", "receiver"),
        ("2", "receiver"),
        ("3", "sender"),
    ]
    assert [t.name for t in aiortc_decoder_threads()] == ["video-decoder"]  # the teacher client's


async def test_send_refuses_misclassified_packets() -> None:
    """send_rtp must not hand aiortc something it would encrypt as SRTCP, and vice versa."""
    peer = Peer(ice=IceConfig(hosts=(LOOPBACK,)))
    try:
        assert isinstance(peer.pc, _PC)
        rtcp = pli(1, 2)
        rtp = bytes([0x80, 96]) + bytes(10)
        assert not await peer.send_rtp(rtcp)
        assert not await peer.send_rtcp(rtp)
        assert not await peer.send_rtp(rtp)  # not connected yet
        assert peer.stats.send_failures == 3
        assert peer.stats.rtp_out == peer.stats.rtcp_out == 0
    finally:
        await peer.close()
