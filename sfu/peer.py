"""Packet-level wrapper around aiortc's RTCPeerConnection for the classcast SFU.

aiortc 1.16.0 is used ONLY for SDP offer/answer, ICE, DTLS and SRTP.  It never
decodes or encodes media for a :class:`Peer`:

* Incoming SRTP/SRTCP is decrypted by aiortc's DTLS transport and then handed,
  as raw bytes, to ``Peer.on_rtp(data, arrival)`` / ``Peer.on_rtcp(data)``,
  *instead of* being parsed and routed to aiortc's RTCRtpReceiver.
* ``RTCRtpReceiver.receive()`` and ``RTCRtpSender.send()`` are replaced on every
  transceiver of the peer by coroutines that only record the parameters, so no
  decoder thread (``"<kind>-decoder"``), no jitter buffer, no encoder and no
  aiortc RTCP task (SR/RR/REMB/NACK/PLI/BYE) ever runs for this connection.
  The SFU owns all RTCP.
* Outgoing RTP/RTCP (already encoded, header-rewritten bytes) is encrypted by
  the same DTLS transport's SRTP session (``Peer.send_rtp`` / ``Peer.send_rtcp``).

The connection is always created with ``RTCConfiguration(iceServers=[],
bundlePolicy=MAX_BUNDLE)``: no STUN/TURN traffic, and exactly one
ICE/DTLS/SRTP transport per participant (aiortc issue 1414 loses the second
video m-section without MAX_BUNDLE).

aiortc / aioice private internals touched (audited against aiortc 1.16.0 and
aioice 0.13.0; ``tests/sfu/test_peer_contract.py`` checks every entry of
``AIORTC_INTERNALS`` below, which must stay in sync with this list):

* ``RTCPeerConnection._RTCPeerConnection__createTransceiver`` (private
  name-mangled method): wrapped per instance so every transceiver -- also
  those aiortc creates itself inside ``setRemoteDescription`` -- is adopted
  (hooks installed) at creation time, before ``__connect`` can start it.
* ``RTCPeerConnection._RTCPeerConnection__localDescription`` and
  ``RTCPeerConnection._RTCPeerConnection__remoteDescription`` (private name-mangled methods): called, for the
  descriptions aiortc holds already parsed (``aiortc.sdp.SessionDescription``, never written). The public
  ``localDescription``/``remoteDescription`` print them to text, which `media_sections` then parsed again: two
  prints and two parses per look, about half of the worker's time on a subscriber's answer.
* ``RTCDtlsTransport._handle_rtp_data`` (coroutine method, called by
  ``RTCDtlsTransport._recv_next`` with the SRTP-decrypted packet): replaced per
  instance; bytes go to ``on_rtp`` instead of RtpPacket.parse + RtpRouter.
* ``RTCDtlsTransport._handle_rtcp_data`` (coroutine method, decrypted
  compound RTCP): replaced per instance; bytes go to ``on_rtcp``.
* ``RTCDtlsTransport._send_rtp`` (coroutine method): called to SRTP/SRTCP
  protect and send raw bytes (it picks RTP vs RTCP with ``aiortc.rtp.is_rtcp``).
* ``RTCDtlsTransport._setup_srtp`` (method, called by ``RTCDtlsTransport.start`` after the handshake): wrapped
  per instance when the Peer has a media engine. After aiortc's own setup, the wrapper exports the keying
  material again (``RTCDtlsTransport._ssl``, a pyOpenSSL connection: ``get_selected_srtp_profile`` and
  ``export_keying_material``), picks the profile from ``RTCDtlsTransport._srtp_profiles`` and the direction from
  ``RTCDtlsTransport._role``, cuts the outgoing key with ``SRTPProtectionProfile.get_key_and_salt``, gives it to
  the engine, and replaces ``RTCDtlsTransport._tx_srtp`` (the outgoing SRTP session, written) by `EngineSrtp`:
  from then on the engine's libsrtp context protects everything the subscriber gets, the fan-out's copies and
  aiortc's ``_send_rtp`` (our RTCP) alike, so rollover counters have one home. With native receive,
  ``RTCDtlsTransport._ssl`` is also written: replaced by `SpentDtls` once the engine authenticated a first
  SRTP/SRTCP packet of the client (the handshake is then over on both sides), which frees OpenSSL's ~90 kB per
  connection; aiortc's DTLS loop then calls only ``bio_write``, ``recv``, ``bio_read``, ``shutdown`` and
  ``DTLSv1_get_timeout``/``DTLSv1_handle_timeout`` on it, which the stand-in answers as an idle session.
* ``RTCIceTransport._connection`` (its aioice connection) and ``aioice.ice.Connection._nominated`` (component ->
  the nominated ``CandidatePair``, whose ``protocol.transport`` (its socket) and ``remote_addr`` are used): read
  when the connection becomes connected, to give the engine the socket and address it sends the copies to.
* One UDP port (with an ``RtcServer``, sfu/rtcserver.py): ``RTCIceTransport._connection``,
  ``RTCIceGatherer._connection`` and the bound methods ``RTCIceTransport._recv`` / ``RTCIceTransport._send``
  (copied from the connection by ``RTCIceTransport.__init__``) are replaced per transport by a ``MuxConnection``
  before anything gathers; ``RTCIceGatherer.getLocalParameters`` is replaced per instance to say ``iceLite``
  (aiortc then writes ``a=ice-lite``); ``RTCDtlsTransport._rx_srtp`` (incoming pylibsrtp Session) is wrapped to
  count authentication failures; the name ``RTCCertificate`` in ``aiortc.rtcpeerconnection`` (whose
  ``RTCCertificate.generateCertificate`` ``RTCPeerConnection.__init__`` calls) is swapped for the duration of the
  constructor so that every connection uses the process's one certificate.
* ``RTCRtpSender._ssrc`` / ``RTCRtpSender._rtx_ssrc`` (instance attributes):
  read, cross-checked against the ``a=ssrc`` lines of the local SDP.
* ``RTCRtpSender._stream_id`` (instance attribute): written by
  ``add_send_transceiver(stream_id=...)`` (first half of ``a=msid``).
* ``RTCIceGatherer._connection`` (instance attribute, an
  ``aioice.Connection``): read to reach that connection.
* ``aioice.ice.Connection.get_component_candidates`` (coroutine method,
  public name in aioice but not part of aiortc's API; called by
  ``Connection.gather_candidates`` with all non-loopback host IPs): replaced
  per instance when an ``IceConfig`` is given, by ``sfu.ice.gather_host_candidates``,
  so ICE binds and offers only the configured addresses and ports and never
  contacts a STUN/TURN server.
* ``aioice.ice.Connection._protocols`` (instance attribute, list): the
  replacement appends the host protocols it binds, as aioice's own gathering
  does, so that aioice uses and closes them.
* ``aioice.ice.StunProtocol.__init__`` (constructor taking the receiving
  connection) and ``aioice.candidate.Candidate``: built by that replacement
  (in ``sfu/ice.py``, whose internals are listed here too).
* ``RTCRtpReceiver.receive`` and ``RTCRtpSender.send`` (public coroutine
  methods, called by ``RTCPeerConnection.__connect``): replaced per instance.
* ``aiortc.rtcrtpreceiver.decoder_worker`` (module function, target of the
  receiver decoder thread named ``"<kind>-decoder"``): only referenced by
  :func:`aiortc_decoder_threads` to detect decoder threads.
* ``aiortc.rtcrtpreceiver.RemoteBitrateEstimator``, ``aiortc.rtcrtpreceiver.JitterBuffer``,
  ``aiortc.rtcrtpreceiver.NackGenerator`` and ``aiortc.rtcrtpreceiver.queue`` (module-level names that
  ``RTCRtpReceiver.__init__`` calls): swapped for stand-ins that make nothing while a Peer's transceiver is made
  (kind "name"), since the receive path that would use them is replaced.
* ``aiortc.sdp.SessionDescription.parse`` and ``aiortc.rtp.is_rtcp``
  (undocumented modules): SDP parsing for :meth:`Peer.media_sections`, and
  RTP/RTCP classification in ``send_rtp``/``send_rtcp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pylibsrtp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import rtcpeerconnection as _aiortc_rtcpeerconnection
from aiortc import rtcrtpreceiver as _aiortc_rtcrtpreceiver
from aiortc import sdp as _aiortc_sdp
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceParameters
from aiortc.rtp import is_rtcp as _is_rtcp
from OpenSSL import SSL

from sfu.engine.reference import RX_LOSS, RX_PUSHED, RX_RTP
from sfu.hdrext import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID, URI_TWCC
from sfu.ice import IceConfig, gather_host_candidates
from sfu.rtcserver import MuxConnection, RtcServer

__all__ = [
    "AIORTC_INTERNALS",
    "Codec",
    "Internal",
    "MediaSection",
    "Peer",
    "PeerStats",
    "aiortc_decoder_threads",
    "peer_configuration",
    "restrict_gathering",
    "restrict_pc_gathering",
]

logger = logging.getLogger(__name__)

_CREATE_TRANSCEIVER = "_RTCPeerConnection__createTransceiver"
_LOCAL_DESCRIPTION = "_RTCPeerConnection__localDescription"
_REMOTE_DESCRIPTION = "_RTCPeerConnection__remoteDescription"
DTLS_RELEASE_CHECK = 1.0  # s between looks at whether the client's first packet arrived (then DTLS is let go)

# remote offer direction -> our default answer direction: receive whatever the
# remote sends, send only where the remote asked to receive only.
_DEFAULT_ANSWER_DIRECTION = {
    "sendrecv": "recvonly",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(frozen=True)
class Internal:
    """One aiortc/aioice internal this module relies on (checked by the contract test).

    kind is one of "method" (plain function on the class), "coroutine method",
    "attribute" (set on instances by ``__init__``), "function" (module level) or "name" (a module-level
    name looked up at call time, which we swap).
    ``params`` lists the parameter names (after ``self``) we depend on.
    """

    module: str
    owner: str | None  # class name, None for module-level functions
    name: str
    kind: str
    params: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.owner}.{self.name}" if self.owner else f"{self.module}.{self.name}"


AIORTC_INTERNALS: tuple[Internal, ...] = (
    Internal(
        "aiortc.rtcpeerconnection",
        "RTCPeerConnection",
        _CREATE_TRANSCEIVER,
        "method",
        ("direction", "kind", "sender_track"),
    ),
    Internal(
        "aiortc.rtcdtlstransport",
        "RTCDtlsTransport",
        "_handle_rtp_data",
        "coroutine method",
        ("data", "arrival_time_ms"),
    ),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_handle_rtcp_data", "coroutine method", ("data",)),
    Internal("aiortc.rtcpeerconnection", "RTCPeerConnection", _LOCAL_DESCRIPTION, "method"),
    Internal("aiortc.rtcpeerconnection", "RTCPeerConnection", _REMOTE_DESCRIPTION, "method"),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_send_rtp", "coroutine method", ("data",)),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_tx_srtp", "attribute"),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_setup_srtp", "method"),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_ssl", "attribute"),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_role", "attribute"),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_srtp_profiles", "attribute"),
    Internal("aiortc.rtcdtlstransport", "SRTPProtectionProfile", "get_key_and_salt", "method", ("src", "idx")),
    Internal("aiortc.rtcicetransport", "RTCIceTransport", "_connection", "attribute"),
    Internal("aiortc.rtcicetransport", "RTCIceTransport", "_recv", "attribute"),
    Internal("aiortc.rtcicetransport", "RTCIceTransport", "_send", "attribute"),
    Internal("aiortc.rtcicetransport", "RTCIceGatherer", "getLocalParameters", "method"),
    Internal("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_rx_srtp", "attribute"),
    Internal("aiortc.rtcdtlstransport", "RTCCertificate", "generateCertificate", "method"),
    Internal("aioice.ice", "Connection", "_nominated", "attribute"),
    Internal("aiortc.rtcrtpsender", "RTCRtpSender", "_ssrc", "attribute"),
    Internal("aiortc.rtcrtpsender", "RTCRtpSender", "_rtx_ssrc", "attribute"),
    Internal("aiortc.rtcrtpsender", "RTCRtpSender", "_stream_id", "attribute"),
    Internal("aiortc.rtcicetransport", "RTCIceGatherer", "_connection", "attribute"),
    Internal(
        "aioice.ice",
        "Connection",
        "get_component_candidates",
        "coroutine method",
        ("component", "addresses"),
    ),
    Internal("aioice.ice", "Connection", "_protocols", "attribute"),
    Internal("aioice.ice", "StunProtocol", "__init__", "method", ("receiver",)),
    Internal("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "receive", "coroutine method", ("parameters",)),
    Internal("aiortc.rtcrtpsender", "RTCRtpSender", "send", "coroutine method", ("parameters",)),
    Internal(
        "aiortc.rtcrtpreceiver",
        None,
        "decoder_worker",
        "function",
        ("loop", "input_q", "output_q", "decode_error"),
    ),
    Internal("aiortc.sdp", "SessionDescription", "parse", "method", ("sdp",)),
    Internal("aiortc.rtp", None, "is_rtcp", "function", ("msg",)),
    Internal("aiortc.rtcrtpreceiver", None, "RemoteBitrateEstimator", "name"),
    Internal("aiortc.rtcrtpreceiver", None, "JitterBuffer", "name"),
    Internal("aiortc.rtcrtpreceiver", None, "NackGenerator", "name"),
    Internal("aiortc.rtcrtpreceiver", None, "queue", "name"),
)


def peer_configuration() -> RTCConfiguration:
    """The only configuration a Peer uses: no ICE servers (no STUN/TURN traffic), max-bundle."""
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def aiortc_decoder_threads() -> list[threading.Thread]:
    """All live aiortc RTCRtpReceiver decoder threads in this process.

    RTCRtpReceiver.receive() starts ``threading.Thread(target=decoder_worker,
    name=kind + "-decoder")``.  A process running only Peers must have none.
    """
    found = []
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)
        if target is _aiortc_rtcrtpreceiver.decoder_worker or thread.name in (
            "audio-decoder",
            "video-decoder",
        ):
            found.append(thread)
    return found


def restrict_gathering(connection: Any, ice: IceConfig) -> None:
    """Make one aioice connection gather host candidates only, on the configured addresses and ports.

    aioice gathers on every non-loopback address and asks STUN/TURN servers when given; neither is acceptable
    for the server (and tests need 127.0.0.1, which aioice skips).
    """

    async def get_component_candidates(component: int, addresses: list[str] | None = None, **_: Any) -> Any:
        return await gather_host_candidates(connection, component, ice)

    connection.get_component_candidates = get_component_candidates


def restrict_pc_gathering(pc: RTCPeerConnection, ice: IceConfig) -> None:
    """The same for a plain RTCPeerConnection (clients in tests and bench/), for every transport it creates."""
    original = getattr(pc, _CREATE_TRANSCEIVER)
    seen: set[int] = set()

    def create_transceiver(direction: str, kind: str, sender_track: Any = None) -> RTCRtpTransceiver:
        transceiver = original(direction=direction, kind=kind, sender_track=sender_track)
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        if id(gatherer) not in seen:
            seen.add(id(gatherer))
            restrict_gathering(gatherer._connection, ice)
        return transceiver

    setattr(pc, _CREATE_TRANSCEIVER, create_transceiver)


@dataclass(frozen=True)
class Codec:
    """A negotiated codec of one m-section (taken from the SDP answer)."""

    payload_type: int
    mime_type: str
    clock_rate: int
    channels: int | None
    fmtp: Mapping[str, int | str | None]
    rtcp_fb: tuple[str, ...]  # e.g. ("nack", "nack pli", "goog-remb")

    @property
    def name(self) -> str:
        return self.mime_type.split("/", 1)[1]

    @property
    def is_rtx(self) -> bool:
        return self.name.lower() == "rtx"

    @property
    def apt(self) -> int | None:
        """For RTX: payload type of the codec it repairs."""
        value = self.fmtp.get("apt")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class MediaSection:
    """Negotiated facts about one m-section, seen from the SFU (local) side."""

    mid: str
    kind: str
    direction: str | None  # negotiated (currentDirection), local point of view
    codecs: tuple[Codec, ...]
    header_extensions: Mapping[str, int]  # uri -> id (shared by the whole BUNDLE)
    remote_ssrcs: tuple[int, ...]  # every a=ssrc the remote announced
    remote_rtx: Mapping[int, int]  # remote media SSRC -> its RTX SSRC (a=ssrc-group:FID)
    remote_msid: str | None
    remote_cname: str | None
    local_ssrc: int | None  # SSRC aiortc announced for us: send media with it
    local_rtx_ssrc: int | None  # announced RTX SSRC (only if RTX was offered/negotiated)
    local_msid: str | None

    @property
    def sends(self) -> bool:
        return self.direction in ("sendonly", "sendrecv")

    @property
    def receives(self) -> bool:
        return self.direction in ("recvonly", "sendrecv")

    @property
    def media_codecs(self) -> tuple[Codec, ...]:
        return tuple(c for c in self.codecs if not c.is_rtx)

    @property
    def primary_codec(self) -> Codec | None:
        media = self.media_codecs
        return media[0] if media else None

    def codec_by_pt(self, payload_type: int) -> Codec | None:
        return next((c for c in self.codecs if c.payload_type == payload_type), None)

    def rtx_payload_type(self, payload_type: int) -> int | None:
        return next((c.payload_type for c in self.codecs if c.is_rtx and c.apt == payload_type), None)

    @property
    def remote_media_ssrcs(self) -> tuple[int, ...]:
        rtx = set(self.remote_rtx.values())
        return tuple(s for s in self.remote_ssrcs if s not in rtx)

    @property
    def mid_extension_id(self) -> int | None:
        return self.header_extensions.get(URI_MID)

    @property
    def abs_send_time_extension_id(self) -> int | None:
        return self.header_extensions.get(URI_ABS_SEND_TIME)

    @property
    def audio_level_extension_id(self) -> int | None:
        return self.header_extensions.get(URI_AUDIO_LEVEL)

    @property
    def transport_cc_extension_id(self) -> int | None:
        return self.header_extensions.get(URI_TWCC)


@dataclass
class PeerStats:
    rtp_in: int = 0
    rtcp_in: int = 0
    rtp_out: int = 0
    rtcp_out: int = 0
    send_failures: int = 0
    callback_errors: int = 0
    suppressed_starts: list[tuple[str, str]] = field(default_factory=list)  # (mid, "receiver"|"sender")


RtpCallback = Callable[[bytes, float], Awaitable[None] | None]
RtcpCallback = Callable[[bytes], Awaitable[None] | None]


def _find_media(desc: _aiortc_sdp.SessionDescription | None, mid: str) -> Any:
    if desc is None:
        return None
    return next((m for m in desc.media if m.rtp.muxId == mid), None)


def _ssrc_info(media: Any) -> tuple[tuple[int, ...], dict[int, int], str | None]:
    if media is None:
        return (), {}, None
    ssrcs = tuple(s.ssrc for s in media.ssrc)
    rtx: dict[int, int] = {}
    for group in media.ssrc_group:
        if group.semantic == "FID" and len(group.items) >= 2:
            rtx[int(group.items[0])] = int(group.items[1])
    cname = next((s.cname for s in media.ssrc if s.cname), None)
    return ssrcs, rtx, cname


class EngineSrtp:
    """Stands in for aiortc's outgoing pylibsrtp Session: protects with the media engine's context of this
    subscriber, so that what Python sends (RTCP, probes) and the engine's copies share one rollover counter."""

    def __init__(self, engine: Any, transport: int) -> None:
        self._engine = engine
        self._transport = transport

    def protect(self, data: bytes) -> bytes:
        try:
            return self._engine.protect_rtp(self._transport, data)
        except (RuntimeError, ValueError) as exc:
            raise pylibsrtp.Error(str(exc)) from exc

    def protect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._engine.protect_rtcp(self._transport, data)
        except (RuntimeError, ValueError) as exc:
            raise pylibsrtp.Error(str(exc)) from exc


class CountingSrtp:
    """Wraps aiortc's incoming pylibsrtp Session: SRTP/SRTCP that fails authentication is counted on the connection
    (aiortc only logs it at debug level) and still raises, so aiortc drops it as before."""

    def __init__(self, session: Any, connection: MuxConnection) -> None:
        self._session = session
        self._connection = connection

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect(data)
        except pylibsrtp.Error:
            self._connection.srtp_failed()
            raise

    def unprotect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect_rtcp(data)
        except pylibsrtp.Error:
            self._connection.srtp_failed()
            raise


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def negotiation_turn(rtc: RtcServer | None) -> AsyncIterator[None]:
    """One negotiation step (aiortc's SDP work for an offer or an answer, 2-10 ms of CPU) per event-loop turn in
    the whole process, with the shared port read before and after it.

    When a hundred students join at once, their steps are all ready at the same time and the loop would run them
    back to back for seconds before it read the socket again: binding requests were answered up to 2.4 s late
    (clients time their checks out), media and RTCP waited as long. Here each step waits for the previous one,
    which holds its turn until the loop has polled its sockets once more (the `sleep(0)`), so a loop turn carries
    at most one step; the port is also read at the step's edges (`RtcServer.poll`), so what came in meanwhile,
    consent checks first, is answered within one step. The total CPU is the same; the latency is bounded."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    async with lock:
        if rtc is not None:
            rtc.poll()
        try:
            yield
        finally:
            if rtc is not None:
                rtc.poll()
            await asyncio.sleep(0)


def _unused(*_args: Any, **_kwargs: Any) -> None:
    """Stands for a part of aiortc's RTCRtpReceiver that only its own receive path (never run here) uses."""
    return None


_RECEIVER_PARTS = {"RemoteBitrateEstimator": _unused, "JitterBuffer": _unused, "NackGenerator": _unused,
                   "queue": SimpleNamespace(Queue=_unused)}


@contextlib.contextmanager
def _lean_receiver() -> Iterator[None]:
    """While aiortc makes a transceiver: its RTCRtpReceiver gets no bitrate estimator, jitter buffer, NACK
    generator or decoder queue. A Peer replaces the receiver's receive path, so they were never used, and they
    were most of a subscriber's Python memory (a video receiver's estimator alone keeps 1000 rate buckets,
    ~95 kB) and a tenth of the CPU of a join. No await in between: no other code sees the swapped names."""
    saved = {name: getattr(_aiortc_rtcrtpreceiver, name) for name in _RECEIVER_PARTS}
    for name, stand_in in _RECEIVER_PARTS.items():
        setattr(_aiortc_rtcrtpreceiver, name, stand_in)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_aiortc_rtcrtpreceiver, name, value)


class SpentDtls:
    """Stands in for aiortc's pyOpenSSL connection (``RTCDtlsTransport._ssl``) once the handshake is over on both
    sides: SRTP needs only the keys, which the engine has. What aiortc's DTLS loop still calls is answered as an
    idle connection would: a record that arrives later (a close_notify, a retransmission) is dropped and counted,
    nothing is ever written, shutting down does nothing (the client learns of the end by signaling or consent)."""

    def __init__(self, connection: MuxConnection) -> None:
        self._connection = connection

    def bio_write(self, data: bytes) -> int:
        self._connection.server.drop("dtls_after_handshake")
        return len(data)

    def recv(self, _size: int) -> bytes:
        raise SSL.WantReadError()

    def bio_read(self, _size: int) -> bytes:
        raise SSL.WantReadError()

    def send(self, _data: bytes) -> int:
        raise SSL.Error("DTLS session released after the handshake")

    def shutdown(self) -> bool:
        return True

    def DTLSv1_get_timeout(self) -> None:
        return None

    def DTLSv1_handle_timeout(self) -> bool:
        return False


class _SharedCertificate:
    """Stands in for aiortc's RTCCertificate class inside RTCPeerConnection.__init__ (see the module docstring)."""

    def __init__(self, certificate: RTCCertificate) -> None:
        self._certificate = certificate

    def generateCertificate(self) -> RTCCertificate:
        return self._certificate


class Peer:
    """One participant's RTCPeerConnection, used as a raw RTP/RTCP pipe.

    Incoming: ``on_rtp(data, arrival)`` gets each SRTP-decrypted RTP packet
    (``arrival`` = ``time.monotonic()`` when it was handed over) and
    ``on_rtcp(data)`` each decrypted compound RTCP packet.  Callbacks may be
    plain functions or coroutine functions; they run inside the DTLS receive
    loop, so they must be quick, and their exceptions are logged and counted
    (never propagated: an exception there would tear the transport down).

    Outgoing: ``await send_rtp(data)`` / ``await send_rtcp(data)``.  Use the
    ``local_ssrc`` / payload types of :meth:`media_sections` so the remote
    side's demuxer recognises the packets.

    Signalling: either the remote offers (:meth:`accept_offer`) or we offer
    (:meth:`add_send_transceiver` / :meth:`add_recv_transceiver`, then
    :meth:`create_offer` and :meth:`accept_answer`).
    """

    def __init__(
        self,
        on_rtp: RtpCallback | None = None,
        on_rtcp: RtcpCallback | None = None,
        *,
        ice: IceConfig | None = None,
        name: str = "peer",
        on_transceiver: Callable[[RTCRtpTransceiver], None] | None = None,
        engine: Any = None,
        transport: int | None = None,
        rtc: RtcServer | None = None,
    ) -> None:
        """`engine` and `transport`: the media engine and this subscriber's transport in it, which then owns the
        outgoing SRTP context and sends the fan-out's copies itself (the SFU's peers); without them (clients,
        tests) aiortc's own SRTP session and send path are used. `rtc`: the process's one-port ICE-lite server,
        which then carries this connection (no socket of its own, the process's certificate); without it the
        connection gathers its own sockets (per-connection mode, clients)."""
        self.name = name
        self._rtc = rtc
        self._tasks: set[asyncio.Future[Any]] = set()  # awaitable callbacks of natively received packets
        self._release_handle: asyncio.TimerHandle | None = None  # the look for the end of the DTLS handshake
        self._mux: dict[int, MuxConnection] = {}  # id(RTCIceTransport) -> its connection on the shared port
        self._engine = engine
        self._engine_transport = transport
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        # a subscriber's transport-cc loss window that the engine read itself (native feedback): (lost, reported)
        self.on_loss_window: Callable[[int, int], Any] | None = None
        self.stats = PeerStats()
        self._ice = ice
        self._on_transceiver = on_transceiver
        self._adopted: set[int] = set()
        self._dtls: list[RTCDtlsTransport] = []
        self._gatherers: set[int] = set()
        self.receive_parameters: dict[str, Any] = {}  # mid -> RTCRtpReceiveParameters aiortc computed
        self.send_parameters: dict[str, Any] = {}  # mid -> RTCRtpSendParameters aiortc computed

        if rtc is None:
            self.pc = RTCPeerConnection(peer_configuration())
        else:
            # RTCPeerConnection.__init__ makes a certificate; the process's one is used instead. No await in
            # between, so no other connection can see the swapped name.
            original_class = _aiortc_rtcpeerconnection.RTCCertificate
            _aiortc_rtcpeerconnection.RTCCertificate = _SharedCertificate(rtc.certificate)  # type: ignore[misc,assignment]
            try:
                self.pc = RTCPeerConnection(peer_configuration())
            finally:
                _aiortc_rtcpeerconnection.RTCCertificate = original_class  # type: ignore[misc]
        self.pc.on("connectionstatechange", self._update_path)
        original = getattr(self.pc, _CREATE_TRANSCEIVER)

        def create_transceiver(direction: str, kind: str, sender_track: Any = None) -> RTCRtpTransceiver:
            with _lean_receiver():
                transceiver = original(direction=direction, kind=kind, sender_track=sender_track)
            self._adopt(transceiver)
            if self._on_transceiver is not None:
                # Before setRemoteDescription negotiates codecs for it: codec preferences set here apply.
                self._on_transceiver(transceiver)
            return transceiver

        setattr(self.pc, _CREATE_TRANSCEIVER, create_transceiver)

    # ------------------------------------------------------------------ hooks

    def _adopt(self, transceiver: RTCRtpTransceiver) -> None:
        if id(transceiver) in self._adopted:
            return
        self._adopted.add(id(transceiver))

        async def receive(parameters: Any) -> None:
            mid = parameters.muxId or transceiver.mid or "?"
            self.receive_parameters[mid] = parameters
            self.stats.suppressed_starts.append((mid, "receiver"))
            logger.debug("%s: suppressed RTCRtpReceiver.receive for mid %s", self.name, mid)

        async def send(parameters: Any) -> None:
            mid = parameters.muxId or transceiver.mid or "?"
            self.send_parameters[mid] = parameters
            self.stats.suppressed_starts.append((mid, "sender"))
            logger.debug("%s: suppressed RTCRtpSender.send for mid %s", self.name, mid)

        transceiver.receiver.receive = receive  # type: ignore[method-assign]
        transceiver.sender.send = send  # type: ignore[method-assign]
        self._hook_transport(transceiver.receiver.transport)
        if transceiver.sender.transport is not transceiver.receiver.transport:
            self._hook_transport(transceiver.sender.transport)

    def _hook_transport(self, dtls: RTCDtlsTransport) -> None:
        if not any(d is dtls for d in self._dtls):
            self._dtls.append(dtls)
            dtls._handle_rtp_data = self._handle_rtp_data  # type: ignore[method-assign]
            dtls._handle_rtcp_data = self._handle_rtcp_data  # type: ignore[method-assign]
            if self._rtc is not None:
                self._use_shared_port(dtls)
            if self._engine is not None or self._rtc is not None:
                self._hook_srtp(dtls)
        gatherer = dtls.transport.iceGatherer
        if self._rtc is not None:
            return
        if self._ice is not None and id(gatherer) not in self._gatherers:
            self._gatherers.add(id(gatherer))
            restrict_gathering(gatherer._connection, self._ice)

    def _use_shared_port(self, dtls: RTCDtlsTransport) -> None:
        """This transport's ICE goes through the process's server: its aioice connection (never gathered, so
        without a socket) is replaced before aiortc gathers, keeping the ufrag and password aiortc made."""
        ice = dtls.transport
        if id(ice) in self._mux or self._rtc is None:
            return
        gatherer = ice.iceGatherer
        old = gatherer._connection
        connection = self._rtc.connection(old.local_username, old.local_password)
        connection.on_path = self._path_changed
        self._mux[id(ice)] = connection
        gatherer._connection = connection  # type: ignore[assignment]
        ice._connection = connection  # type: ignore[assignment]
        ice._recv = connection.recv  # type: ignore[method-assign]
        ice._send = connection.send  # type: ignore[method-assign]

        def local_parameters() -> RTCIceParameters:
            return RTCIceParameters(usernameFragment=connection.local_username, password=connection.local_password,
                                    iceLite=True)

        gatherer.getLocalParameters = local_parameters  # type: ignore[method-assign]

    def _hook_srtp(self, dtls: RTCDtlsTransport) -> None:
        """After aiortc sets up SRTP, the engine takes the outgoing direction over (see the module docstring) and,
        on the shared port, failed authentications of incoming packets are counted."""
        original = dtls._setup_srtp

        def setup_srtp() -> None:
            original()
            if dtls._tx_srtp is None:
                return  # no profile negotiated: aiortc failed the transport
            connection = self._mux.get(id(dtls.transport))
            if connection is not None and dtls._rx_srtp is not None:
                dtls._rx_srtp = CountingSrtp(dtls._rx_srtp, connection)  # type: ignore[assignment]
            if self._engine is None:
                return
            selected = dtls._ssl.get_selected_srtp_profile()  # type: ignore[union-attr]
            profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == selected)
            material = dtls._ssl.export_keying_material(  # type: ignore[union-attr]
                b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
            key = profile.get_key_and_salt(material, 1 if dtls._role == "server" else 0)
            self._engine.set_srtp(self._engine_transport, profile.libsrtp_profile, key)
            if connection is not None and self._rtc is not None and self._rtc.engine is self._engine:
                # native receive: the engine unprotects what the client sends from its selected address
                rx_key = profile.get_key_and_salt(material, 0 if dtls._role == "server" else 1)
                self._engine.set_srtp_rx(self._engine_transport, profile.libsrtp_profile, rx_key)
                self._rtc.register_receiver(self._engine_transport, self._native_rx)
                self._release_when_done(dtls, connection)
            dtls._tx_srtp = EngineSrtp(self._engine, self._engine_transport)  # type: ignore[assignment]

        dtls._setup_srtp = setup_srtp  # type: ignore[method-assign]

    def _adopt_all(self) -> None:
        for transceiver in self.pc.getTransceivers():
            self._adopt(transceiver)
        if self.pc.sctp is not None:
            self._hook_transport(self.pc.sctp.transport)

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        self.stats.rtp_in += 1
        callback = self.on_rtp
        if callback is None:
            return
        try:
            result = callback(data, time.monotonic())
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.stats.callback_errors += 1
            logger.exception("%s: on_rtp callback failed", self.name)

    async def _handle_rtcp_data(self, data: bytes) -> None:
        self.stats.rtcp_in += 1
        callback = self.on_rtcp
        if callback is None:
            return
        try:
            result = callback(data)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.stats.callback_errors += 1
            logger.exception("%s: on_rtcp callback failed", self.name)

    def _release_when_done(self, dtls: RTCDtlsTransport, connection: MuxConnection) -> None:
        """The first packet the engine authenticated with this connection's keys proves that the client finished
        its handshake: the DTLS session (~90 kB of OpenSSL state each: record buffers, handshake queues) is let go
        then. The engine's count is looked at once a second (a subscriber's first RTCP may be read in C only)."""
        loop = asyncio.get_running_loop()

        def check() -> None:
            self._release_handle = None
            if dtls.state != "connected" or not isinstance(dtls._ssl, SSL.Connection) or self._engine is None:
                return
            try:
                authenticated = self._engine.rx_stats(self._engine_transport)["packets"]
            except (RuntimeError, ValueError):  # the engine's transport is gone (closed meanwhile)
                return
            if authenticated:
                dtls._ssl = SpentDtls(connection)  # type: ignore[assignment]
            else:
                self._release_handle = loop.call_later(DTLS_RELEASE_CHECK, check)

        self._release_handle = loop.call_later(DTLS_RELEASE_CHECK, check)

    def _native_rx(self, kind: int, data: bytes, arrival: float, flags: int | None = None) -> None:
        """RTP (kind 0) or RTCP (1) the engine read and unprotected (sfu/rtcserver.py): the same callbacks as
        aiortc's receive loop calls, without its queue, task and coroutines. `arrival` is the kernel's stamp,
        so a stalled loop does not show in TWCC feedback as network delay. RTP the engine already forwarded (kind
        4, a routed SSRC) comes with push's flags: on_rtp does the bookkeeping only."""
        if kind == RX_RTP:
            self.stats.rtp_in += 1
            callback: Callable[..., Any] | None = self.on_rtp
            args: tuple[Any, ...] = (data, arrival)
        elif kind == RX_PUSHED:
            self.stats.rtp_in += 1
            callback, args = self.on_rtp, (data, arrival, flags)
        elif kind == RX_LOSS:  # the engine's loss window: lost and reported, two 16-bit numbers
            callback, args = self.on_loss_window, (data[0] << 8 | data[1], data[2] << 8 | data[3])
        else:
            self.stats.rtcp_in += 1
            callback, args = self.on_rtcp, (data,)
        if callback is None:
            return
        try:
            result = callback(*args)
            if result is not None and inspect.isawaitable(result):  # plain callbacks return None: no check
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            self.stats.callback_errors += 1
            logger.exception("%s: %s callback failed", self.name,
                             {RX_RTP: "on_rtp", RX_LOSS: "on_loss_window", RX_PUSHED: "on_rtp"}.get(kind, "on_rtcp"))

    # ------------------------------------------------------------- signalling

    def add_send_transceiver(self, kind: str, *, stream_id: str | None = None) -> RTCRtpTransceiver:
        """Add a sendonly m-section with no track and no encoder (for when we offer).

        aiortc announces ``a=ssrc:<sender._ssrc>`` (and RTX) for it; after
        negotiation read them from :meth:`media_sections`.  ``stream_id``
        sets the first half of ``a=msid`` (the browser's MediaStream id).
        """
        transceiver = self.pc.addTransceiver(kind, direction="sendonly")
        self._adopt(transceiver)
        if stream_id is not None:
            transceiver.sender._stream_id = stream_id
        return transceiver

    def add_recv_transceiver(self, kind: str) -> RTCRtpTransceiver:
        """Add a recvonly m-section (for when we offer and want media)."""
        transceiver = self.pc.addTransceiver(kind, direction="recvonly")
        self._adopt(transceiver)
        return transceiver

    async def create_offer(self) -> RTCSessionDescription:
        """createOffer + setLocalDescription; returns the offer with all candidates."""
        async with negotiation_turn(self._rtc):
            self._adopt_all()
            await self.pc.setLocalDescription(await self.pc.createOffer())
            return self.pc.localDescription

    async def accept_answer(self, answer: RTCSessionDescription) -> None:
        async with negotiation_turn(self._rtc):
            self._adopt_all()
            await self.pc.setRemoteDescription(answer)
            self._adopt_all()

    async def accept_offer(
        self,
        offer: RTCSessionDescription,
        directions: Mapping[str, str] | None = None,
    ) -> RTCSessionDescription:
        """setRemoteDescription(offer), choose directions, answer.

        Default answer direction per m-section: receive what the remote sends
        (remote sendrecv/sendonly -> recvonly) and send where the remote only
        receives (remote recvonly -> sendonly).  ``directions`` (mid ->
        direction) overrides that.
        """
        async with negotiation_turn(self._rtc):
            self._adopt_all()
            await self.pc.setRemoteDescription(offer)
            self._adopt_all()
            remote = _aiortc_sdp.SessionDescription.parse(offer.sdp)
            directions = dict(directions or {})
            for transceiver in self.pc.getTransceivers():
                media = _find_media(remote, transceiver.mid) if transceiver.mid is not None else None
                if media is None:
                    continue
                wanted = directions.get(transceiver.mid)
                if wanted is None:
                    wanted = _DEFAULT_ANSWER_DIRECTION[media.direction or "sendrecv"]
                transceiver.direction = wanted
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            return self.pc.localDescription

    async def wait_connected(self) -> None:
        """Wait until ICE + DTLS are up (SRTP keys exist); raises ConnectionError on failure.

        Does not time out by itself: wrap it in ``asyncio.wait_for``.
        """
        if self.pc.connectionState == "connected":
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_change() -> None:
            state = self.pc.connectionState
            if done.done():
                return
            if state == "connected":
                done.set_result(None)
            elif state in ("failed", "closed"):
                done.set_exception(ConnectionError(f"{self.name}: connection {state}"))

        self.pc.on("connectionstatechange", on_change)
        try:
            on_change()
            await done
        finally:
            if on_change in self.pc.listeners("connectionstatechange"):
                self.pc.remove_listener("connectionstatechange", on_change)

    @property
    def connected(self) -> bool:
        return any(d.state == "connected" for d in self._dtls)

    # ----------------------------------------------------------------- output

    def _transport(self) -> RTCDtlsTransport | None:
        for dtls in self._dtls:
            if dtls.state == "connected":
                return dtls
        return None

    def _path_changed(self) -> None:
        """The client nominated another address, or the shared-port connection closed (consent expired)."""
        try:
            self._update_path()
        except RuntimeError:  # the engine's transport is already gone (the participant closed first)
            pass

    def _update_path(self) -> None:
        """The engine sends the fan-out's copies itself: it gets the nominated pair's socket and remote address
        when the connection is up, and loses them whenever its state changes otherwise."""
        logger.info("%s: connection %s", self.name, self.pc.connectionState)
        if self._engine is None:
            return
        path = self._resolve_path() if self.pc.connectionState == "connected" else None
        if path is None:
            self._engine.clear_path(self._engine_transport)
        else:
            self._engine.set_path(self._engine_transport, *path)

    def _resolve_path(self) -> tuple[int, str, int] | None:
        dtls = self._transport()
        if dtls is None:
            return None
        connection = self._mux.get(id(dtls.transport))
        if connection is not None:
            return connection.path()
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return None
        transport = pair.protocol.transport
        sock = transport.get_extra_info("socket") if transport is not None and not transport.is_closing() else None
        if sock is None:
            return None
        host, port = pair.remote_addr[:2]
        return sock.fileno(), host, port

    async def send_rtp(self, data: bytes) -> bool:
        """SRTP-protect and send one raw RTP packet. Returns False if not sent."""
        if len(data) < 12 or data[0] >> 6 != 2 or _is_rtcp(data):
            # _send_rtp would protect an RTCP-looking packet as SRTCP
            logger.warning("%s: send_rtp refused a packet that is not RTP", self.name)
            self.stats.send_failures += 1
            return False
        if await self._send(data):
            self.stats.rtp_out += 1
            return True
        return False

    async def send_rtcp(self, data: bytes) -> bool:
        """SRTCP-protect and send one raw (compound) RTCP packet. Returns False if not sent."""
        if len(data) < 8 or data[0] >> 6 != 2 or not _is_rtcp(data):
            logger.warning("%s: send_rtcp refused a packet that is not RTCP", self.name)
            self.stats.send_failures += 1
            return False
        # With a media engine: its SRTP context and socket, one C call (aiortc's path awaits seven coroutines);
        # before the engine has the key and the nominated pair, aiortc's path (through EngineSrtp) as usual.
        if self._engine is not None and self._engine.send_rtcp(self._engine_transport, data):
            self.stats.rtcp_out += 1
            return True
        if await self._send(data):
            self.stats.rtcp_out += 1
            return True
        return False

    async def _send(self, data: bytes) -> bool:
        dtls = self._transport()
        if dtls is None:
            self.stats.send_failures += 1
            return False
        try:
            await dtls._send_rtp(data)
        except (ConnectionError, pylibsrtp.Error) as exc:
            self.stats.send_failures += 1
            logger.debug("%s: send failed: %s", self.name, exc)
            return False
        return True

    # ------------------------------------------------------------ negotiation

    def descriptions(self) -> tuple[_aiortc_sdp.SessionDescription | None, _aiortc_sdp.SessionDescription | None]:
        """The local and remote descriptions as aiortc holds them, parsed (read only: they are aiortc's own)."""
        return getattr(self.pc, _LOCAL_DESCRIPTION)(), getattr(self.pc, _REMOTE_DESCRIPTION)()

    def media_sections(self) -> list[MediaSection]:
        """Negotiated m-sections (codecs/extensions from the SDP answer, when there is one)."""
        local_sd, remote_sd = self.descriptions()
        if local_sd is not None and local_sd.type == "answer":
            answer_sd = local_sd
        elif remote_sd is not None and remote_sd.type == "answer":
            answer_sd = remote_sd
        else:
            answer_sd = None

        sections = []
        for transceiver in self.pc.getTransceivers():
            mid = transceiver.mid
            if mid is None or transceiver.stopped:
                continue
            local_m = _find_media(local_sd, mid)
            remote_m = _find_media(remote_sd, mid)
            source = _find_media(answer_sd, mid) or local_m or remote_m
            if source is None:
                continue
            codecs = tuple(
                Codec(
                    payload_type=c.payloadType,
                    mime_type=c.mimeType,
                    clock_rate=c.clockRate,
                    channels=c.channels,
                    fmtp=dict(c.parameters),
                    rtcp_fb=tuple(f.type + (f" {f.parameter}" if f.parameter else "") for f in c.rtcpFeedback),
                )
                for c in source.rtp.codecs
            )
            remote_ssrcs, remote_rtx, remote_cname = _ssrc_info(remote_m)
            local_ssrcs, local_rtx, _ = _ssrc_info(local_m)
            local_ssrc = local_ssrcs[0] if local_ssrcs else None
            if local_ssrc is not None and local_ssrc != transceiver.sender._ssrc:
                raise RuntimeError(f"mid {mid}: SDP ssrc {local_ssrc} != sender._ssrc {transceiver.sender._ssrc}")
            sections.append(
                MediaSection(
                    mid=mid,
                    kind=transceiver.kind,
                    direction=transceiver.currentDirection,
                    codecs=codecs,
                    header_extensions={e.uri: e.id for e in source.rtp.headerExtensions},
                    remote_ssrcs=remote_ssrcs,
                    remote_rtx=remote_rtx,
                    remote_msid=remote_m.msid if remote_m is not None else None,
                    remote_cname=remote_cname,
                    local_ssrc=local_ssrc,
                    local_rtx_ssrc=local_rtx.get(local_ssrc) if local_ssrc is not None else None,
                    local_msid=local_m.msid if local_m is not None else None,
                )
            )
        return sections

    def section(self, mid: str) -> MediaSection:
        for section in self.media_sections():
            if section.mid == mid:
                return section
        raise KeyError(mid)

    def ssrc_to_mid(self) -> dict[int, str]:
        """Remote SSRC (media and RTX) -> MID, from the remote SDP's a=ssrc lines."""
        table: dict[int, str] = {}
        for section in self.media_sections():
            for ssrc in section.remote_ssrcs:
                table[ssrc] = section.mid
        return table

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        if self._release_handle is not None:
            self._release_handle.cancel()
        if self._rtc is not None and self._engine_transport is not None:
            self._rtc.unregister_receiver(self._engine_transport)
        for transceiver in self.pc.getTransceivers():
            track = transceiver.receiver.track
            if track is not None:
                track.stop()  # the never-fed RemoteStreamTrack aiortc created
        await self.pc.close()
