"""The media engine in pure Python: the reference the native engine (sfu/engine/native/core.c) is held to.

Every rule of the per-packet path is written here once, in the plainest Python, and the C code is its twin:
tests/sfu/test_engine_diff.py drives both with the same packet sequences and requires the same bytes out. It is
also the engine that runs when the extension could not be built (`CLASSCAST_ENGINE=python`), only slower.

Objects are named by small integers so that the same commands drive both implementations:
* a *stream* is one incoming RTP stream (a simulcast layer): its packet cache for NACKs, its keyframe detection
  and its cached group of pictures (GOP);
* a *transport* is one subscriber's connection: its SRTP context (the only one for its outgoing packets, also
  used for RTCP built in Python), its socket and remote address, its transport-wide sequence numbers;
* a *slot* is one sendonly m-section toward a subscriber: SSRC, payload types, the sequence / timestamp / VP8
  rewriters and the history of what was sent (for NACKs). A consumer is attached to a slot: the producer's
  streams, the one it carries (current), the one it wants (target), paused, started.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp

from sfu.frames import h264_sps
from sfu.rtp import (
    SequenceRewriter,
    TimestampRewriter,
    Vp8PictureIdRewriter,
    parse_rtp,
    parse_vp8_descriptor,
    rewrite_vp8_descriptor_in_place,
)

CACHE = 2048
HISTORY = 1024  # the native CC_HISTORY: a NACK for older copies than that is answered from nothing
TX_WINDOW = 256  # the native CC_TX_WINDOW: libsrtp's replay window for what is sent (core.h says why)
GOP_MAX = 1500
REPLAY_MAX = 64  # the native CC_REPLAY_MAX: a joiner's replay beyond this is the keyframe alone (core.h says why)
MAX_LAYERS = 8
MAX_PACKET = 65535

CODEC_OTHER, CODEC_VP8, CODEC_H264 = 0, 1, 2
F_KEYFRAME, F_EVENTS, F_ACCEPTED = 1, 2, 4

DROP_REASONS = (
    "malformed", "wrong_payload_type", "padding", "blocked", "paused", "unbound",
    "other_layer", "before_keyframe", "stale", "no_path", "srtp_error", "send_error", "simulated_loss",
)
RTX_BURST = 256  # retransmissions allowed beyond half the packets sent

_HEADER = struct.Struct("!BBHII")
_TWCC_EXT = struct.Struct("!HHBHB")


class EngineError(RuntimeError):
    pass


def h264_has_sps(data: bytes, start: int, end: int) -> bool:
    """The packet brings an SPS (the start of a decodable picture): `sfu.frames.h264_sps` as a yes/no, the same
    rule the native core follows."""
    return h264_sps(data, start, end) is not None


class _Packet:
    __slots__ = ("arrival", "data", "keyframe", "marker", "payload", "seq", "ts", "vp8")

    def __init__(self, data: bytes, seq: int, ts: int, marker: bool, payload: bytes, arrival: float,
                 vp8: object, keyframe: bool) -> None:
        self.data, self.seq, self.ts, self.marker, self.payload = data, seq, ts, marker, payload
        self.arrival, self.vp8, self.keyframe = arrival, vp8, keyframe


def _drops() -> dict[str, int]:
    return dict.fromkeys(DROP_REASONS, 0)


@dataclass
class _Stream:
    codec: int
    video: bool
    pt: int
    blocked: bool = False
    cache: list[_Packet | None] = field(default_factory=lambda: [None] * CACHE)
    gop: list[_Packet] = field(default_factory=list)
    gop_complete: bool = False
    kts: int | None = None
    slots: list[int] = field(default_factory=list)
    packets_in: int = 0
    bytes_in: int = 0
    keyframes: int = 0
    drops: dict[str, int] = field(default_factory=_drops)


TWCC_SENT = 8192  # transport-wide numbers remembered until reported (the engine's CC_TWCC_SENT)
TWCC_SLACK = 2000  # feedback statuses readable before anything was sent (CC_TWCC_SLACK)


RX_RTP, RX_RTCP, RX_SLOW, RX_LOSS, RX_PUSHED, RX_DROPPED, RX_CONSUMED = 0, 1, 2, 3, 4, -1, -2  # the native CC_RX_*
ROUTES = 16  # routed SSRCs per transport (CC_ROUTES): a publisher's simulcast layers of camera and screen, audio
# A transport-cc loss window is judged once it holds LOSS_WINDOW reported numbers (sfu/bwe.py TwccSender); a loss
# fraction (x/256) at or below LOSS_QUIET changes nothing in the subscriber's estimate (SubscriberEstimate.on_loss
# acts above 2%), so feedback and reports that show no more stay in the engine (native feedback, rx_feedback).
LOSS_WINDOW, LOSS_QUIET = 50, 5
_LOSS = struct.Struct("!HH")
RX_BATCH, RX_MTU = 64, 2048
# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS; Python's socket module does not name it): the kernel stamps each
# datagram's arrival, so TWCC feedback reports when a packet reached the machine, not when a busy loop read it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def stamp_arrivals(sock: socket.socket) -> None:
    """Asks the kernel to stamp each datagram read from `sock` with its arrival (both engines read the stamp).

    Linux turns stamping on machine-wide through a static key flipped later, from a work queue: when no other
    socket on the machine stamps, the datagrams that arrive in the first moments carry no stamp and the kernel
    gives them the time of the read (what an unstamped socket reports anyway)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)



def _addr_key(addr: tuple[str, int]) -> tuple[int, bytes, int]:
    """The bytes that identify a UDP source, whatever the spelling of the address (as the native addr_key)."""
    host, port = addr[0], addr[1]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, socket.inet_pton(family, host), port


@dataclass
class _Transport:
    srtp: pylibsrtp.Session | None = None
    sock: socket.socket | None = None
    addr: tuple[str, int] | None = None
    twcc_id: int = 0
    twcc_next: int = 0
    twcc_stamped: int = 0
    twcc_pending: set[int] = field(default_factory=set)
    twcc_budget: int = 0  # feedback statuses still worth reading (twcc_feedback)
    twcc_feedbacks: int = 0
    twcc_refused: int = 0
    twcc_reported: int = 0
    twcc_lost: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    drops: dict[str, int] = field(default_factory=_drops)
    loss_permille: int = 0
    loss_state: int = 1
    loss_retransmissions: bool = False
    rx: pylibsrtp.Session | None = None  # the client's SRTP, for native-path receive (issue 14)
    packets_in: int = 0
    bytes_in: int = 0
    rx_auth_failed: int = 0
    feedback: bool = False  # native feedback (rx_feedback)
    win_lost: int = 0  # the transport-cc loss window (twcc_window)
    win_reported: int = 0
    rtcp_consumed: int = 0
    loss_windows: int = 0
    routes: dict[int, int] = field(default_factory=dict)  # a publisher's SSRC -> stream (route)
    rx_pushed: int = 0

    def lose(self) -> bool:
        """The set_loss test hook (xorshift32, as the native engine)."""
        if not self.loss_permille:
            return False
        x = self.loss_state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.loss_state = x
        return x % 1000 < self.loss_permille


@dataclass
class _Slot:
    transport: int
    clock_rate: int
    bound: bool = False
    ssrc: int = 0
    pt: int = 0
    rtx_ssrc: int | None = None
    rtx_pt: int | None = None
    rtx_seq: int = 0
    last_seq: int = -1
    seq: SequenceRewriter = field(default_factory=SequenceRewriter)
    ts: TimestampRewriter | None = None
    vp8: Vp8PictureIdRewriter = field(default_factory=Vp8PictureIdRewriter)
    # out_seq & (HISTORY-1) -> (out_seq, stream, in_seq, out_ts, picture id sent, TL0PICIDX sent)
    history: list[tuple[int, int, int, int, int | None, int | None] | None] = field(
        default_factory=lambda: [None] * HISTORY)
    attached: bool = False
    video: bool = False
    streams: list[int] = field(default_factory=list)
    current: int = -1
    target: int = -1
    paused: bool = False
    started: bool = False
    switch: bool = True
    packets_sent: int = 0
    octets_sent: int = 0
    bytes_out: int = 0
    retransmitted: int = 0
    switches: int = 0
    nacks_refused: int = 0
    drops: dict[str, int] = field(default_factory=_drops)


class Engine:
    """The engine interface (the native `sfu.engine._native.Engine` has the same methods and results)."""

    def __init__(self) -> None:
        self._streams: list[_Stream | None] = []
        self._transports: list[_Transport | None] = []
        self._slots: list[_Slot | None] = []
        self._events: list[tuple[int, int]] = []
        self._capture: list[tuple[int, bytes, bytes | None]] | None = None
        self._rx = {"packets": 0, "bytes": 0, "auth_failed": 0, "truncated": 0, "slow": 0, "consumed": 0, "pushed": 0}
        self._totals: dict[str, Any] = {"packets_out": 0, "bytes_out": 0, "retransmitted": 0, "switches": 0,
                                        "drops": _drops()}

    # ---- lookups ------------------------------------------------------------------------------------------

    def _stream(self, sid: int, what: str) -> _Stream:
        stream = self._streams[sid] if 0 <= sid < len(self._streams) else None
        if stream is None:
            raise EngineError(f"{what}: unknown stream {sid}")
        return stream

    def _transport(self, tid: int, what: str) -> _Transport:
        transport = self._transports[tid] if 0 <= tid < len(self._transports) else None
        if transport is None:
            raise EngineError(f"{what}: unknown transport {tid}")
        return transport

    def _slot(self, sid: int, what: str) -> _Slot:
        slot = self._slots[sid] if 0 <= sid < len(self._slots) else None
        if slot is None:
            raise EngineError(f"{what}: unknown slot {sid}")
        return slot

    @staticmethod
    def _free_id(table: list) -> int:
        for i, item in enumerate(table):
            if item is None:
                return i
        table.append(None)
        return len(table) - 1

    # ---- streams ------------------------------------------------------------------------------------------

    def add_stream(self, codec: int, video: bool, payload_type: int) -> int:
        if codec not in (CODEC_OTHER, CODEC_VP8, CODEC_H264) or not 0 <= payload_type <= 127:
            raise ValueError("bad stream")
        self._streams.append(_Stream(codec, bool(video), payload_type))  # ids are never reused
        return len(self._streams) - 1

    def remove_stream(self, sid: int) -> None:
        stream = self._stream(sid, "remove_stream")
        for slot_id in stream.slots:
            slot = self._slots[slot_id]
            if slot is None:
                continue
            slot.streams = [-1 if s == sid else s for s in slot.streams]
            if slot.current == sid:
                slot.current = -1
            if slot.target == sid:
                slot.target = -1
        self._streams[sid] = None
        for transport in self._transports:  # its publisher's packets go back to Python, which drops them
            if transport is not None:
                transport.routes = {ssrc: s for ssrc, s in transport.routes.items() if s != sid}

    def set_blocked(self, sid: int, blocked: bool) -> None:
        self._stream(sid, "set_blocked").blocked = bool(blocked)

    # ---- transports ---------------------------------------------------------------------------------------

    def add_transport(self) -> int:
        self._transports.append(_Transport())  # ids are never reused
        return len(self._transports) - 1

    def remove_transport(self, tid: int) -> None:
        transport = self._transport(tid, "remove_transport")
        if transport.sock is not None:
            transport.sock.close()
        self._transports[tid] = None

    def set_srtp(self, tid: int, profile: int, key: bytes) -> None:
        transport = self._transport(tid, "set_srtp")
        try:
            policy = pylibsrtp.Policy(key=bytes(key), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                      srtp_profile=profile)
            policy.allow_repeat_tx = True
            policy.window_size = TX_WINDOW
            transport.srtp = pylibsrtp.Session(policy)
        except pylibsrtp.Error as exc:
            raise EngineError(f"set_srtp failed: {exc}") from exc

    def set_srtp_rx(self, tid: int, profile: int, key: bytes) -> None:
        transport = self._transport(tid, "set_srtp_rx")
        try:
            policy = pylibsrtp.Policy(key=bytes(key), ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                      srtp_profile=profile)
            policy.window_size = 1024
            transport.rx = pylibsrtp.Session(policy)
        except pylibsrtp.Error as exc:
            raise EngineError(f"set_srtp_rx failed: {exc}") from exc

    def rx_datagram(self, data: bytes, addr: tuple[str, int]) -> tuple[int, int, bytes]:
        """One datagram from addr: (transport, RX_RTP | RX_RTCP, plaintext), (-1, RX_SLOW, data) for the slow path,
        or (-1, RX_DROPPED, b"") when it fails authentication (counted). The native engine's cc_rx_datagram."""
        if len(data) < 12 or not 128 <= data[0] <= 191:
            return -1, RX_SLOW, data
        key = _addr_key(addr)
        tid = next((i for i, t in enumerate(self._transports)
                    if t is not None and t.addr is not None and _addr_key(t.addr) == key), -1)
        transport = self._transports[tid] if tid >= 0 else None
        if transport is None or transport.rx is None:
            return -1, RX_SLOW, data
        rtcp = 192 <= data[1] <= 223
        try:
            plain = transport.rx.unprotect_rtcp(data) if rtcp else transport.rx.unprotect(data)
        except pylibsrtp.Error:
            transport.rx_auth_failed += 1
            self._rx["auth_failed"] += 1
            return -1, RX_DROPPED, b""
        transport.packets_in += 1
        transport.bytes_in += len(plain)
        self._rx["packets"] += 1
        self._rx["bytes"] += len(plain)
        if rtcp and transport.feedback:
            read, lost, reported = self.rx_feedback(tid, plain)
            if read == 1:
                self._rx["consumed"] += 1
                return tid, RX_CONSUMED, b""
            if read == 2:
                return tid, RX_LOSS, _LOSS.pack(lost, reported)
        return tid, RX_RTCP if rtcp else RX_RTP, plain

    def recv(self, fd: int) -> list[tuple[int, int, bytes, Any, float]]:
        """What the native engine's recvmmsg batch gives: up to RX_BATCH datagrams read from fd, sorted as
        rx_datagram sorts them (dropped ones left out; the slow path's with their source address; routed RTP
        pushed, with push's flags: rx_route), each with its
        arrival on time.monotonic()'s clock: the kernel's receive stamp when the socket has it on
        (`stamp_arrivals`), else the time of the read."""
        out: list[tuple[int, int, bytes, tuple[str, int] | None, float]] = []
        with socket.socket(fileno=os.dup(fd)) as sock:  # a duplicate per call: the fd may be reused later
            sock.setblocking(False)
            batch = []
            for _ in range(RX_BATCH):
                try:
                    batch.append(sock.recvmsg(RX_MTU + 1, socket.CMSG_SPACE(_TIMESPEC.size)))
                except (BlockingIOError, InterruptedError):
                    break
        now = time.monotonic()
        offset = now - time.time()  # the kernel stamps CLOCK_REALTIME
        for data, ancillary, flags, addr in batch:
            if flags & socket.MSG_TRUNC or len(data) > RX_MTU:
                self._rx["truncated"] += 1
                continue
            tid, kind, plain = self.rx_datagram(data, (addr[0], addr[1]))
            if kind in (RX_DROPPED, RX_CONSUMED):
                continue
            if kind == RX_SLOW:
                self._rx["slow"] += 1
            arrival = now
            for level, ctype, payload in ancillary:
                if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    arrival = min(now, sec + nsec * 1e-9 + offset)
            extra: Any = (addr[0], addr[1]) if kind == RX_SLOW else None
            if kind == RX_RTP:
                kind, flags = self.rx_route(tid, plain, arrival)
                extra = flags if kind == RX_PUSHED else None
            out.append((tid, kind, plain, extra, arrival))
        return out

    def route(self, tid: int, ssrc: int, sid: int) -> None:
        """A publisher's SSRC on this transport -> a stream (sid -1: unroute): its RTP that recv unprotects is
        pushed there at once, and comes up as (tid, RX_PUSHED, plaintext, push's flags, arrival) for the slow path's
        bookkeeping, instead of waiting for Python to push it. A removed stream loses its routes."""
        transport = self._transport(tid, "route")
        if sid < 0:
            transport.routes.pop(ssrc, None)
            return
        self._stream(sid, "route")
        if ssrc not in transport.routes and len(transport.routes) >= ROUTES:
            raise EngineError(f"route: at most {ROUTES} routes per transport")
        transport.routes[ssrc] = sid

    def rx_route(self, tid: int, plain: bytes, arrival: float) -> tuple[int, int]:
        """(RX_PUSHED, push's flags) when the plaintext's SSRC is routed on the transport, else (RX_RTP, 0)."""
        transport = self._transports[tid] if 0 <= tid < len(self._transports) else None
        if transport is None or not transport.routes or len(plain) < 12:
            return RX_RTP, 0
        sid = transport.routes.get(int.from_bytes(plain[8:12], "big"))
        if sid is None:
            return RX_RTP, 0
        flags = self.push(sid, plain, arrival)
        transport.rx_pushed += 1
        self._rx["pushed"] += 1
        return RX_PUSHED, flags

    def rx_stats(self, tid: int = -1) -> dict[str, int]:
        if tid < 0:
            return dict(self._rx)
        transport = self._transport(tid, "rx_stats")
        return {"packets": transport.packets_in, "bytes": transport.bytes_in, "auth_failed": transport.rx_auth_failed,
                "rtcp_consumed": transport.rtcp_consumed, "loss_windows": transport.loss_windows,
                "pushed": transport.rx_pushed}

    def set_path(self, tid: int, fd: int, host: str, port: int) -> None:
        transport = self._transport(tid, "set_path")
        if not 0 <= port <= 65535:
            raise ValueError(f"bad port {port}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.inet_pton(family, host)  # raises for what is not an address
        if transport.sock is not None:
            transport.sock.close()
        transport.sock = socket.socket(family, socket.SOCK_DGRAM, fileno=os.dup(fd))
        transport.sock.setblocking(False)
        transport.addr = (host, port)

    def clear_path(self, tid: int) -> None:
        transport = self._transport(tid, "clear_path")
        if transport.sock is not None:
            transport.sock.close()
        transport.sock = transport.addr = None

    def set_twcc(self, tid: int, ext_id: int) -> None:
        if not 0 <= ext_id <= 14:
            raise EngineError("set_twcc failed")
        transport = self._transport(tid, "set_twcc")
        if transport.twcc_id != ext_id:  # a new numbering: a new reader
            transport.twcc_budget = TWCC_SLACK
        transport.twcc_id = ext_id

    def set_loss(self, tid: int, permille: int, seed: int, retransmissions: bool = False) -> None:
        """Test hook: drop `permille` of every thousand packets leaving through this transport (after SRTP and
        TWCC stamping, as a lossy network would), pseudo-randomly from `seed`. Retransmissions go unless
        `retransmissions`: a receiver such as aiortc asks again only when it sees a new gap, so one lost
        retransmission can be a freeze of the test's making."""
        transport = self._transport(tid, "set_loss")
        if not 0 <= permille <= 1000:
            raise EngineError("set_loss failed")
        transport.loss_permille = permille
        transport.loss_state = (seed & 0xFFFFFFFF) or 1
        transport.loss_retransmissions = bool(retransmissions)

    def twcc_feedback(self, tid: int, fci: bytes) -> tuple[int, int] | None:
        """A subscriber's transport-cc feedback: (reported, lost) among the numbers sent and not yet reported, or
        None (counted in twcc_refused) when it is malformed, declares more statuses than the numbers sent since its
        base (or than TWCC_SENT), or more than the budget (two statuses per number written, TWCC_SLACK to start)."""
        from sfu.bwe import parse_twcc  # the parser of sfu/bwe.py is the specification of the wire format

        transport = self._transport(tid, "twcc_feedback")
        if len(fci) >= 4:
            base, count = struct.unpack_from("!HH", fci, 0)
            span = (transport.twcc_next - base) & 0xFFFF
            if count <= span <= TWCC_SENT and count <= transport.twcc_budget:
                try:
                    statuses = parse_twcc(bytes(fci), max_count=count)
                except (ValueError, struct.error, IndexError):
                    statuses = None
                if statuses is not None:
                    transport.twcc_budget -= count
                    reported = lost = 0
                    for seq, arrival in statuses:
                        if seq in transport.twcc_pending:
                            transport.twcc_pending.discard(seq)
                            reported += 1
                            lost += arrival is None
                    if reported:
                        transport.twcc_feedbacks += 1
                        transport.twcc_reported += reported
                        transport.twcc_lost += lost
                        transport.win_reported += reported
                        transport.win_lost += lost
                    return reported, lost
        transport.twcc_refused += 1
        return None

    def twcc_window(self, tid: int) -> tuple[int, int] | None:
        """(lost, reported) once LOSS_WINDOW numbers were reported since the last window (a new one begins), else
        None. twcc_feedback fills it, whichever path read the feedback."""
        transport = self._transport(tid, "twcc_window")
        if transport.win_reported < LOSS_WINDOW:
            return None
        lost, reported = transport.win_lost, transport.win_reported
        while reported > 0xFFFF:  # it travels as 16-bit numbers (RX_LOSS): keep the ratio
            lost, reported = lost >> 1, reported >> 1
        transport.win_lost = transport.win_reported = 0
        return lost, reported

    def set_feedback(self, tid: int, on: bool) -> None:
        """Native feedback: rx_datagram reads this transport's RTCP with rx_feedback."""
        self._transport(tid, "set_feedback").feedback = bool(on)

    def rx_feedback(self, tid: int, data: bytes) -> tuple[int, int, int]:
        """A subscriber's unprotected RTCP compound under native feedback: (0, 0, 0) when Python must read it (it
        holds anything but receiver reports, SDES and one transport-cc feedback; it is malformed by parse_rtcp's
        framing; a report block shows more than LOSS_QUIET; transport-cc on a transport without numbering), and
        nothing was applied. Else its transport-cc feedback is applied (twcc_feedback, twcc_window) and (1, 0, 0)
        is returned, or (2, lost, reported) when that completed a loss window above LOSS_QUIET: the subscriber's
        estimate must hear of it. Receiver reports at or below LOSS_QUIET change nothing and are left."""
        transport = self._transport(tid, "rx_feedback")
        n = len(data)
        if not transport.feedback or n < 4 or n > MAX_PACKET:
            return 0, 0, 0
        pos, twcc = 0, None
        while pos < n:
            if pos + 4 > n:
                return 0, 0, 0
            end = pos + 4 + 4 * (data[pos + 2] << 8 | data[pos + 3])
            if data[pos] >> 6 != 2 or end > n:
                return 0, 0, 0
            count, pt = data[pos] & 0x1F, data[pos + 1]
            if pt == 201:
                if pos + 8 + 24 * count > end:
                    return 0, 0, 0
                if any(data[pos + 8 + 24 * i + 4] > LOSS_QUIET for i in range(count)):
                    return 0, 0, 0
            elif pt == 205 and count == 15:
                if not transport.twcc_id or pos + 12 > end or twcc is not None:
                    return 0, 0, 0
                twcc = data[pos + 12 : end]
            elif pt != 202:
                return 0, 0, 0
            pos = end
        if twcc is not None:
            self.twcc_feedback(tid, twcc)
            window = self.twcc_window(tid)
            if window is not None and window[0] * 256 // window[1] > LOSS_QUIET:
                transport.loss_windows += 1
                return 2, window[0], window[1]
        transport.rtcp_consumed += 1
        return 1, 0, 0

    def twcc_take(self, tid: int, seq: int) -> bool:
        """Whether this transport-wide number was sent and not reported yet (and now it is)."""
        pending = self._transport(tid, "twcc_take").twcc_pending
        seq &= 0xFFFF
        if seq in pending:
            pending.discard(seq)
            return True
        return False

    def _protect(self, tid: int, data: bytes, rtcp: bool) -> bytes:
        transport = self._transport(tid, "protect")
        if len(data) > MAX_PACKET:
            raise ValueError("packet too long")
        if transport.srtp is None:
            raise EngineError("protect failed (no key)")
        try:
            return transport.srtp.protect_rtcp(data) if rtcp else transport.srtp.protect(data)
        except pylibsrtp.Error as exc:
            raise EngineError(f"protect failed: {exc}") from exc

    def send_rtcp(self, tid: int, data: bytes) -> bool:
        """RTCP built in Python, protected with the transport's context and sent on its socket: True if it left,
        False when the transport has no key or path yet (the caller sends it another way)."""
        transport = self._transport(tid, "send_rtcp")
        if not 8 <= len(data) <= MAX_PACKET - 64:
            raise EngineError("send_rtcp failed (-1)")
        if transport.srtp is None or transport.sock is None:
            return False
        self._emit(tid, transport, bytes(data), "rtcp")
        return True

    def protect_rtp(self, tid: int, data: bytes) -> bytes:
        return self._protect(tid, bytes(data), False)

    def protect_rtcp(self, tid: int, data: bytes) -> bytes:
        return self._protect(tid, bytes(data), True)

    # ---- slots and consumers ------------------------------------------------------------------------------

    def add_slot(self, tid: int, clock_rate: int) -> int:
        self._transport(tid, "add_slot")
        if clock_rate <= 0:
            raise EngineError("add_slot failed")
        slot_id = self._free_id(self._slots)
        self._slots[slot_id] = _Slot(tid, clock_rate, ts=TimestampRewriter(clock_rate))
        return slot_id

    def _unlink(self, slot_id: int, slot: _Slot) -> None:
        for sid in slot.streams:
            stream = self._streams[sid] if 0 <= sid < len(self._streams) else None
            if stream is not None and slot_id in stream.slots:
                stream.slots.remove(slot_id)
        slot.streams = []
        slot.attached = False

    def remove_slot(self, slot_id: int) -> None:
        self._unlink(slot_id, self._slot(slot_id, "remove_slot"))
        self._slots[slot_id] = None

    def bind_slot(self, slot_id: int, ssrc: int, pt: int, rtx_ssrc: int | None, rtx_pt: int | None) -> None:
        slot = self._slot(slot_id, "bind_slot")
        has_rtx = rtx_ssrc is not None and rtx_pt is not None
        if not 0 <= pt <= 127 or (has_rtx and not 0 <= rtx_pt <= 127):  # type: ignore[operator]
            raise EngineError("bind_slot failed")
        slot.ssrc, slot.pt = ssrc & 0xFFFFFFFF, pt
        slot.rtx_ssrc, slot.rtx_pt = (rtx_ssrc, rtx_pt) if has_rtx else (None, None)
        slot.bound = True

    def unbind_slot(self, slot_id: int) -> None:
        """Renegotiating: nothing goes out on the slot until it is bound again."""
        self._slot(slot_id, "unbind_slot").bound = False

    def attach(self, slot_id: int, streams: list[int], video: bool, paused: bool) -> None:
        """A consumer: the producer's streams (lowest layer first) onto this slot."""
        if not 1 <= len(streams) <= MAX_LAYERS:
            raise ValueError(f"1 to {MAX_LAYERS} streams")
        slot = self._slot(slot_id, "attach")
        for sid in streams:
            self._stream(sid, "attach")
        self._unlink(slot_id, slot)
        for sid in streams:
            self._streams[sid].slots.append(slot_id)  # type: ignore[union-attr]
        slot.streams = list(streams)
        slot.attached, slot.video, slot.paused = True, bool(video), bool(paused)
        slot.current = streams[0] if len(streams) == 1 else -1
        slot.target = streams[0]
        slot.started, slot.switch = False, True
        slot.retransmitted = slot.switches = slot.nacks_refused = 0
        slot.drops = _drops()

    def detach(self, slot_id: int) -> None:
        slot = self._slot(slot_id, "detach")
        self._unlink(slot_id, slot)
        slot.current = slot.target = -1

    def set_target(self, slot_id: int, sid: int) -> None:
        self._slot(slot_id, "set_target").target = sid

    def set_paused(self, slot_id: int, paused: bool) -> None:
        self._slot(slot_id, "set_paused").paused = bool(paused)

    def restart(self, slot_id: int) -> None:
        self._slot(slot_id, "restart").started = False

    def sender_reports(self, sid: int, ntp: int, rtp_timestamp: int) -> int:
        """The publisher's sender report for a stream, translated for every slot that carries the stream now and
        has started (its SSRC, the same NTP time, the RTP timestamp in its timeline, its packet and octet counts),
        sent through each slot's transport that has a key and a path. How many were sent."""
        stream = self._stream(sid, "sender_reports")
        ntp, rtp_timestamp = ntp & (1 << 64) - 1, rtp_timestamp & 0xFFFFFFFF  # as the native binding's K and I
        sent = 0
        for slot_id in stream.slots:
            slot = self._slots[slot_id]
            if slot is None or slot.current != sid or not slot.started or not slot.bound or slot.ts is None:
                continue
            out_ts = slot.ts.peek(rtp_timestamp)
            transport = self._transports[slot.transport]
            if out_ts is None or transport is None or transport.srtp is None or transport.sock is None:
                continue
            report = struct.pack("!BBHIQIII", 0x80, 200, 6, slot.ssrc, ntp, out_ts, slot.packets_sent & 0xFFFFFFFF,
                                 slot.octets_sent & 0xFFFFFFFF)
            self._emit(slot.transport, transport, report, "rtcp")
            sent += 1
        return sent

    def ts_peek(self, slot_id: int, ts: int) -> int | None:
        return self._slot(slot_id, "ts_peek").ts.peek(ts)  # type: ignore[union-attr]

    # ---- the per-packet path --------------------------------------------------------------------------------

    def push(self, sid: int, data: bytes, arrival: float) -> int:
        """One incoming packet of a stream: cache it, find keyframes, and send every consumer its copy."""
        stream = self._stream(sid, "push")
        if not isinstance(data, bytes):
            raise TypeError("push: data must be bytes")
        try:
            if len(data) > MAX_PACKET:
                raise ValueError("too long")
            header = parse_rtp(data)
        except ValueError:
            self._drop(stream, "malformed")
            return 0
        if header.payload_type != stream.pt:
            self._drop(stream, "wrong_payload_type")
            return 0
        start, end = header.payload_offset, header.payload_end
        if end <= start:
            self._drop(stream, "padding")
            return 0
        vp8 = None
        keyframe = False
        if stream.codec == CODEC_VP8:
            try:
                vp8 = parse_vp8_descriptor(data, start, end)
            except ValueError:
                self._drop(stream, "malformed")
                return 0
            keyframe = vp8.is_keyframe
        elif stream.codec == CODEC_H264:
            keyframe = h264_has_sps(data, start, end)
        packet = _Packet(data, header.sequence_number, header.timestamp, header.marker, data[start:end], arrival,
                         vp8, keyframe)
        stream.cache[packet.seq & (CACHE - 1)] = packet
        stream.packets_in += 1
        stream.bytes_in += len(data)
        if keyframe:
            stream.keyframes += 1
        if stream.video:
            self._gop_add(stream, packet)
        flags = F_ACCEPTED | (F_KEYFRAME if keyframe else 0)
        if stream.blocked:
            self._drop(stream, "blocked")
            return flags
        before = len(self._events)
        for slot_id in list(stream.slots):
            self._forward(slot_id, self._slots[slot_id], packet, sid)  # type: ignore[arg-type]
        if len(self._events) > before:
            flags |= F_EVENTS
        return flags

    def _drop(self, owner: _Stream | _Slot | _Transport, reason: str) -> None:
        owner.drops[reason] += 1
        self._totals["drops"][reason] += 1

    @staticmethod
    def _gop_add(stream: _Stream, packet: _Packet) -> None:
        """The last keyframe and every packet since, bounded. A joiner is sent the whole group and then the live
        stream. When the group outgrows the bound, only the keyframe's own packets are kept: the joiner then shows
        that picture at once and waits for the next keyframe (delta frames would not decode without the rest)."""
        if packet.keyframe and packet.ts != stream.kts:
            stream.gop = [packet]
            stream.kts = packet.ts
            stream.gop_complete = True
            return
        if stream.kts is None:
            return
        if stream.gop_complete:
            if len(stream.gop) < GOP_MAX:
                stream.gop.append(packet)
            else:
                stream.gop = [p for p in stream.gop if p.ts == stream.kts]
                stream.gop_complete = False
        elif packet.ts == stream.kts and len(stream.gop) < GOP_MAX:
            stream.gop.append(packet)

    def _become(self, slot_id: int, slot: _Slot, sid: int) -> None:
        if sid == slot.current:
            return
        previous = slot.current
        slot.current = sid
        slot.switch = True
        if previous >= 0:
            slot.switches += 1
            self._totals["switches"] += 1
        if len(slot.streams) > 1:
            self._events.append((slot_id, sid))

    def _forward(self, slot_id: int, slot: _Slot, packet: _Packet, sid: int) -> None:
        if slot.paused:
            self._drop(slot, "paused")
            return
        if not slot.bound:
            self._drop(slot, "unbound")
            return
        if sid != slot.current:
            if sid != slot.target or not packet.keyframe:
                self._drop(slot, "other_layer")
                return
            self._become(slot_id, slot, sid)
            slot.started = False
        if not slot.started and slot.video and not packet.keyframe:
            self._drop(slot, "before_keyframe")
            return
        if not slot.started:
            # Starts only once the subscriber can read it: a packet refused for want of SRTP keys (DTLS not done)
            # must not count as the start, or the start at connect would skip the cached pictures (`start`).
            transport = self._transports[slot.transport] if 0 <= slot.transport < len(self._transports) else None
            if transport is not None and transport.srtp is None:
                self._drop(transport, "srtp_error")
                return
        self._send(slot, packet, sid)

    def _send(self, slot: _Slot, packet: _Packet, sid: int) -> None:
        switch = slot.switch
        seq = slot.seq.rewrite(packet.seq, switch)
        if seq is None:
            self._drop(slot, "stale")
            return
        ts = slot.ts.rewrite(packet.ts, packet.arrival, switch)  # type: ignore[union-attr]
        slot.switch = False
        slot.started = True
        transport = self._transports[slot.transport]
        marker = 0x80 if packet.marker else 0
        if transport is not None and transport.twcc_id:
            wide = transport.twcc_next
            transport.twcc_next = (wide + 1) & 0xFFFF
            transport.twcc_stamped += 1
            transport.twcc_pending.discard((wide - 8192) & 0xFFFF)
            transport.twcc_pending.add(wide)
            transport.twcc_budget = min(transport.twcc_budget + 2, 2 * TWCC_SENT + TWCC_SLACK)
            head = _HEADER.pack(0x90, slot.pt | marker, seq, ts, slot.ssrc)
            head += _TWCC_EXT.pack(0xBEDE, 1, transport.twcc_id << 4 | 1, wide, 0)
        else:
            head = _HEADER.pack(0x80, slot.pt | marker, seq, ts, slot.ssrc)
        picture_id = tl0 = None
        payload = packet.payload
        if packet.vp8 is not None:
            picture_id, tl0 = slot.vp8.rewrite(packet.vp8, switch)  # type: ignore[arg-type]
            buf = bytearray(payload)
            rewrite_vp8_descriptor_in_place(buf, 0, packet.vp8, picture_id, tl0)  # type: ignore[arg-type]
            payload = bytes(buf)
        slot.history[seq & (HISTORY - 1)] = (seq, sid, packet.seq, ts, picture_id, tl0)
        slot.last_seq = seq
        slot.packets_sent += 1
        slot.octets_sent += len(packet.payload)
        slot.bytes_out += len(head) + len(payload)
        if transport is not None:
            self._emit(slot.transport, transport, head + payload)

    def _emit(self, tid: int, transport: _Transport, plain: bytes, kind: str = "media") -> None:
        """SRTP-protect with the transport's context and send (the native engine batches with sendmmsg)."""
        if transport.srtp is None:
            self._drop(transport, "srtp_error")
            if self._capture is not None:
                self._capture.append((tid, plain, None))
            return
        try:
            cipher = transport.srtp.protect_rtcp(plain) if kind == "rtcp" else transport.srtp.protect(plain)
        except pylibsrtp.Error:
            self._drop(transport, "srtp_error")
            if self._capture is not None:
                self._capture.append((tid, plain, None))
            return
        if self._capture is not None:
            self._capture.append((tid, plain, cipher))
        if (kind == "media" or (kind == "retransmission" and transport.loss_retransmissions)) and transport.lose():
            self._drop(transport, "simulated_loss")
            return
        if transport.sock is None:
            self._drop(transport, "no_path")
            return
        try:
            transport.sock.sendto(cipher, transport.addr)  # type: ignore[arg-type]
        except OSError:
            self._drop(transport, "send_error")
            return
        transport.packets_out += 1
        transport.bytes_out += len(cipher)
        if kind != "rtcp":
            self._totals["packets_out"] += 1
            self._totals["bytes_out"] += len(cipher)

    def start(self, slot_id: int) -> bool:
        """A consumer's first packets: the cached group of pictures, or its keyframe alone when the group is longer
        than REPLAY_MAX. True when a keyframe must be asked for."""
        slot = self._slot(slot_id, "start")
        if not slot.attached:
            raise EngineError("start failed")
        if not slot.bound or slot.paused or slot.started:
            return False
        sid = slot.target if slot.target >= 0 else slot.streams[0]
        stream = self._streams[sid] if 0 <= sid < len(self._streams) else None
        if stream is None:
            return False
        if not stream.video:
            slot.current = sid
            return False
        packets, complete = list(stream.gop), stream.gop_complete
        if complete and len(packets) > REPLAY_MAX:
            packets, complete = [p for p in packets if p.ts == stream.kts], False
        if packets:
            self._become(slot_id, slot, sid)
            for packet in packets:
                self._send(slot, packet, sid)
            if not complete:
                slot.started = False
                slot.switch = True
        return not packets or not complete

    def retransmit(self, slot_id: int, seqs: list[int]) -> list[tuple[int, int]]:
        """Answer a NACK from the caches, repeating what was sent (numbers and VP8 ids); returns the
        (stream, sequence) pairs the caches lack, for the slow path to ask the publisher."""
        slot = self._slot(slot_id, "retransmit")
        missing: list[tuple[int, int]] = []
        for out_seq in seqs:
            out_seq &= 0xFFFF
            entry = slot.history[out_seq & (HISTORY - 1)]
            if entry is None or entry[0] != out_seq:
                continue
            rtx = slot.rtx_ssrc is not None and slot.rtx_pt is not None
            if not rtx and (slot.last_seq - out_seq) & 0xFFFF >= TX_WINDOW:
                continue  # repeating an index older than the sender's replay window: libsrtp would refuse it
            if slot.retransmitted >= slot.packets_sent // 2 + RTX_BURST:  # nobody makes us resend forever
                slot.nacks_refused += 1
                break
            _, sid, in_seq, out_ts, picture_id, tl0 = entry
            stream = self._streams[sid] if 0 <= sid < len(self._streams) else None
            if stream is None:
                continue
            packet = stream.cache[in_seq & (CACHE - 1)]
            if packet is None or packet.seq != in_seq:
                missing.append((sid, in_seq))
                continue
            marker = 0x80 if packet.marker else 0
            payload = packet.payload
            if packet.vp8 is not None:
                buf = bytearray(payload)
                rewrite_vp8_descriptor_in_place(buf, 0, packet.vp8, picture_id, tl0)  # type: ignore[arg-type]
                payload = bytes(buf)
            if rtx:
                slot.rtx_seq = (slot.rtx_seq + 1) & 0xFFFF
                out = _HEADER.pack(0x80, slot.rtx_pt | marker, slot.rtx_seq, out_ts, slot.rtx_ssrc)
                out += struct.pack("!H", out_seq) + payload
            else:
                out = _HEADER.pack(0x80, slot.pt | marker, out_seq, out_ts, slot.ssrc) + payload
            slot.retransmitted += 1
            self._totals["retransmitted"] += 1
            transport = self._transports[slot.transport]
            if transport is not None:
                self._emit(slot.transport, transport, out, "retransmission")
        return missing

    def cached(self, sid: int, seq: int) -> bool:
        packet = self._stream(sid, "cached").cache[seq & (CACHE - 1)]
        return packet is not None and packet.seq == seq & 0xFFFF

    # ---- reading --------------------------------------------------------------------------------------------

    def events(self) -> list[tuple[int, int]]:
        """(slot, stream) for each layer switch since the last call (a consumer now carries that stream)."""
        events, self._events = self._events, []
        return events

    def slot_info(self, slot_id: int) -> dict[str, object]:
        slot = self._slot(slot_id, "slot_info")
        return {"current": slot.current, "target": slot.target, "last_seq": slot.last_seq, "started": slot.started,
                "paused": slot.paused,
                "packets_sent": slot.packets_sent, "octets_sent": slot.octets_sent, "bytes_out": slot.bytes_out,
                "retransmitted": slot.retransmitted, "switches": slot.switches, "nacks_refused": slot.nacks_refused,
                "drops": {k: v for k, v in slot.drops.items() if v}}

    def current(self, slot_id: int) -> int:
        """The stream the slot carries now (-1: none); slot_info's "current", without building the dict."""
        return self._slot(slot_id, "current").current

    def bytes_out(self, slot_id: int) -> int:
        """slot_info's "bytes_out" without building the dict: read for every transport-cc feedback (about ten a
        second per subscriber) to know the rate sent."""
        return self._slot(slot_id, "bytes_out").bytes_out

    def stream_stats(self, sid: int) -> dict[str, object]:
        stream = self._stream(sid, "stream_stats")
        return {"packets_in": stream.packets_in, "bytes_in": stream.bytes_in, "keyframes": stream.keyframes,
                "consumers": len(stream.slots), "drops": {k: v for k, v in stream.drops.items() if v}}

    def transport_stats(self, tid: int) -> dict[str, object]:
        transport = self._transport(tid, "transport_stats")
        return {"packets_out": transport.packets_out, "bytes_out": transport.bytes_out,
                "twcc_next": transport.twcc_next, "twcc_stamped": transport.twcc_stamped,
                "twcc_budget": transport.twcc_budget, "twcc_feedbacks": transport.twcc_feedbacks,
                "twcc_refused": transport.twcc_refused, "twcc_reported": transport.twcc_reported,
                "twcc_lost": transport.twcc_lost, "drops": {k: v for k, v in transport.drops.items() if v}}

    def totals(self) -> dict[str, Any]:
        """Process-wide counters since the engine was made (never reset: for metrics)."""
        return {**self._totals, "drops": {k: v for k, v in self._totals["drops"].items() if v}}

    def set_capture(self, capture: list | None) -> None:
        """Test hook: append (transport, plaintext, ciphertext or None) for every packet the engine sends."""
        self._capture = capture
