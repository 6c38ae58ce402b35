"""A pipe: one room's link between its routers on two SFU workers of one machine (mediasoup's pipeToRouter).

When a lecture's audience outgrows a worker, the control plane (control/workers.py) puts new participants on another
worker and opens a pipe between the room's router there and here. Every track published by a participant of this
worker crosses each of the room's pipes ONCE, whatever the number of subscribers behind it: all its simulcast layers,
the publisher's packets as they arrived (SSRCs, numbering and header extensions unchanged). On the far side a
`PipeProducer` feeds that worker's router as if it were a publisher, so its subscribers get their layer choice, NACKs
answered from that worker's own engine cache and keyframes at a layer switch like anyone's.

Between workers the link is plain RTP and RTCP (RFC 5761 multiplexing) over one UDP socket per pipe end, bound to
127.0.0.1 and connected to the other end's port, so the kernel drops whatever else is sent to it. No SRTP there: the
packets never leave the machine and both ends are processes of one server run by the same user (the same trust as
the Unix socket to the control plane); SRTP over loopback would cost an encryption and a decryption per packet for
nothing. Between nodes (a lecture across machines, control/relay.py) the same pipe runs between the room's routers
on two nodes: its socket is bound to the node's relay address, the peer is a node id, and every packet is SRTP /
SRTCP (`PipeSrtp`: libsrtp through pylibsrtp, AES-128-GCM, one key per direction that both nodes derive from their
shared secret and the pipe's id, never sent); what fails authentication is dropped and counted.

Backward (RTCP from the far side): NACKs for what the pipe lost, answered from this end's ring of what it sent, the
rest passed to the publisher; PLI/FIR of a far subscriber (already throttled there), passed to the publisher through
the stream's own keyframe throttle (one per 500 ms per layer however many workers ask); and which layers the far
side needs (an APP packet, `CCLN`), so this worker's dynacast keeps them flowing. Forward: each stream's sender
reports, and before a stream's first packet (and every MAP_EVERY_S) an APP packet (`CCSM`) naming its track and
layer: simulcast SSRCs are learned from packets, never announced in SDP, and the far side must know which layer an
SSRC is before it can forward it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import pylibsrtp

from sfu import rtcp
from sfu.codecs import CodecInfo
from sfu.producer import Producer, Stream
from sfu.rtp import RtpHeader, is_rtcp, parse_rtp

if TYPE_CHECKING:
    from sfu.router import Router

log = logging.getLogger("classcast.sfu.pipe")

RING = 1024  # packets per stream this end can resend when the far side NACKs (~1 s of a 720p layer)
MAP_EVERY_S = 1.0  # the stream map is repeated this often (a lost one must not keep a layer dark for long)
READ_BATCH = 256  # datagrams read per readiness callback before the loop gets a turn
APP = 204
NAME_MAP, NAME_LAYERS = b"CCSM", b"CCLN"
_APP_HEAD = struct.Struct("!BBHI4s")


PeerId = int | str  # a worker's index (a pipe inside this node), or a node's id (a relay between nodes)
SRTP_KEY_BYTES = 28  # AEAD_AES_128_GCM: a 16-byte key and a 12-byte salt
REPLAY_WINDOW = 1024  # as far back as a retransmission from the sender's ring may come (RING)


class PipeSrtp:
    """SRTP for a pipe between nodes: one libsrtp session per direction (`tx`, `rx`, keys from control/relay.py).
    An index is never protected twice (libsrtp's sender replay check stays on: with AES-GCM, two packets under one
    index would give away the keystream and the authentication key), so a duplicate of a packet, or another stream's
    packet under an SSRC already seen, is refused; a NACK is answered with the ciphertext sent the first time (the
    pipe's ring keeps the wire bytes). The receiver's replay window drops a copy it already has."""

    def __init__(self, tx_key: bytes, rx_key: bytes) -> None:
        if len(tx_key) != SRTP_KEY_BYTES or len(rx_key) != SRTP_KEY_BYTES:
            raise ValueError(f"a pipe's SRTP keys are {SRTP_KEY_BYTES} bytes")
        profile = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        out = pylibsrtp.Policy(key=tx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        out.window_size = REPLAY_WINDOW
        inbound = pylibsrtp.Policy(key=rx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        inbound.window_size = REPLAY_WINDOW
        self.tx, self.rx = pylibsrtp.Session(out), pylibsrtp.Session(inbound)

    def protect(self, data: bytes) -> bytes:
        """Raises pylibsrtp.Error (counted by the pipe as a send error)."""
        return self.tx.protect_rtcp(data) if is_rtcp(data) else self.tx.protect(data)

    def unprotect(self, data: bytes) -> bytes:
        """Raises pylibsrtp.Error: not authentic (a forged or damaged datagram), or a replay."""
        return self.rx.unprotect_rtcp(data) if is_rtcp(data) else self.rx.unprotect(data)


def describe(producer: Producer, role: str = "") -> dict[str, Any]:
    """A published track as the far side's PipeProducer is built from (plain data: it crosses the control plane);
    `role` is its publisher's (WHEP plays the teacher's tracks first, on any worker)."""
    return {"trackId": producer.id, "uid": producer.uid, "role": role, "source": producer.source, "mid": producer.mid,
            "codec": producer.codec.as_dict(), "layers": [s.rid for s in producer.streams] if producer.simulcast
            else None, "ssrc": producer.ssrc if not producer.simulcast else None, "muted": producer.muted,
            "blocked": producer.blocked}


def _app(subtype: int, ssrc: int, name: bytes, data: bytes) -> bytes:
    data += b"\0" * (-len(data) % 4)
    return _APP_HEAD.pack(0x80 | subtype & 0x1F, APP, (8 + len(data)) // 4, ssrc, name) + data


def _parse_app(data: bytes) -> tuple[int, int, bytes, bytes] | None:
    """(subtype, ssrc, name, data) of a lone APP packet, else None; never raises."""
    if len(data) < 12:
        return None
    first, pt, length, ssrc, name = _APP_HEAD.unpack_from(data)
    end = 4 + length * 4
    if first >> 6 != 2 or pt != APP or end > len(data) or end < 12:
        return None
    return first & 0x1F, ssrc, name, data[12:end]


class PipeProducer(Producer):
    """A track published on another worker, fed by a pipe: to this router it is a publisher like any other, whose
    RTCP (NACK, PLI) goes back through the pipe instead of to a browser."""

    def __init__(self, pipe: Pipe, desc: dict[str, Any]) -> None:
        codec = desc["codec"]
        info = CodecInfo(mime_type=str(codec["mimeType"]), clock_rate=int(codec["clockRate"]),
                         payload_type=int(codec["payloadType"]), channels=codec.get("channels"),
                         fmtp=tuple(sorted((str(k), str(v)) for k, v in (codec.get("fmtp") or {}).items())))
        layers = desc.get("layers")
        super().__init__(track_id=str(desc["trackId"]), owner=f"pipe:{pipe.peer}", uid=str(desc["uid"]),
                         source=str(desc["source"]), mid=str(desc.get("mid") or ""), codec=info,
                         ssrc=desc.get("ssrc"), rtx_ssrc=None, rtx_payload_type=None,
                         local_ssrc=random.getrandbits(32) | 1, send_rtcp=pipe.send_rtcp,
                         rids=[str(r) for r in layers] if layers else None, bridge=pipe.router.bridge)
        self.pipe = pipe
        self.role = str(desc.get("role") or "")  # its publisher's, who is on the other worker
        self.muted = bool(desc.get("muted"))
        if desc.get("blocked"):
            self.blocked = True

    def needed(self, indexes: set[int]) -> None:
        """This worker's dynacast: the layers its subscribers need, told to the publishing worker."""
        mask = sum(1 << i for i in indexes if 0 <= i < 5)
        self.pipe.send_layers(self.id, mask)


class Pipe:
    """One end of a room's pipe to the same room on worker `peer`."""

    def __init__(self, router: Router, peer: PeerId, loss: float = 0.0, seed: int | None = None,
                 host: str = "127.0.0.1", srtp: PipeSrtp | None = None) -> None:
        self.router = router
        self.peer = peer
        self.node = isinstance(peer, str)  # a pipe to another node (SRTP), not to a worker of this one
        self.host = host  # the address this end binds: loopback between workers, the node's relay address between nodes
        self.srtp = srtp
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.connected = False
        self.closed = False
        self.loss = loss  # tests and bench only: this share of outgoing RTP is dropped (never retransmissions)
        self._random = random.Random(seed)
        # this side's published tracks that cross the pipe
        self.local: dict[str, Producer] = {}
        self._local_ssrc: dict[int, Stream] = {}
        self._mapped: dict[int, float] = {}  # ssrc -> when its CCSM went last
        self._ring: dict[int, list[bytes | None]] = {}
        self.needed: dict[str, int] = {}  # track id -> layer mask the far side needs (CCLN)
        # the far side's tracks, fed into this router
        self.remote: dict[str, PipeProducer] = {}
        self._by_ssrc: dict[int, Stream] = {}
        self._gone: set[str] = set()  # removed remote tracks: a late description of one must not revive it
        self._tasks: set[asyncio.Task[Any]] = set()
        # figures (Sfu.stats, the tests)
        self.rtp_sent = self.rtp_received = self.unknown_ssrc = self.send_errors = self.dropped = 0
        self.nacks_received = self.retransmitted = self.nacks_forwarded = 0
        self.keyframe_requests = 0
        self.sender_reports = 0
        self.foreign = 0  # datagrams from another sender, queued before the socket was connected: dropped
        self.auth_failed = 0  # SRTP/SRTCP that did not authenticate (between nodes): dropped
        self.srtp_refused = 0  # RTP whose SRTP index was used already (libsrtp refuses it: a duplicate): not sent

    # ---- link ------------------------------------------------------------------------------------------

    def connect(self, port: int, host: str | None = None) -> None:
        """From now on the kernel passes only the other end's datagrams. What was queued before (the other end may
        have connected and sent first) is read now: the other end's kept, anything else dropped and counted."""
        if self.closed:
            return
        self.sock.connect((host or self.host, port))
        peer = self.sock.getpeername()[:2]
        now = time.monotonic()
        while True:
            try:
                data, source = self.sock.recvfrom(9216)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            if source[:2] == peer:
                self._datagram(data, now)
            else:
                self.foreign += 1
        if not self.connected:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)
        self.connected = True

    def _send(self, data: bytes, protect: bool = True) -> bool:
        if not self.connected:
            return False
        if self.srtp is not None and protect:
            try:
                data = self.srtp.protect(data)
            except pylibsrtp.Error:
                self.send_errors += 1
                return False
        try:
            self.sock.send(data)
            return True
        except OSError:  # buffer full, or the other end is gone (ECONNREFUSED): counted, never raised
            self.send_errors += 1
            return False

    async def send_rtcp(self, data: bytes) -> bool:
        """A PipeProducer's RTCP toward the publishing worker (its Producer._send_rtcp)."""
        return self._send(data)

    def _readable(self) -> None:
        recv = self.sock.recv
        for _ in range(READ_BATCH):
            try:
                data = recv(9216)  # above any MTU: a datagram is never cut
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable of an earlier send: the far end closed
                continue
            self._datagram(data, time.monotonic())

    def _datagram(self, data: bytes, now: float) -> None:
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except pylibsrtp.Error:
                self.auth_failed += 1
                return
        try:
            if is_rtcp(data):
                self._on_rtcp(data, now)
            else:
                self._on_rtp(data, now)
        except Exception:
            log.exception("pipe to %s: packet failed", self.peer)

    # ---- this side's tracks, sent -------------------------------------------------------------------------

    def attach(self, producer: Producer) -> None:
        if self.closed or producer.id in self.local:
            return
        self.local[producer.id] = producer
        producer.pipes.append(self)

    def detach(self, producer: Producer) -> None:
        if self.local.pop(producer.id, None) is None:
            return
        if self in producer.pipes:
            producer.pipes.remove(self)
        self.needed.pop(producer.id, None)
        for stream in producer.streams:
            for ssrc in [s for s, st in self._local_ssrc.items() if st is stream]:
                self._local_ssrc.pop(ssrc, None)
                self._mapped.pop(ssrc, None)
                self._ring.pop(ssrc, None)

    def rtp(self, stream: Stream, data: bytes, header: RtpHeader, arrival: float) -> None:
        """One packet of a published stream (Producer.on_rtp, after the engine accepted it)."""
        ssrc = header.ssrc
        if arrival - self._mapped.get(ssrc, float("-inf")) >= MAP_EVERY_S:
            self._mapped[ssrc] = arrival
            self._local_ssrc[ssrc] = stream
            self._send(_app(stream.index, ssrc, NAME_MAP, stream.producer.id.encode()))
        ring = self._ring.get(ssrc)
        if ring is None:
            ring = self._ring[ssrc] = [None] * RING
        if self.srtp is not None:  # the ring keeps what went on the wire: a NACK's answer is the same ciphertext
            try:
                data = self.srtp.protect(data)
            except pylibsrtp.Error:  # an index already used (a duplicate, an SSRC two publishers chose): never sent
                self.srtp_refused += 1
                return
        ring[header.sequence_number % RING] = data
        if self.loss and self._random.random() < self.loss:
            self.dropped += 1
            return
        if self._send(data, protect=False):
            self.rtp_sent += 1

    def sender_report(self, stream: Stream, report: rtcp.SenderReport) -> None:
        if stream.ssrc is not None:
            self._send(rtcp.build_sr(stream.ssrc, report.ntp, report.rtp_timestamp, report.packets, report.octets))

    def layers_needed(self, producer: Producer) -> set[int]:
        """What the far side's subscribers need of a track (all of it until it said)."""
        mask = self.needed.get(producer.id)
        if mask is None:
            return {s.index for s in producer.streams}
        return {s.index for s in producer.streams if mask >> s.index & 1}

    # ---- the far side's tracks, received ------------------------------------------------------------------

    def add_remote(self, desc: dict[str, Any]) -> PipeProducer | None:
        """A track published on the peer worker: made here at once (its packets may already be on the way); the
        router's announcement (subscriptions, offers) follows in a task."""
        track_id = str(desc["trackId"])
        if self.closed or track_id in self.remote or track_id in self._gone:
            return None
        producer = PipeProducer(self, desc)
        self.remote[track_id] = producer
        if producer.ssrc is not None:
            self._by_ssrc[producer.ssrc] = producer.streams[0]
        self._spawn(self.router.add_producer(producer))
        return producer

    def remove_remote(self, track_id: str) -> None:
        self._gone.add(track_id)
        producer = self.remote.pop(track_id, None)
        if producer is None:
            return
        for ssrc in [s for s, st in self._by_ssrc.items() if st.producer is producer]:
            del self._by_ssrc[ssrc]
        self._spawn(self.router.remove_producer(producer))

    def mute_remote(self, track_id: str, muted: bool) -> None:
        producer = self.remote.get(track_id)
        if producer is not None:
            self._spawn(self.router.set_track_muted(producer, muted))

    def send_layers(self, track_id: str, mask: int) -> None:
        self._send(_app(mask, 0, NAME_LAYERS, track_id.encode()))

    def _on_rtp(self, data: bytes, now: float) -> None:
        try:
            header = parse_rtp(data)
        except ValueError:
            self.unknown_ssrc += 1
            return
        stream = self._by_ssrc.get(header.ssrc)
        if stream is None:
            self.unknown_ssrc += 1  # before its CCSM, or of a track already removed
            return
        self.rtp_received += 1
        stream.producer.on_rtp(stream, data, header, now)

    def _on_rtcp(self, data: bytes, now: float) -> None:
        if data[1] == APP:
            app = _parse_app(data)
            if app is not None:
                self._on_app(*app)
            return
        for packet in rtcp.parse_rtcp(data):
            if isinstance(packet, rtcp.SenderReport):
                stream = self._by_ssrc.get(packet.ssrc)
                if stream is not None:
                    self.sender_reports += 1
                    stream.producer.on_sender_report(stream, packet, now)
            elif isinstance(packet, rtcp.Nack):
                self._on_nack(packet.media_ssrc, packet.lost)
            elif isinstance(packet, rtcp.Pli):
                self._on_keyframe_request(packet.media_ssrc, now)
            elif isinstance(packet, rtcp.Fir):
                for ssrc, _ in packet.entries:
                    self._on_keyframe_request(ssrc, now)

    def _on_app(self, subtype: int, ssrc: int, name: bytes, body: bytes) -> None:
        track_id = body.rstrip(b"\0").decode(errors="replace")
        if name == NAME_MAP:
            producer = self.remote.get(track_id)
            if producer is None or subtype >= len(producer.streams):
                return
            stream = producer.streams[subtype]
            if stream.ssrc is not None and stream.ssrc != ssrc and self._by_ssrc.get(stream.ssrc) is stream:
                del self._by_ssrc[stream.ssrc]  # the publisher restarted the layer with a new SSRC
            stream.ssrc = ssrc
            self._by_ssrc[ssrc] = stream
        elif name == NAME_LAYERS and track_id in self.local:
            before = self.needed.get(track_id, 0)
            self.needed[track_id] = subtype
            if subtype & ~before:  # a layer the far side now needs resumes at once, not at the next report tick
                self.router.resume_layers(time.monotonic())

    def _on_nack(self, ssrc: int, lost: list[int]) -> None:
        """The far side lost packets on the pipe: resend what the ring holds, ask the publisher for the rest."""
        stream = self._local_ssrc.get(ssrc)
        if stream is None:
            return
        self.nacks_received += 1
        ring = self._ring.get(ssrc) or []
        missing = []
        for seq in lost:
            data = ring[seq % RING] if ring else None
            if data is not None and struct.unpack_from("!H", data, 2)[0] == seq:
                if self._send(data, protect=False):  # as it was sent (SRTP: the same ciphertext, not re-encrypted)
                    self.retransmitted += 1
            else:
                missing.append(seq)
        if missing:
            self.nacks_forwarded += 1
            self._spawn(stream.nack_upstream(missing))

    def _on_keyframe_request(self, ssrc: int, now: float) -> None:
        stream = self._local_ssrc.get(ssrc)
        if stream is not None:
            self.keyframe_requests += 1
            self._spawn(stream.request_keyframe(now))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, Any]:
        return {"peer": self.peer, "port": self.port, "connected": self.connected, "sent": list(self.local),
                "received": list(self.remote), "rtpSent": self.rtp_sent, "rtpReceived": self.rtp_received,
                "unknownSsrc": self.unknown_ssrc, "sendErrors": self.send_errors, "dropped": self.dropped,
                "nacksReceived": self.nacks_received, "retransmitted": self.retransmitted,
                "nacksForwarded": self.nacks_forwarded, "keyframeRequests": self.keyframe_requests,
                "senderReports": self.sender_reports, "foreign": self.foreign,
                "srtp": self.srtp is not None, "authFailed": self.auth_failed, "srtpRefused": self.srtp_refused}

    async def close(self) -> None:
        """Stops both directions: this side's tracks stop crossing, the far side's leave this router."""
        if self.closed:
            return
        self.closed = True
        for producer in list(self.local.values()):
            self.detach(producer)
        if self.connected:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.connected = False
        for producer in list(self.remote.values()):
            self._gone.add(producer.id)
            await self.router.remove_producer(producer)
        self.remote.clear()
        self._by_ssrc.clear()
