"""One UDP port for all media: the SFU process's ICE-lite WebRTC server (issue 14).

Like mediasoup's WebRtcServer and pion's UDP mux, every participant's media goes through one socket per listening
address (`CLASSCAST_RTC_PORT`, 7882 unless busy, then the next ports), instead of one aioice socket per connection.
The server is ICE-lite (RFC 8445 section 2.5): it never sends a connectivity check, it answers the client's. A remote
address belongs to a connection only once a binding request from it carried that connection's ufrag in USERNAME,
a MESSAGE-INTEGRITY made with its password and a valid FINGERPRINT; from then on DTLS and SRTP datagrams from that
address go to that connection. Anything else is dropped and counted by reason (`RtcServer.drops`), never logged
per packet, and nothing about it is kept: the tables grow only with authenticated addresses, a few per connection.

Each aiortc transport keeps its DTLS and SRTP code, but its aioice `Connection` is replaced by a `MuxConnection`
(sfu/peer.py does the replacing), which offers aiortc the same small surface: gather, connect, send, recv,
get_event, close. Consent freshness (RFC 7675) is the client's job in ICE-lite; the server closes a connection whose
client has sent no valid binding request for `consent_timeout` seconds (30), which aiortc reports as `failed`.
One DTLS certificate serves the whole process (`RtcServer.certificate`, renewed daily).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aioice import ConnectionClosed
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCCertificate
from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from OpenSSL import SSL

from sfu import binding
from sfu.engine import ENGINE_ERRORS, stamp_arrivals
from sfu.engine.reference import RX_PUSHED
from sfu.ice import IceConfig

log = logging.getLogger("classcast.sfu.rtcserver")

LATE_ANSWER = 0.5  # s between a binding request's arrival and its answer past which it counts as late
CONSENT_TIMEOUT = 30.0  # RFC 7675: consent expires 30 s after the last check answered
CONNECT_TIMEOUT = 30.0  # a connection nobody nominates within this long fails (aioice's own check-list budget)
CERTIFICATE_LIFETIME = 24 * 3600.0  # browsers do not check DTLS certificates' dates, but aiortc's expire in 30 days
MAX_QUEUE = 1024  # datagrams waiting for aiortc's DTLS reader per connection; past that they are dropped
MAX_ADDRESSES = 8  # authenticated remote addresses per connection (candidate pairs of one client)
MAX_REMOTE_CANDIDATES = 64  # kept for getRemoteCandidates only: the server never contacts them
PORT_TRIES = 64  # CLASSCAST_RTC_PORT busy: the next ports, for further SFU processes on the machine
CLOSE_LINGER = 5.0  # seconds the socket stays open after its last connection (joins come in waves)
# The reader thread wakes the event loop at once for what wants an answer (STUN, DTLS, RTCP), but holds a queue of
# already-forwarded publisher packets (their bookkeeping: statistics, TWCC toward the publisher, NACK detection)
# up to this long, so one wake-up carries several: with the reader and the loop on one core (a worker per core),
# a wake-up per packet cost a context switch each, 13% of the CPU per forwarded packet at 200 subscribers.
READER_HOLD_US = 5000
SERVER_BUFFER = 16 * 1024 * 1024  # one socket carries every participant: 4x the per-connection socket's buffers

Address = tuple[str, int]


def _buffers(sock: socket.socket | None) -> None:
    """Large kernel buffers (forced past rmem_max as root): a burst while the loop is busy is queued, not lost."""
    if sock is None:
        return
    for forced, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                          (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced if forced is not None else plain, SERVER_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SERVER_BUFFER)


class ServerCertificate(RTCCertificate):
    """The process's certificate, which also shares one OpenSSL context between all connections (aiortc makes a
    context per DTLS transport, each with its own copy of the certificate and key) and lets idle connections release
    their read/write buffers (SSL_MODE_RELEASE_BUFFERS): after the handshake DTLS is nearly silent."""

    _contexts: dict[tuple[bytes, ...], SSL.Context]

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        """Computed once: every offer and answer carries them (three digests of the certificate each otherwise)."""
        fingerprints = self.__dict__.get("_fingerprints")
        if fingerprints is None:
            fingerprints = self.__dict__["_fingerprints"] = super().getFingerprints()
        return list(fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        contexts = self.__dict__.setdefault("_contexts", {})
        key = tuple(p.openssl_profile for p in srtp_profiles)
        context = contexts.get(key)
        if context is None:
            context = contexts[key] = super()._create_ssl_context(srtp_profiles)
            context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        return context


class _Listener(asyncio.DatagramProtocol):
    """One listening address's socket; every datagram goes to the server's demultiplexer."""

    def __init__(self, server: RtcServer, host: str) -> None:
        self.server = server
        self.host = host
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.received(data, (addr[0], addr[1]), self)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away, and the like: per datagram, so counted, not logged.
        self.server.drop("socket_error")

    def fileno(self) -> int | None:
        if self.transport is None or self.transport.is_closing():
            return None
        sock = self.transport.get_extra_info("socket")
        return sock.fileno() if sock is not None else None


class _SocketTransport:
    """The little of asyncio's DatagramTransport the server uses, over a socket the engine reads (native receive)."""

    def __init__(self, sock: socket.socket, server: RtcServer) -> None:
        self.sock = sock
        self.server = server

    def sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:  # a full buffer or an unreachable client: STUN and DTLS are retransmitted by their peer
            self.server.drop("send_error")

    def is_closing(self) -> bool:
        return self.sock.fileno() < 0

    def get_extra_info(self, name: str) -> Any:
        return {"socket": self.sock, "sockname": self.sock.getsockname()}.get(name)

    def close(self) -> None:
        self.sock.close()


class RtcServer:
    """The process's single media port on each listening address, and the connections demultiplexed on it.

    With a media `engine`, the socket is read by the engine (recvmmsg, then libsrtp unprotect of SRTP/SRTCP from a
    connection's selected address, in C). The native engine reads it on a thread of its own (`reader_start`): it
    applies subscribers' quiet feedback and forwards routed publisher RTP there, without the GIL, and queues only
    what Python must see; the loop is woken through one eventfd when that queue goes from empty to not empty, not
    once per datagram. The Python engine (or CLASSCAST_MEDIA_READER=loop) reads when the loop says the socket is
    readable (`engine.recv`). Either way the packets go to the connection's receiver (`register_receiver`) with no
    asyncio datagram, queue or task in between; STUN, DTLS and anything from an unknown address come back to
    `received`, the slow path. Without an engine, asyncio reads."""

    def __init__(self, config: IceConfig, engine: Any = None) -> None:
        self.config = config
        self.engine = engine if engine is not None and hasattr(engine, "recv") else None
        self._receivers: dict[int, Callable[..., None]] = {}
        self._reader: int | None = None  # the engine's reader thread's eventfd, while it reads our sockets
        self._by_fd: dict[int, _Listener] = {}
        self.loop = weakref.ref(_running_loop())
        self.port = 0
        self.consent_timeout = CONSENT_TIMEOUT
        self.connect_timeout = CONNECT_TIMEOUT
        self.drops: dict[str, int] = {}
        self.counters = {"binding_requests": 0, "nominations": 0, "datagrams_in": 0, "connections_made": 0,
                         "binding_answered_late": 0}
        self._late_max, self._late_logged = 0.0, 0.0  # worst answer delay since the last log line, when logged
        self._listeners: list[_Listener] = []
        self._by_ufrag: dict[str, MuxConnection] = {}
        self._by_addr: dict[Address, MuxConnection] = {}
        self._start_lock = asyncio.Lock()
        self._close_handle: asyncio.TimerHandle | None = None
        self._certificate: ServerCertificate | None = None
        self._certificate_made = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def certificate(self) -> ServerCertificate:
        """One DTLS certificate per process: its fingerprint is in every answer and offer (renewed daily)."""
        now = time.monotonic()
        if self._certificate is None or now - self._certificate_made > CERTIFICATE_LIFETIME:
            self._certificate = ServerCertificate.generateCertificate()
            self._certificate_made = now
        return self._certificate

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    async def start(self) -> None:
        """Binds the port on every CLASSCAST_ICE_HOSTS address (the same port on each); idempotent."""
        async with self._start_lock:
            if self._listeners:
                return
            loop = asyncio.get_running_loop()
            first = self.config.rtc_port
            tries = 1 if first == 0 else PORT_TRIES
            for attempt in range(tries):
                port = first + attempt if first else 0
                if port > 65535:
                    break
                listeners = await self._bind_all(loop, port)
                if listeners:
                    self._listeners = listeners
                    self.port = listeners[0].transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
                    log.info("media on UDP port %d (%s)%s", self.port, ", ".join(self.config.hosts),
                             f", announced as {self.config.announced}" if self.config.announced else "")
                    return
            raise OSError(f"no free UDP port from {first} to {first + tries - 1} on {', '.join(self.config.hosts)}")

    async def _bind_all(self, loop: asyncio.AbstractEventLoop, port: int) -> list[_Listener]:
        listeners: list[_Listener] = []
        for host in self.config.hosts:
            try:
                if self.engine is not None:
                    listener = self._bind_native(loop, host, port)
                else:
                    _t, listener = await loop.create_datagram_endpoint(
                        lambda h=host: _Listener(self, h), local_addr=(host, port))  # type: ignore[misc]
            except OSError:
                for bound in listeners:
                    self._close_listener(bound)
                return []
            _buffers(listener.transport.get_extra_info("socket"))  # type: ignore[union-attr]
            listeners.append(listener)
            if port == 0:  # ephemeral: the other addresses take the same number
                port = listener.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        return listeners

    def _bind_native(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> _Listener:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            stamp_arrivals(sock)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        listener = _Listener(self, host)
        listener.transport = _SocketTransport(sock, self)  # type: ignore[assignment]
        if self._start_reader(loop):
            try:
                self.engine.reader_add(sock.fileno())  # type: ignore[union-attr]
            except ENGINE_ERRORS:
                sock.close()
                raise OSError("the media reader takes no more sockets") from None
            self._by_fd[sock.fileno()] = listener
        else:
            loop.add_reader(sock.fileno(), self._readable, listener)
        return listener

    def _start_reader(self, loop: asyncio.AbstractEventLoop) -> bool:
        """The engine's reader thread, once per server, when the engine has one and it is wanted. An engine whose
        reader already serves another server (a test's second loop) is read from this loop instead.
        CLASSCAST_MEDIA_READER=loop (IceConfig.media_reader) asks for the loop's reads."""
        if self._reader is not None:
            return True
        if not hasattr(self.engine, "reader_start") or self.config.media_reader != "thread":
            return False
        try:
            self._reader = self.engine.reader_start(READER_HOLD_US)  # type: ignore[union-attr]
        except ENGINE_ERRORS:
            return False
        prioritize_reader(self.engine.reader_stats()["thread"], self.config.reader_priority)  # type: ignore[union-attr]
        loop.add_reader(self._reader, self._drain)
        return True

    def _stop_reader(self) -> None:
        if self._reader is None:
            return
        loop = self.loop()
        if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
            loop.remove_reader(self._reader)
        self.engine.reader_stop()  # type: ignore[union-attr]
        self._reader = None

    def _close_listener(self, listener: _Listener) -> None:
        transport = listener.transport
        if transport is None:
            return
        if isinstance(transport, _SocketTransport) and not transport.is_closing():
            fd = transport.sock.fileno()
            if self._by_fd.pop(fd, None) is not None:
                self.engine.reader_remove(fd)  # type: ignore[union-attr]  # returns once the thread let it go
                if not self._by_fd:
                    self._stop_reader()
            else:
                loop = self.loop()
                if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
                    loop.remove_reader(fd)
        transport.close()

    def _drain(self) -> None:
        """The reader thread queued something: take it all (one call), in the order it was read."""
        if self._reader is None:
            return
        by_fd = self._by_fd
        for tid, kind, data, extra, arrival, fd in self.engine.reader_take():  # type: ignore[union-attr]
            self._dispatch(tid, kind, data, extra, arrival, by_fd.get(fd))

    def _dispatch(self, tid: int, kind: int, data: bytes, extra: Any, arrival: float,
                  listener: _Listener | None) -> None:
        """One datagram the engine read: to its connection's receiver, or to the slow path. A batch is handled
        whole: one datagram's failing handler must not lose the ones after it (counted, logged)."""
        try:
            if tid >= 0:
                receiver = self._receivers.get(tid)
                if receiver is None:
                    self.drop("no_receiver")
                elif kind == RX_PUSHED:
                    receiver(kind, data, arrival, extra)
                else:
                    receiver(kind, data, arrival)
            elif listener is not None:
                self.received(data, extra, listener, arrival)
        except Exception:
            self.drop("handler_error")
            log.exception("handling a datagram the media engine read failed")

    def _readable(self, listener: _Listener) -> None:
        """The engine reads a batch (recvmmsg) and unprotects what it can; a few batches per wake-up, then the
        loop's other work gets its turn."""
        transport = listener.transport
        if self.engine is None or not isinstance(transport, _SocketTransport) or transport.is_closing():
            return
        fd = transport.sock.fileno()
        for _ in range(8):
            try:
                batch = self.engine.recv(fd)
            except OSError:  # ICMP errors (a client gone away) surface here
                self.drop("socket_error")
                continue
            for tid, kind, data, extra, arrival in batch:
                self._dispatch(tid, kind, data, extra, arrival, listener)
            if len(batch) < 64:
                return

    def poll(self) -> None:
        """Reads the port now, between two long steps of other work (sfu/peer.py negotiation_turn): what arrived
        meanwhile, binding requests above all, is handled without waiting for the loop's next I/O poll. A failure
        here is the socket reader's, not the caller's: logged, and the loop's own reader tries again."""
        if self._reader is not None:
            try:
                self._drain()
            except Exception:
                log.exception("taking the media reader's queue between two steps failed")
            return
        for listener in self._listeners:
            try:
                self._readable(listener)
            except Exception:
                log.exception("reading the media port between two steps failed")

    def register_receiver(self, transport: int, receiver: Callable[..., None]) -> None:
        """The engine's transport id -> who gets its unprotected RTP (kind 0) and RTCP (kind 1), with the
        kernel's arrival stamp: receiver(kind, data, arrival), or receiver(RX_PUSHED, data, arrival, flags) for RTP
        the engine already forwarded (a routed SSRC: engine.route), which still needs the slow path's bookkeeping."""
        self._receivers[transport] = receiver

    def unregister_receiver(self, transport: int) -> None:
        self._receivers.pop(transport, None)

    def close(self) -> None:
        for connection in list(self._by_ufrag.values()):
            connection.closed_by_server()
        for listener in self._listeners:
            self._close_listener(listener)
        self._listeners = []
        self.port = 0

    def candidates(self) -> list[Candidate]:
        """Host candidates for every answer and offer: the listening addresses, or the announced one instead
        (a 1:1 NAT, a container's published port, a load balancer: the address clients can reach)."""
        addresses = [self.config.announced] if self.config.announced else list(self.config.hosts)
        return [Candidate(foundation=candidate_foundation("host", "udp", address), component=1, transport="udp",
                          priority=candidate_priority(1, "host"), host=address, port=self.port, type="host")
                for address in addresses]

    # ---- connections -------------------------------------------------------------------------------------------

    def connection(self, local_username: str | None = None, local_password: str | None = None) -> MuxConnection:
        connection = MuxConnection(self, local_username, local_password)
        while connection.local_username in self._by_ufrag:  # 4 random characters: a collision is possible
            connection.local_username = secrets.token_hex(4)
        return connection

    def register(self, connection: MuxConnection) -> None:
        self._by_ufrag[connection.local_username] = connection
        self.counters["connections_made"] += 1
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None

    def unregister(self, connection: MuxConnection) -> None:
        if self._by_ufrag.get(connection.local_username) is connection:
            del self._by_ufrag[connection.local_username]
        for addr in connection.addresses:
            if self._by_addr.get(addr) is connection:
                del self._by_addr[addr]
        if not self._by_ufrag and self._listeners and self._close_handle is None:
            with contextlib.suppress(RuntimeError):  # no loop: closing at interpreter exit
                loop = asyncio.get_running_loop()
                self._close_handle = loop.call_later(CLOSE_LINGER, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._close_handle = None
        if not self._by_ufrag:
            self.close()

    def forget_address(self, connection: MuxConnection, addr: Address) -> None:
        if self._by_addr.get(addr) is connection:
            del self._by_addr[addr]

    # ---- the demultiplexer ------------------------------------------------------------------------------------

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def received(self, data: bytes, addr: Address, listener: _Listener, arrival: float | None = None) -> None:
        """RFC 7983's first-byte demultiplexing: STUN 0-3, DTLS 20-63, RTP/RTCP 128-191. `arrival`: the kernel's
        receive stamp (monotonic clock) when the engine read the datagram."""
        self.counters["datagrams_in"] += 1
        first = data[0] if data else 255
        if first < 4:
            self._stun(data, addr, listener)
            if arrival is not None:
                self._answered(time.monotonic() - arrival)
            return
        if 20 <= first <= 63:
            kind = "dtls"
        elif 128 <= first <= 191:
            kind = "rtp"
        else:
            self.drop("unknown_type")
            return
        connection = self._by_addr.get(addr)
        if connection is None:
            self.drop(f"{kind}_unknown_address")
            return
        connection.deliver(data)

    def _stun(self, data: bytes, addr: Address, listener: _Listener) -> None:
        request = binding.read(data)
        if isinstance(request, str):
            self.drop(request)
            return
        local, _, remote = request.username.partition(":")
        connection = self._by_ufrag.get(local)
        if connection is None:
            self.drop("stun_unknown_ufrag")
            return
        password = connection.local_password.encode("utf8")
        if not request.verify(password):
            self.drop("stun_bad_integrity")
            return
        if connection.remote_username is not None and remote != connection.remote_username:
            self.drop("stun_bad_username")
            return
        self.counters["binding_requests"] += 1
        if listener.transport is not None:
            listener.transport.sendto(binding.success(request, addr, password), addr)
        nominated = request.use_candidate
        if nominated:
            self.counters["nominations"] += 1
        previous = self._by_addr.get(addr)
        if previous is not None and previous is not connection:
            previous.lose_address(addr)  # an ICE restart or a new connection from the same client socket
        self._by_addr[addr] = connection
        connection.validated(addr, listener, nominated)

    def _answered(self, delay: float) -> None:
        """A binding request answered `delay` s after it reached the socket. Clients time checks out (aioice after
        0.5 s); a late answer means the event loop was busy (e.g. many joins at once): counted, and logged at most
        every 5 s with the worst delay, so a lost connection can be told from a slow server."""
        if delay <= LATE_ANSWER:
            return
        self.counters["binding_answered_late"] += 1
        self._late_max = max(self._late_max, delay)
        now = time.monotonic()
        if now - self._late_logged >= 5.0:
            log.info("binding requests answered up to %.2f s after they arrived (%d late so far): the loop is busy",
                     self._late_max, self.counters["binding_answered_late"])
            self._late_max, self._late_logged = 0.0, now

    def all_drops(self) -> dict[str, int]:
        """Drops by reason, the engine's receive side included (SRTP that failed authentication in C)."""
        drops = dict(self.drops)
        if self.engine is not None:
            rx = self.engine.rx_stats()
            reader = self.engine.reader_stats() if self._reader is not None else {}
            for reason, count in (("srtp_auth_failed", rx["auth_failed"]), ("rx_truncated", rx["truncated"]),
                                  ("socket_error", reader.get("errors", 0)),
                                  ("reader_queue_full", reader.get("overflow", 0))):
                if count:
                    drops[reason] = drops.get(reason, 0) + count
        return drops

    def stats(self) -> dict[str, Any]:
        """Plain data for Sfu.metrics: the port, what was dropped by reason, and the table sizes."""
        native = self.engine.rx_stats() if self.engine is not None else None
        reader = self.engine.reader_stats() if self._reader is not None else None  # type: ignore[union-attr]
        return {"port": self.port, "connections": len(self._by_ufrag), "addresses": len(self._by_addr),
                **self.counters, "native_receive": native, "reader": reader, "drops": self.all_drops()}


class MuxConnection:
    """What aiortc's RTCIceGatherer / RTCIceTransport / RTCDtlsTransport use of an aioice Connection, over the
    server's shared socket. Attribute names are aioice's (aiortc reads and writes them)."""

    def __init__(self, server: RtcServer, local_username: str | None, local_password: str | None) -> None:
        self.server = server
        self.local_username = local_username or secrets.token_hex(4)
        self.local_password = local_password or secrets.token_urlsafe(18)  # >= 22 characters (RFC 8839)
        self.ice_controlling = False  # written by aiortc; an ICE-lite agent is always controlled
        self.remote_is_lite = False
        self.remote_username: str | None = None
        self.remote_password: str | None = None
        self.local_candidates: list[Candidate] = []
        self._remote_candidates: list[Candidate] = []
        self.addresses: OrderedDict[Address, _Listener] = OrderedDict()  # authenticated, oldest first
        self.selected: tuple[Address, _Listener] | None = None
        self.on_path: Callable[[], None] | None = None  # the Peer's engine path follows the selected address
        self.srtp_failures = 0
        self.last_consent = 0.0
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._nominated = asyncio.Event()
        self._closed = False
        self._closed_event = asyncio.Event()
        self._consent_task: asyncio.Task[None] | None = None
        self._registered = False

    # ---- aioice's surface -----------------------------------------------------------------------------------

    async def gather_candidates(self) -> None:
        if self._closed:
            return
        await self.server.start()
        if not self._registered:
            self.server.register(self)
            self._registered = True
        self.local_candidates = self.server.candidates()

    async def add_remote_candidate(self, candidate: Candidate | None) -> None:
        """Kept for aiortc's getRemoteCandidates; ICE-lite never sends to them (the client's checks decide)."""
        if candidate is not None and len(self._remote_candidates) < MAX_REMOTE_CANDIDATES:
            self._remote_candidates.append(candidate)

    @property
    def remote_candidates(self) -> list[Candidate]:
        return list(self._remote_candidates)

    async def connect(self) -> None:
        """Returns once the client nominated a pair (USE-CANDIDATE); ConnectionError if it never does."""
        if self._closed:
            raise ConnectionError("connection closed")
        try:
            await asyncio.wait_for(self._wait_nominated(), self.server.connect_timeout)
        except TimeoutError:
            raise ConnectionError("ICE failed: no valid nomination") from None
        if self._closed:
            raise ConnectionError("connection closed")
        if self._consent_task is None:
            self._consent_task = asyncio.get_running_loop().create_task(self._consent())

    async def _wait_nominated(self) -> None:
        closed = asyncio.ensure_future(self._closed_event.wait())
        nominated = asyncio.ensure_future(self._nominated.wait())
        try:
            await asyncio.wait({closed, nominated}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            nominated.cancel()

    async def recv(self) -> bytes:
        if self._closed:
            raise ConnectionError("connection closed")
        data = await self._queue.get()
        if data is None:
            raise ConnectionError("connection closed")
        return data

    async def send(self, data: bytes) -> None:
        if self._closed or self.selected is None:
            raise ConnectionError("cannot send: not connected")
        addr, listener = self.selected
        if listener.transport is None or listener.transport.is_closing():
            raise ConnectionError("cannot send: socket closed")
        listener.transport.sendto(data, addr)

    async def get_event(self) -> ConnectionClosed:
        await self._closed_event.wait()
        return ConnectionClosed()

    async def close(self) -> None:
        self._shut()

    # ---- from the server ------------------------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if self._queue.qsize() >= MAX_QUEUE:
            self.server.drop("queue_full")
            return
        self._queue.put_nowait(data)

    def validated(self, addr: Address, listener: _Listener, nominated: bool) -> None:
        """A valid binding request from addr: consent renewed; USE-CANDIDATE selects the address."""
        self.last_consent = time.monotonic()
        self.addresses[addr] = listener
        self.addresses.move_to_end(addr)
        while len(self.addresses) > MAX_ADDRESSES:
            old, _ = self.addresses.popitem(last=False)
            self.server.forget_address(self, old)
            if self.selected is not None and self.selected[0] == old:
                self.selected = None
        if nominated or self.selected is None:
            changed = self.selected is None or self.selected[0] != addr
            self.selected = (addr, listener)
            if nominated:
                self._nominated.set()
            if changed and self.on_path is not None:
                self.on_path()

    def lose_address(self, addr: Address) -> None:
        self.addresses.pop(addr, None)
        if self.selected is not None and self.selected[0] == addr:
            self.selected = None
            if self.on_path is not None:
                self.on_path()

    def srtp_failed(self) -> None:
        """An SRTP/SRTCP packet from our client's address failed authentication (aiortc drops it)."""
        self.srtp_failures += 1
        self.server.drop("srtp_auth_failed")

    def closed_by_server(self) -> None:
        self._shut()

    def path(self) -> tuple[int, str, int] | None:
        """(socket fd, host, port) the engine sends this connection's copies to, once nominated."""
        if self._closed or self.selected is None or not self._nominated.is_set():
            return None
        (host, port), listener = self.selected
        fd = listener.fileno()
        return None if fd is None else (fd, host, port)

    # ---- internals ------------------------------------------------------------------------------------------

    def _shut(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.selected = None
        if self.on_path is not None:
            self.on_path()  # the engine stops sending through the shared socket before it may close
        self.server.unregister(self)
        self._queue.put_nowait(None)
        self._closed_event.set()
        if self._consent_task is not None and self._consent_task is not _current_task():
            self._consent_task.cancel()

    async def _consent(self) -> None:
        """RFC 7675 from the lite side: no valid check from the client for consent_timeout seconds -> closed."""
        while not self._closed:
            timeout = self.server.consent_timeout
            interval = min(5.0, timeout / 3)
            started = time.monotonic()
            await asyncio.sleep(interval)
            if time.monotonic() - started > interval + 1.0:
                continue  # the loop itself was late (a busy server): the client's checks may wait in the socket
            if time.monotonic() - self.last_consent <= timeout:
                continue
            await asyncio.sleep(0.2)  # one more look after the loop polled the socket (timers run before I/O)
            if not self._closed and time.monotonic() - self.last_consent > timeout:
                log.info("consent expired for %s (no binding request for %.0f s)", self.local_username, timeout)
                self.server.drop("consent_expired")
                self._shut()
                return


class _NoLoop:
    """Stands for 'no loop' (a server made outside one: the fuzz target), weakly referenceable."""


_NO_LOOP = _NoLoop()


def prioritize_reader(tid: int, steps: int) -> int | None:
    """The reader thread `steps` nice steps above the calling (event loop's) thread; returns the reader's nice
    value, or None when it is left as it was.

    The reader forwards every publisher's packet; the loop's thread runs joins, DTLS, layer choice, reports and
    garbage collections. Where both want the same core (one core per worker, or a CPU quota), the kernel shares it
    by weight: at equal priority a 100 ms burst of the loop's work halves forwarding for 100 ms, and every packet
    of that time arrives late. Five steps give the reader about three quarters of the core while both run.
    Raising a thread's priority needs CAP_SYS_NICE (root has it). Without it the reader keeps the loop's priority
    and the log says so once: making the loop nicer instead would not last, since a reader started later (a server
    made again after an idle spell) is born with the loop's nice value, and no unprivileged thread can lower it."""
    global _PRIORITY_REFUSED
    if not tid or steps <= 0:
        return None
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # Linux: nice values are per thread
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(-20, own - steps))
    except OSError as exc:
        if not _PRIORITY_REFUSED:
            _PRIORITY_REFUSED = True
            log.info("the media reader thread runs at the event loop's priority (nice %d): raising it needs "
                     "CAP_SYS_NICE (%s); CLASSCAST_READER_PRIORITY=0 silences this", own, exc.strerror)
        return None
    return max(-20, own - steps)


_PRIORITY_REFUSED = False  # said once per process


def _running_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return _NO_LOOP


def _current_task() -> asyncio.Task[Any] | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.current_task()
    return None


_servers: dict[tuple[int, tuple[str, ...], int, str | None, int], RtcServer] = {}


def _forget_stale() -> None:
    """Drops the servers of loops that are gone or closed, closing their sockets: a closed loop never runs the
    linger timer that would have closed them, and each would keep a port of the range (a test suite runs a loop per
    test; after PORT_TRIES of them no port was left)."""
    for key, server in list(_servers.items()):
        loop = server.loop()
        ended = loop is None or (isinstance(loop, asyncio.AbstractEventLoop) and loop.is_closed())
        if ended:
            for listener in server._listeners:
                with contextlib.suppress(RuntimeError):  # an asyncio transport asks its closed loop to close it
                    server._close_listener(listener)
            server._listeners = []
        if ended or (not server._by_ufrag and not server.listening):
            del _servers[key]


def rtc_server_for(config: IceConfig, engine: Any = None, create: bool = True) -> RtcServer | None:
    """The running loop's server for this configuration and engine, or None in the per-connection mode
    (CLASSCAST_ICE_PORT_RANGE). Per loop because its sockets belong to one loop (tests run one loop each); per
    engine because the engine reads the socket (an SFU process has one; tests may make more)."""
    if not config.single_port:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    key = (id(loop), config.hosts, config.rtc_port, config.announced, id(engine))
    server = _servers.get(key)
    if server is not None and server.loop() is not loop:
        server = None  # an id reused by a later loop
    if server is None and create:
        _forget_stale()
        server = _servers[key] = RtcServer(config, engine)
    return server
