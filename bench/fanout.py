"""The fan-out benchmark: one teacher publishing a pre-encoded lesson, N cheap subscribers, the server's cost.

    classcast-bench fanout --subscribers 20 --duration 10 --json out.json --plot out.png
    classcast-bench fanout --ramp 10:10:60 --duration 10 --scenario lecture
    classcast-bench fanout --compare janus,pion --ramp 25:25:150 --plot compare.png   (root: a network namespace)

Targets (bench/targets/): classcast started here or at a URL; Janus's VideoRoom and the pion SFU of
bench/peers/pion (`pion` as its default interceptors leave it, `pion-twcc` stamping transport-wide numbers and
estimating each subscriber's bandwidth as classcast does), which run, with the bench itself, inside a private
network namespace (bench/netns.py) because Janus will not gather on loopback; classcast joins them there for a
comparison.

Real parts only: a `classcast serve` process started here (unless --target is a URL), real ICE, DTLS and SRTP on
127.0.0.1 (aiortc with iceServers=[] and gathering pinned to loopback). The publisher (in this process) sends the
cached clip of bench/clip.py paced in real time as RTP it builds itself (three simulcast layers with MID/RID header
extensions, Opus, and a 1080p screen share in the screen scenario), answering NACK from its send history and PLI/FIR
by restarting that layer's clip at its keyframe. Every payload ends with a 16-byte trailer (layer, counter, send
time on the machine's monotonic clock) that subscribers read for latency; nothing in the path looks at payload
ends, and nothing decodes.

Subscribers are sfu.peer.Peer raw pipes spread over several worker processes: ICE (with consent), DTLS and SRTP
for real; only the RTP header (in clear under SRTP) is read per packet, and one packet in SAMPLE is unprotected for
its trailer. They send what Chrome sends a server (requirement 5 of issue 21), so the servers' cost of receiving it
counts: a PLI for each video SSRC when it starts, transport-wide-cc feedback every POLL_S (100 ms) when negotiated
(every target's answer accepts it, `targets.browser_answer`), a NACK for the sequence numbers a gap shows missing
(once each, in the next 100 ms), and a receiver report per SSRC every second.

Figures per step of N come from /proc (server process tree CPU and RSS, workers' CPU) and the subscribers'
counters; see bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCRtpSender, RTCSessionDescription

from bench import clip as cliplib
from bench import consent, cpucap, netns, targets, udp
from bench.cpucap import CpuCap
from bench.targets import Target
from sfu import rtcp
from sfu.bwe import TwccFeedback
from sfu.hdrext import URI_RID, URI_TWCC
from sfu.ice import IceConfig
from sfu.peer import Peer

TRAILER = struct.Struct("!HBBId")  # magic, stream index, flags (1 = keyframe), counter, send time (time.time())
MAGIC = 0xCCBE
_SEQ_TS_SSRC = struct.Struct("!HII")
STREAMS = ("q", "h", "f", "audio", "screen")
SCENARIOS = ("lecture", "lecture+screen", "audio-only")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
POLLED: list[tuple[int, Any, Subscriber]] = []  # a worker's subscriber sockets: (fd, aioice protocol, subscriber)
POLL_S = 0.1  # arrival times come from the kernel, so polling adds no error to latency
SAMPLE = 16  # one packet in SAMPLE is decrypted for its trailer (latency): enough samples, a fraction of the cost
MAX_NACK_GAP = 64  # a gap wider than this is not NACKed number by number (Chrome asks a keyframe instead)
SUBSCRIBER_SSRC = 0x5EB0_0001
PROFILE_RATE = 200  # py-spy samples per second (--profile)


# ---- /proc ----------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out += _children(int(entry))
    return out


def proc_cpu(pid: int, tree: bool = True) -> float:
    """CPU seconds (user + system) of a process and, with tree, all its descendants now alive."""
    total = 0.0
    for p in _children(pid) if tree else [pid]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def proc_rss(pid: int) -> int:
    total = 0
    for p in _children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
    return total


def thread_cpu(pid: int) -> dict[tuple[int, int], tuple[str, float]]:
    """Every thread of a process tree now alive: (process, thread id) -> (role, CPU seconds). The role is
    "<process>/<thread>": the tree's root process is "server", any other is "child"; a process's first thread
    (which runs a Python process's event loop) is "main", a thread named by its code by that name (the engine's
    reader is "cc-reader"), any other "other". Two readings' difference (`thread_split`) shares a step's server CPU
    between forwarding and the slow path without a profiler."""
    out: dict[tuple[int, int], tuple[str, float]] = {}
    for p in _children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{p}/comm") as f:
                process_name = f.read().strip()
            for entry in os.listdir(f"/proc/{p}/task"):
                tid = int(entry)
                with contextlib.suppress(OSError, IndexError, ValueError):
                    with open(f"/proc/{p}/task/{tid}/stat") as f:
                        stat = f.read()
                    name = stat[stat.index("(") + 1:stat.rindex(")")]
                    fields = stat.rsplit(")", 1)[1].split()
                    thread = "main" if tid == p else ("other" if name == process_name else name)
                    role = f"{'server' if p == pid else 'child'}/{thread}"
                    out[(p, tid)] = (role, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def thread_seconds(before: dict[tuple[int, int], tuple[str, float]],
                   after: dict[tuple[int, int], tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by thread role between two `thread_cpu` readings, largest first (a thread born in between counts
    from zero; one gone in between is not seen)."""
    by_role: dict[str, float] = {}
    for key, (role, seconds) in after.items():
        by_role[role] = by_role.get(role, 0.0) + seconds - before.get(key, (role, 0.0))[1]
    return {role: s for role, s in sorted(by_role.items(), key=lambda kv: -kv[1]) if s > 0}


def thread_split(before: dict[tuple[int, int], tuple[str, float]], after: dict[tuple[int, int], tuple[str, float]],
                 packets: int) -> dict[str, float]:
    """µs of CPU per forwarded packet by thread role between two `thread_cpu` readings."""
    return {role: round(1e6 * s / packets, 2) for role, s in thread_seconds(before, after).items() if packets}


def udp_drops(inodes: set[int]) -> int:
    """Datagrams the kernel dropped on these UDP sockets (a full receive buffer), from /proc/net/udp."""
    total = 0
    with contextlib.suppress(OSError):
        for line in open("/proc/net/udp").readlines()[1:]:
            fields = line.split()
            if len(fields) > 12 and int(fields[9]) in inodes:
                total += int(fields[12])
    return total


def socket_inodes(pid: int) -> set[int]:
    """The socket inodes a process tree holds."""
    out = set()
    for p in _children(pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                    if link.startswith("socket:["):
                        out.add(int(link[8:-1]))
    return out


def loadavg() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


BENCH_BUSY_LIMIT = 90  # above this share of its own CPUs, a step's latency and delivery are the bench's figures too


def cpu_ticks(cpus: set[int]) -> tuple[int, int]:
    """Busy and total ticks of these CPUs since boot (/proc/stat; idle and iowait are not busy)."""
    busy = total = 0
    with contextlib.suppress(OSError):
        for line in open("/proc/stat"):
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            ticks = [int(x) for x in fields[:8]]
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """How busy the CPUs were between two cpu_ticks readings, in percent."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else None


# ---- publisher --------------------------------------------------------------------------------------------------


@dataclass
class OutStream:
    index: int  # in STREAMS
    track: cliplib.Track
    ssrc: int
    payload_type: int
    ext: bytes  # one-byte header extension block (MID, RID), ready to insert
    seq: int = 0
    ts: int = 0
    frame: int = 0
    counter: int = 0
    sent: int = 0
    octets: int = 0
    restart: bool = False
    last_key: float = -1e9  # monotonic time of the last keyframe sent
    history: dict[int, bytes] = field(default_factory=dict)


def _ext_block(items: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in items)
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def _munge_simulcast(sdp: str, mid: str, rid_ext: int, rids: tuple[str, ...]) -> str:
    out, current = [], None
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            current = None
        if line.startswith("a=mid:"):
            current = line[6:]
        out.append(line)
        if current == mid and line.startswith("a=mid:"):
            out += [f"a=extmap:{rid_ext} {URI_RID}", *(f"a=rid:{r} send" for r in rids),
                    f"a=simulcast:send {';'.join(rids)}"]
    return "\r\n".join(out)


PACING_FACTOR = 2.5  # libwebrtc's default: its pacer sends at 2.5 times the encoders' target rate
PACER_INTERVAL = 0.005  # ... in 5 ms slices
# libwebrtc's default keyframe interval (VideoEncoder's default H.264 / VP8 settings: 3000 frames, 100 s at 30 fps):
# a browser sends keyframes when it starts and when a receiver asks (PLI/FIR), not with every loop of a clip
KEYFRAME_INTERVAL_S = 100.0


def step_timeout(args: argparse.Namespace) -> float:
    """The longest a step may take: its joins, settling, measuring and probes (each probe waits up to 10 s for
    its keyframe and 5 s to close), with a minute to spare."""
    return args.duration + args.settle + 60 + 15 * args.probes + 60


class Pacer:
    """A browser's pacer in front of the teacher's video.

    Chrome does not put a frame's packets on the wire at once: its pacer releases them at PACING_FACTOR times the
    target bitrate, a slice every 5 ms, so a keyframe of a 1.5 Mbit/s camera leaves over tens of milliseconds. A
    publisher that bursts whole frames (this bench before) measures the burst, not the server: the last of N copies
    of the last packet of a 60-packet keyframe waits for every copy before it. Debt carries over (a packet larger
    than the slice's budget is sent, the next slice pays), unused budget does not, as libwebrtc's IntervalBudget.
    The send time in each packet's trailer is taken when the pacer releases it, so latency is the server's."""

    def __init__(self, rate_bps: float, send: Any) -> None:
        self.rate = rate_bps / 8  # bytes per second
        self.send = send
        self.queue: deque[Any] = deque()  # callables that build the packet at release
        self.wake = asyncio.Event()

    def push(self, build: Any) -> None:
        self.queue.append(build)
        self.wake.set()

    async def run(self) -> None:
        budget = 0.0
        last = time.monotonic()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                budget, last = 0.0, time.monotonic()
            now = time.monotonic()
            budget = min(budget, 0.0) + self.rate * min(now - last, 0.05)
            last = now
            while self.queue and budget > 0:
                packet = self.queue.popleft()()
                budget -= len(packet)
                await self.send(packet)
            if self.queue:
                await asyncio.sleep(PACER_INTERVAL)


class Publisher:
    """The teacher: pre-encoded RTP, paced in real time like a browser (Pacer), NACK and PLI answered."""

    def __init__(self, scenario: str, codec: str, ice: IceConfig, pacing: float = PACING_FACTOR,
                 keyframe_interval: float = KEYFRAME_INTERVAL_S) -> None:
        self.scenario, self.codec = scenario, codec
        self.clip = cliplib.load(codec)
        self.pacing = pacing
        self.keyframe_interval = keyframe_interval
        self.pacer: Pacer | None = None
        consent.browser_like()  # a browser's consent rule, not aioice's stricter one (bench/consent.py)
        self.peer = Peer(on_rtcp=self._on_rtcp, ice=ice, name="publisher")
        self.streams: list[OutStream] = []
        self.keyframe_requests = 0
        self.nacks = 0
        self.retransmitted = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, session: aiohttp.ClientSession, target: Target) -> None:
        sources = {"lecture": ["camera", "microphone"], "lecture+screen": ["camera", "microphone", "screen"],
                   "audio-only": ["microphone"]}[self.scenario]
        transceivers = {s: self.peer.add_send_transceiver("audio" if s == "microphone" else "video",
                                                          stream_id="teacher") for s in sources}
        mime = {"h264": "video/H264", "vp8": "video/VP8"}[self.codec]
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime]
        for t in transceivers.values():
            if t.kind == "video":  # the clip's codec only
                t.setCodecPreferences(codecs)
        offer = await self.peer.create_offer()
        sdp = offer.sdp
        if "camera" in transceivers:
            sdp = _munge_simulcast(sdp, transceivers["camera"].mid, 10, target.rids)
        answer = await target.publish(session, self.peer, sdp, [(s, t.mid) for s, t in transceivers.items()])
        await self.peer.accept_answer(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(self.peer.wait_connected(), 20)
        sections = {m.mid: m for m in self.peer.media_sections()}
        for source, t in transceivers.items():
            section = sections[t.mid]
            mid_ext = section.mid_extension_id or 9
            codec = section.primary_codec
            assert codec is not None and section.local_ssrc is not None
            if source == "camera":
                for i, rid in enumerate(("q", "h", "f")):
                    ext = _ext_block([(mid_ext, t.mid.encode()), (10, rid.encode())])
                    self.streams.append(OutStream(i, self.clip[rid], section.local_ssrc + 1 + i,
                                                  codec.payload_type, ext))
            else:
                name = "audio" if source == "microphone" else "screen"
                ext = _ext_block([(mid_ext, t.mid.encode())])
                self.streams.append(OutStream(STREAMS.index(name), self.clip[name], section.local_ssrc,
                                              codec.payload_type, ext))
        if self.pacing:
            video = sum(s.track.bitrate for s in self.streams if STREAMS[s.index] != "audio")
            self.pacer = Pacer(self.pacing * video, self.peer.send_rtp)
            self.tasks.append(asyncio.create_task(self.pacer.run()))
        for stream in self.streams:
            self.tasks.append(asyncio.create_task(self._pace(stream)))
        self.tasks.append(asyncio.create_task(self._reports()))

    async def _pace(self, s: OutStream) -> None:
        start = time.monotonic()
        n = 0
        step = s.track.clock_rate / s.track.fps
        while True:
            await asyncio.sleep(max(0.0, start + n / s.track.fps - time.monotonic()))
            now = time.monotonic()
            if s.restart:  # answer a keyframe request: the clip's only keyframe is its first frame
                s.frame, s.restart = 0, False
            elif s.frame == 0 and s.track.codec != "opus" and now - s.last_key < self.keyframe_interval:
                s.frame = 1 % len(s.track.frames)  # the loop goes on without a keyframe, as a browser's encoder
            key, payloads = s.track.frames[s.frame]
            if key:
                s.last_key = now
            s.frame = (s.frame + 1) % len(s.track.frames)
            ts = int(n * step) & 0xFFFFFFFF
            if s.track.codec == "vp8":  # a running picture id, not the clip's, which jumps back at each loop
                payloads = [cliplib.vp8_picture_id(p, n) for p in payloads]
            paced = self.pacer is not None and STREAMS[s.index] != "audio"  # audio goes first, as in Chrome
            for i, payload in enumerate(payloads):
                header = struct.pack("!BBHII", 0x90, s.payload_type | (0x80 if i == len(payloads) - 1 else 0),
                                     s.seq, ts, s.ssrc) + s.ext + payload
                build = self._builder(s, s.seq, header, int(key and i == 0), s.counter)
                s.seq = (s.seq + 1) & 0xFFFF
                s.counter += 1
                if paced:
                    self.pacer.push(build)  # type: ignore[union-attr]
                else:
                    await self.peer.send_rtp(build())
            s.ts = ts
            n += 1

    @staticmethod
    def _builder(s: OutStream, seq: int, header: bytes, key: int, counter: int) -> Any:
        """The packet as it leaves: its trailer's send time then, kept for NACKs and counted."""
        def build() -> bytes:
            packet = header + TRAILER.pack(MAGIC, s.index, key, counter, time.time())
            s.history[seq] = packet
            s.history.pop((seq - 1024) & 0xFFFF, None)
            s.sent += 1
            s.octets += len(packet)
            return packet
        return build

    async def _reports(self) -> None:
        while True:
            await asyncio.sleep(1)
            now = time.time()
            ntp = (int(now + 2208988800) << 32) | int((now % 1) * (1 << 32))
            for s in self.streams:
                await self.peer.send_rtcp(rtcp.build_sr(s.ssrc, ntp, s.ts, s.sent, s.octets))

    async def _on_rtcp(self, data: bytes) -> None:
        for packet in rtcp.parse_rtcp(data):
            if isinstance(packet, rtcp.Pli | rtcp.Fir):
                ssrcs = [packet.media_ssrc] if isinstance(packet, rtcp.Pli) else [e[0] for e in packet.entries]
                for s in self.streams:
                    if s.ssrc in ssrcs:
                        self.keyframe_requests += 1
                        s.restart = True
            elif isinstance(packet, rtcp.Nack):
                self.nacks += 1
                for s in self.streams:
                    if s.ssrc == packet.media_ssrc:
                        for seq in packet.lost:
                            old = s.history.get(seq)
                            if old is not None:
                                self.retransmitted += 1
                                await self.peer.send_rtp(old)

    def counters(self) -> dict[str, int]:
        return {STREAMS[s.index]: s.sent for s in self.streams}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.peer.close()


# ---- subscribers (in worker processes) ------------------------------------------------------------------------


class Subscriber:
    def __init__(self, target: str, info: Any, ice: IceConfig) -> None:
        self.target, self.info = target, info
        self.link: targets.Link | None = None
        consent.browser_like()
        self.peer = Peer(on_rtp=self._on_rtp, ice=ice, name="subscriber")
        self.started = 0.0
        self.first_video: float | None = None
        self.first_key: float | None = None
        self.ssrcs: dict[int, list[int]] = {}  # ssrc -> [base ext seq, highest ext seq, received]
        self.packets = [0] * len(STREAMS)
        self.octets = 0
        self.latencies: list[float] = []
        self.sample = 0
        self.kind: dict[int, int] = {}  # ssrc -> index in STREAMS, from the first decrypted trailer
        self.errors = 0
        self.srtp: Any = None
        self.keyframe = asyncio.Event()
        self.closed = False
        self.reported: dict[int, tuple[int, int]] = {}  # ssrc -> (expected, received) at the last report
        # Browser-like feedback (see the module docstring), from the server's offer once negotiated:
        self.twcc_id = 0  # transport-wide-cc extension id (0: not negotiated)
        self.twcc: TwccFeedback | None = None
        self.video_pts: set[int] = set()  # payload types of video media (not RTX): NACKed, PLI at start
        self.rtx_pts: set[int] = set()
        self.media_ssrc = 0  # the first SSRC received, named as media SSRC in TWCC feedback as Chrome does
        self.nacks: dict[int, list[int]] = {}  # ssrc -> sequence numbers to NACK in the next flush
        self.plis: list[int] = []  # SSRCs to send a PLI for in the next flush
        self.rtx_ssrcs: set[int] = set()
        self.plis_sent: set[int] = set()  # video SSRCs (NACKed when they show gaps)
        self.seen: set[int] = set()  # SSRCs met below SRTP
        self.feedback_sent = {"rr": 0, "twcc": 0, "nack": 0, "pli": 0}
        self.marks: dict[str, float] = {}  # a probe's phases (wall clock): signaled, ice, connected

    def _ice_state(self) -> None:
        if self.peer.pc.iceConnectionState in ("connected", "completed"):
            self.marks.setdefault("ice", time.time())

    def phases(self) -> dict[str, float | None]:
        """Seconds from the start of the join to each phase's end: the offer/answer done over signaling, ICE
        connected, DTLS done (SRTP keys), the first video packet, the first keyframe packet. Where a joiner's
        first keyframe waits is one of these."""
        at = {**self.marks, "video": self.first_video, "key": self.first_key}
        return {name: (round(at[name] - self.started, 4) if at.get(name) else None)
                for name in ("signaled", "ice", "connected", "video", "key")}

    async def join(self, session: aiohttp.ClientSession) -> None:
        self.started = time.time()
        self.peer.pc.on("iceconnectionstatechange", self._ice_state)
        self.link = await asyncio.wait_for(targets.subscribe(self.target, session, self.info, self.peer), 60)
        self.marks.setdefault("signaled", time.time())
        await asyncio.wait_for(self.peer.wait_connected(), 30)
        self.marks.setdefault("connected", time.time())
        self._negotiated()
        self._below_srtp()

    def _negotiated(self) -> None:
        """Payload types and the transport-wide-cc id, read from the server's offer (our answer accepted both)."""
        remote = self.peer.pc.remoteDescription
        kind = ""
        for line in (remote.sdp if remote is not None else "").splitlines():
            if line.startswith("m="):
                kind = line[2:].split(" ", 1)[0]
            elif line.startswith("a=extmap:") and URI_TWCC in line and not self.twcc_id:
                self.twcc_id = int(line[9:].split(" ", 1)[0].split("/")[0])
            elif line.startswith("a=rtpmap:") and kind == "video":
                pt, name = line[9:].split(" ", 1)
                (self.rtx_pts if name.lower().startswith("rtx/") else self.video_pts).add(int(pt))
        if self.twcc_id:
            self.twcc = TwccFeedback()

    def _below_srtp(self) -> None:
        """Take RTP off the UDP socket below aioice and aiortc: no STUN parse, no queue, no SRTP unprotect.

        The header is in clear under SRTP: counting, sequence gaps and the SSRC come from it. One packet in SAMPLE
        is unprotected (libsrtp accepts skipped packets) to read the trailer's send time for latency. The
        worker's poller reads the sockets in batches (bench/udp.py); STUN (consent), DTLS and RTCP go on to
        aioice's protocol as before. Private internals used here: RTCIceTransport._connection (the aioice
        Connection), its ._protocols (StunProtocol, with .transport), RTCDtlsTransport._rx_srtp.
        """
        dtls = self.peer._transport()
        assert dtls is not None
        self.srtp = dtls._rx_srtp
        for protocol in dtls.transport._connection._protocols:
            transport = protocol.transport
            sock = transport.get_extra_info("socket")
            if sock is None or sock.family != socket.AF_INET:
                continue
            udp.enable_timestamps(sock)
            with contextlib.suppress(OSError):  # room for a busy client's pauses: client drops are not server loss
                sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 20)  # SO_RCVBUFFORCE (needs CAP_NET_ADMIN)
            transport.pause_reading()
            POLLED.append((sock.fileno(), protocol, self))

    def receive(self, rx: udp.BatchReceiver, n: int, now: float, protocol: Any) -> None:
        """The last batch read from this subscriber's socket. SRTP is read here: the header only (it is in clear
        under SRTP), and one packet in SAMPLE decrypted for its trailer's send time (libsrtp accepts skipped
        packets). Anything else (STUN, DTLS, RTCP) goes on to aioice's protocol.

        One call per batch, the loop's lookups held in locals and the common transport-wide-cc layout (the
        sequence number in the first extension element) read without a loop: near the server's knee the bench's
        own CPU limits what a step measures (bench_cpus_busy_percent), and this loop is most of that CPU.
        A packet's kernel arrival time is `now` where the kernel gave none."""
        lengths, arrivals = rx.batch(n)
        view = rx.view
        twcc = self.twcc
        first = self.twcc_id << 4 | 1  # a one-byte extension element's header: this id, two bytes of data
        kind, seen, rtx_ssrcs, packets, count = self.kind, self.seen, self.rtx_ssrcs, self.packets, self._count
        unpack = _SEQ_TS_SSRC.unpack_from
        for i in range(n):
            length = lengths[i]
            start = i * udp.SIZE
            data = view[start:start + length]
            if length < 12 or not 127 < data[0] < 192 or 191 < data[1] < 224:
                protocol.datagram_received(bytes(data), rx.address(i))
                continue
            arrival = arrivals[i] or now
            seq, _, ssrc = unpack(data, 2)
            if twcc is not None and data[0] & 0x10:
                at = 12 + 4 * (data[0] & 0x0F)
                if length >= at + 8 and data[at] == 0xBE and data[at + 1] == 0xDE and (data[at + 2] or data[at + 3]) \
                        and data[at + 4] == first:
                    twcc.record(data[at + 5] << 8 | data[at + 6], arrival)
                else:
                    self._twcc(data, arrival)
            if ssrc not in kind:
                kind[ssrc] = -1
            if ssrc not in seen:
                self._new_ssrc(ssrc, data[1] & 0x7F)
            if ssrc in rtx_ssrcs:  # a retransmission: delivered (below), not a packet of the media's numbering
                self.octets += length
            else:
                count(ssrc, seq, length)
            index = kind[ssrc]
            self.sample += 1
            if index < 0 or self.sample % SAMPLE == 0 or (index != 3 and self.first_key is None):
                try:
                    plain = self.srtp.unprotect(bytes(data))
                except Exception:
                    self.errors += 1
                    continue
                magic, index, flags, _counter, sent = TRAILER.unpack_from(plain, len(plain) - TRAILER.size)
                if magic != MAGIC:
                    continue
                kind[ssrc] = index
                self.latencies.append(arrival - sent)
                if index != 3 and flags & 1 and self.first_key is None:
                    self.first_key = arrival
                    self.keyframe.set()
            if index >= 0:
                packets[index] += 1
            if index != 3 and self.first_video is None:
                self.first_video = arrival

    def _new_ssrc(self, ssrc: int, pt: int) -> None:
        """A browser's decoder starting on a video stream asks a keyframe (PLI); RTX streams are repairs."""
        self.seen.add(ssrc)
        if not self.media_ssrc:
            self.media_ssrc = ssrc
        if pt in self.rtx_pts:
            self.rtx_ssrcs.add(ssrc)
        elif pt in self.video_pts:
            self.plis.append(ssrc)

    def _twcc(self, data: memoryview, arrival: float) -> None:
        """Record the transport-wide sequence number of a packet (one-byte header extensions, RFC 8285)."""
        at = 12 + 4 * (data[0] & 0x0F)
        if len(data) < at + 4 or data[at] != 0xBE or data[at + 1] != 0xDE:
            return
        end = min(len(data), at + 4 + 4 * (data[at + 2] << 8 | data[at + 3]))
        at += 4
        while at < end:
            byte = data[at]
            if byte == 0:  # padding
                at += 1
                continue
            ident, length = byte >> 4, (byte & 0x0F) + 1
            if ident == 15:
                return
            if ident == self.twcc_id and length == 2 and at + 3 <= end:
                assert self.twcc is not None
                self.twcc.record(data[at + 1] << 8 | data[at + 2], arrival)
                return
            at += 1 + length

    def _count(self, ssrc: int, seq: int, size: int) -> None:
        """One packet of ssrc: received count, highest extended sequence number (gaps below it are loss), octets.

        A gap in a video stream's numbering is queued for a NACK, as a browser's receiver does."""
        state = self.ssrcs.get(ssrc)
        if state is None:
            state = self.ssrcs[ssrc] = [seq, seq, 0]
        else:
            highest = state[1]
            ext = highest + ((seq - (highest & 0xFFFF) + 0x8000) & 0xFFFF) - 0x8000
            if ext > highest:
                state[1] = ext
                if 1 < ext - highest <= MAX_NACK_GAP and ssrc in self.plis_sent:
                    self.nacks.setdefault(ssrc, []).extend(s & 0xFFFF for s in range(highest + 1, ext))
        state[2] += 1
        self.octets += size

    def _on_rtp(self, data: bytes, arrival: float) -> None:
        arrival += time.time() - time.monotonic()  # Peer gives the monotonic clock; figures use the wall clock
        if len(data) < 12 + TRAILER.size:
            return
        seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
        magic, index, flags, _counter, sent = TRAILER.unpack_from(data, len(data) - TRAILER.size)
        if magic != MAGIC:
            return
        self.packets[index] += 1
        self.kind[ssrc] = index
        self._count(ssrc, seq, len(data))
        if index != 3:
            if self.first_video is None:
                self.first_video = arrival
            if flags & 1 and self.first_key is None:
                self.first_key = arrival
                self.keyframe.set()
        self.sample += 1
        if self.sample % 4 == 0:  # a latency sample of every 4th packet keeps the lists small
            self.latencies.append(arrival - sent)

    async def report(self) -> None:
        blocks = []
        for ssrc, (base, highest, received) in self.ssrcs.items():
            expected = highest - base + 1
            lost = max(0, expected - received)
            # fraction lost since the previous report (RFC 3550 6.4.1), which the SFU's estimate reacts to
            last_expected, last_received = self.reported.get(ssrc, (0, 0))
            interval = expected - last_expected
            fraction = max(0, min(255, (interval - (received - last_received)) * 256 // interval)) if interval else 0
            self.reported[ssrc] = (expected, received)
            blocks.append(rtcp.ReportBlock(ssrc, fraction, lost, highest & 0xFFFFFFFF, 0, 0, 0))
        if blocks:
            await self.peer.send_rtcp(rtcp.build_rr(SUBSCRIBER_SSRC, blocks[:31]))
            self.feedback_sent["rr"] += 1

    async def flush(self) -> None:
        """Every POLL_S: the PLIs of streams that started, the NACKs of gaps seen, transport-wide-cc feedback."""
        for ssrc in self.plis:
            self.plis_sent.add(ssrc)
            await self.peer.send_rtcp(rtcp.build_pli(SUBSCRIBER_SSRC, ssrc))
            self.feedback_sent["pli"] += 1
        self.plis = []
        nacks, self.nacks = self.nacks, {}
        for ssrc, seqs in nacks.items():
            await self.peer.send_rtcp(rtcp.build_nack(SUBSCRIBER_SSRC, ssrc, seqs))
            self.feedback_sent["nack"] += 1
        if self.twcc is not None:
            packet = self.twcc.build(SUBSCRIBER_SSRC, self.media_ssrc)
            if packet is not None:
                await self.peer.send_rtcp(packet)
                self.feedback_sent["twcc"] += 1

    def snapshot(self) -> dict[str, Any]:
        expected = sum(h - b + 1 for b, h, _ in self.ssrcs.values())
        received = sum(r for _, _, r in self.ssrcs.values())
        return {"packets": list(self.packets), "octets": self.octets, "expected": expected, "received": received,
                "feedback": dict(self.feedback_sent), "twcc": self.twcc is not None}

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        await self.peer.close()


async def _worker_main(conn: Any) -> None:
    _client_log("worker")
    loop = asyncio.get_running_loop()
    # every subscriber keeps its signaling WebSocket open through this session: aiohttp's default limit of 100
    # connections would make the 101st join of a process wait forever
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    subs: list[Subscriber] = []
    pid = os.getpid()

    async def reports() -> None:
        while True:
            await asyncio.sleep(1)
            for s in list(subs):
                with contextlib.suppress(Exception):
                    await s.report()

    async def poll() -> None:
        """Every POLL_S, drain each subscriber socket with recvmmsg: RTP to its subscriber, the rest to aioice."""
        receiver = udp.BatchReceiver()
        while True:
            await asyncio.sleep(POLL_S)
            now = time.time()
            for fd, protocol, sub in list(POLLED):
                if sub.closed:
                    continue
                try:
                    while n := receiver.recv(fd):
                        sub.receive(receiver, n, now, protocol)
                        if n < udp.BATCH:
                            break
                except OSError:
                    sub.closed = True
            for s in list(subs):
                if not s.closed:
                    with contextlib.suppress(Exception):
                        await s.flush()

    reporter = asyncio.create_task(reports())
    poller = asyncio.create_task(poll())
    try:
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if command == "join":
                target, host, infos = arg
                new = [Subscriber(target, info, IceConfig(hosts=(host,))) for info in infos]
                subs.extend(new)
                sem = asyncio.Semaphore(4)

                async def join(s: Subscriber, sem: asyncio.Semaphore = sem) -> str | None:
                    """None, or why this subscriber could not join: an overloaded server is a figure too."""
                    async with sem:
                        try:
                            await s.join(session)
                            return None
                        except Exception as e:  # any failure to join is counted, not fatal
                            return f"{type(e).__name__}: {e}"[:200]
                        finally:
                            conn.send(("joined", None))

                failures = await asyncio.gather(*(join(s) for s in new))
                for s, why in zip(new, failures, strict=True):
                    if why is not None:
                        subs.remove(s)
                        s.closed = True
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(s.close(), 5)
                new = [s for s, why in zip(new, failures, strict=True) if why is None]
                # wait (bounded) for the first keyframe of every new subscriber
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(s.keyframe.wait() for s in new)), 20)
                conn.send(("ready", {"joins": [((s.first_video or 0) - s.started if s.first_video else None,
                                                (s.first_key or 0) - s.started if s.first_key else None)
                                               for s in new],
                                     "failed": [why for why in failures if why is not None]}))
            elif command == "probe":
                # issue 14/21 req "first keyframe for a joiner at 80% of the knee": one joiner at a time into the
                # loaded room (a wave of joiners measures the wave), each gone before the next comes
                target, host, infos = arg
                probes: list[dict[str, float | None]] = []
                for info in infos:
                    s = Subscriber(target, info, IceConfig(hosts=(host,)))
                    subs.append(s)
                    try:
                        await s.join(session)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(s.keyframe.wait(), 10)
                        probes.append(s.phases())
                    except Exception:  # a probe that could not join: no keyframe (the phases it reached)
                        probes.append(s.phases())
                    finally:
                        subs.remove(s)
                        s.closed = True
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(s.close(), 5)
                    await asyncio.sleep(0.5)
                conn.send(("probed", probes))
            elif command == "snapshot":
                for s in subs:
                    s.latencies = []
                conn.send(("snapshot", {"cpu": proc_cpu(pid, tree=False), "subs": [s.snapshot() for s in subs],
                                        "udp_drops": udp_drops(socket_inodes(pid))}))
            elif command == "finish":
                conn.send(("finish", {"cpu": proc_cpu(pid, tree=False), "subs": [s.snapshot() for s in subs],
                                      "udp_drops": udp_drops(socket_inodes(pid)),
                                      "errors": sum(s.errors for s in subs),
                                      "latencies": [x for s in subs for x in s.latencies]}))
            elif command == "quit":
                break
    finally:
        reporter.cancel()
        poller.cancel()
        for s in subs:
            s.closed = True
        for s in subs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.close(), 5)
        await session.close()


def worker(conn: Any) -> None:
    # asyncio's own loop: its datagram transports can pause reading, so the poller owns the sockets
    asyncio.run(_worker_main(conn))


# ---- orchestration --------------------------------------------------------------------------------------------


def progress(label: str, done: float, total: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r{label:<28} [{'#' * filled}{'.' * (width - filled)}] {done:.0f}/{total:.0f}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Bench:
    """One run against one target: its server, the teacher, the worker processes, a step per N."""

    def __init__(self, args: argparse.Namespace, target: str) -> None:
        self.args = args
        self.name = "classcast" if target.startswith("http") else target
        self.target = targets.make(self.name, args.ice_host, args.codec, url=target if target.startswith("http")
                                   else "", org=args.org or "", server_pid=args.server_pid or 0,
                                   tree=args.baseline or "")
        self.workers: list[tuple[Any, Any]] = []  # (process, conn)
        self.session: aiohttp.ClientSession | None = None
        self.publisher: Publisher | None = None
        self.joined = 0
        self.join_threads: dict[str, float] = {}  # the last step's join CPU by thread role (`thread_seconds`)
        self.failed = 0  # subscribers that could not join, over the whole run
        self.rss0 = 0
        self.probed = 0
        self.cap: CpuCap | None = None

    @property
    def pid(self) -> int:
        """The server process whose tree /proc figures cover (0: not on this machine)."""
        return self.target.pid

    async def ask(self, index: int, command: str, arg: Any = None) -> None:
        self.workers[index][1].send((command, arg))

    async def reply(self, index: int) -> tuple[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.workers[index][1].recv)

    async def run(self) -> dict[str, Any]:
        args = self.args
        ctx = mp.get_context("spawn")
        steps = ramp_steps(args)
        n_workers = max(1, min(args.workers, steps[-1]))
        for _ in range(n_workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child,), daemon=True)
            proc.start()
            self.workers.append((proc, parent))
        self.session = aiohttp.ClientSession()
        results: list[dict[str, Any]] = []
        aborted = None
        try:
            await self.target.start(self.session)
            if args.server_cpus:
                if not self.pid:
                    raise SystemExit("--server-cpus needs the server on this machine")
                server_cpus = cpucap.parse_cpus(args.server_cpus)
                cpucap.pin(os.getpid(), os.sched_getaffinity(0) - server_cpus)  # the bench, its workers...
                cpucap.pin(self.pid, server_cpus)  # ... and then the server (a child of the bench) apart
            if args.server_cpu:
                if not self.pid:
                    raise SystemExit("--server-cpu needs the server on this machine")
                self.cap = CpuCap(self.pid, args.server_cpu, self.name)
            self.publisher = Publisher(args.scenario, args.codec, IceConfig(hosts=(args.ice_host,)), args.pacing,
                                       args.keyframe_interval)
            await self.publisher.start(self.session, self.target)
            await asyncio.sleep(1)
            self.rss0 = proc_rss(self.pid) if self.pid else 0
            for n in steps:
                try:  # a step that cannot finish (an overloaded target) ends this target's run, not the comparison
                    results.append(await asyncio.wait_for(self.step(n), step_timeout(args)))
                except Exception as e:  # the steps measured so far are kept and reported
                    aborted = f"N={n}: {type(e).__name__}: {e}"[:300]
                    print(f"run stopped at {aborted}", file=sys.stderr, flush=True)
                    break
                print_row(results[-1])
                past = args.past_knee
                if past and len(results) >= past and not any(passes(r) for r in results[-past:]):
                    aborted = f"N={n}: {past} step(s) past the knee in a row (--past-knee)"
                    print(f"run stopped at {aborted}", file=sys.stderr, flush=True)
                    break
        finally:
            await self.close()
        return {"target": self.name, "scenario": args.scenario, "codec": args.codec, "ice_host": args.ice_host,
                "duration_s": args.duration,
                "workers": n_workers, "machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(["classcast-bench", *(a for a in sys.argv[1:] if a != INSIDE)]),
                "server_cpu_cap": args.server_cpu, "server_cpus": args.server_cpus, "pacing": args.pacing,
                "keyframe_interval_s": args.keyframe_interval, "steps": results,
                "aborted": aborted, "server": getattr(self.target, "settings", {}), **knee(results)}

    async def step(self, n: int) -> dict[str, Any]:
        assert self.publisher is not None
        assert self.session is not None
        add = n - self.joined
        joins, failed, join_cpu, join_seconds = await self.join(n)
        self.joined = n
        return await self.measure(n, add, joins, failed, join_cpu, join_seconds)

    async def join(self, n: int) -> tuple[list[tuple[float | None, float | None]], list[str], float | None, float]:
        """Up to n subscribers, all at once (a class starting): their first keyframes, failures, and the server's
        CPU for the joins."""
        assert self.session is not None
        add = n - self.joined
        infos = await self.target.join_infos(self.session, self.joined, n)
        per = [infos[i::len(self.workers)] for i in range(len(self.workers))]
        # issue 14 req 5: the server's CPU for this step's joins, all at once (signaling, ICE, DTLS, first copies)
        join_cpu0, join_t0 = proc_cpu(self.pid) if self.pid else 0.0, time.monotonic()
        join_threads0 = thread_cpu(self.pid) if self.pid else {}
        for i, part in enumerate(per):
            if part:
                await self.ask(i, "join", (self.name, self.args.ice_host, part))
        joins: list[tuple[float | None, float | None]] = []
        failed: list[str] = []
        done = 0
        progress(f"joining {self.joined}->{n}", 0, add)
        for i, part in enumerate(per):
            while part:
                kind, value = await self.reply(i)
                if kind == "joined":
                    done += 1
                    progress(f"joining {self.joined}->{n}", done, add)
                elif kind == "ready":
                    joins += value["joins"]
                    failed += value["failed"]
                    break
        join_cpu = (proc_cpu(self.pid) - join_cpu0) if self.pid else None
        # which process and thread spent it: the control process's loop, the SFU worker's loop, its reader
        spent = thread_seconds(join_threads0, thread_cpu(self.pid)) if self.pid else {}
        self.join_threads = {role: round(s, 3) for role, s in spent.items()}
        return joins, failed, join_cpu, time.monotonic() - join_t0

    async def measure(self, n: int, add: int, joins: list[tuple[float | None, float | None]], failed: list[str],
                      join_cpu: float | None, join_seconds: float) -> dict[str, Any]:
        """Settle, then the step's window: CPU, packets, loss, latency, memory; then the probe joiners."""
        assert self.publisher is not None
        await asyncio.sleep(self.args.settle)  # the newest subscribers' estimates ramp up to the top layer
        before = await self.snapshot("snapshot")
        cpu0, pub0, t0 = proc_cpu(self.pid) if self.pid else 0.0, self.publisher.counters(), time.monotonic()
        threads0 = thread_cpu(self.pid) if self.pid else {}
        kf0 = self.publisher.keyframe_requests
        server_socks = socket_inodes(self.pid) if self.pid else set()
        drops0 = udp_drops(server_socks)
        me0 = proc_cpu(os.getpid(), tree=False)
        # The publisher and the subscribers share the bench's CPUs: once those are saturated, a packet's send
        # stamp and the subscribers' feedback wait for the bench, and latency is no longer the server's alone.
        bench_cpus = os.sched_getaffinity(0)
        ticks0 = cpu_ticks(bench_cpus)
        spies = self.profile(n)
        for sec in range(int(self.args.duration)):
            progress(f"measuring N={n}", sec, self.args.duration)
            await asyncio.sleep(1)
        progress(f"measuring N={n}", self.args.duration, self.args.duration)
        elapsed = time.monotonic() - t0
        for spy in spies:
            spy.wait()
        cpu1 = proc_cpu(self.pid) if self.pid else 0.0
        threads1 = thread_cpu(self.pid) if self.pid else {}
        me1 = proc_cpu(os.getpid(), tree=False)
        bench_busy = busy_percent(ticks0, cpu_ticks(bench_cpus))
        after = await self.snapshot("finish")
        # read after the subscribers' counters, as pub0 was read after theirs: the same window for both
        pub1, kf1 = self.publisher.counters(), self.publisher.keyframe_requests
        rss = proc_rss(self.pid) if self.pid else 0
        probes = await self.probe(n)
        server_drops = udp_drops(server_socks) - drops0
        row = figures(n, elapsed, cpu1 - cpu0, before, after, pub0, pub1, kf1 - kf0, joins, rss, self.rss0,
                      me1 - me0, loadavg())
        # Where loss happened, if in a socket buffer: the server's sockets (its inbound from the teacher) or the
        # subscribers' (a client too slow to read: not the server's fault).
        if spies and self.pid:  # requirement 5 of issue 21: the server's CPU split into receive / send / rest
            from bench.profile_split import split
            path = os.path.join(self.args.profile, f"{self.name}-server-N{n}.txt")
            with contextlib.suppress(OSError, ValueError):
                row["server_cpu_split"] = split(path, PROFILE_RATE, cpu1 - cpu0,
                                                round(row["packets_out_per_s"] * elapsed))
        # requirement 5 of issue 21 without a profiler: classcast's forwarding is its worker's "cc-reader" thread,
        # its slow path the worker's "main" (the event loop), the control plane the server's
        row["server_threads_us_per_packet"] = thread_split(threads0, threads1,
                                                           round(row["packets_out_per_s"] * elapsed))
        probe_keys = [p["key"] for p in probes if p["key"] is not None]
        row["probe_joins"] = len(probes)
        row["probe_phases_s"] = probes  # each probe's signaled / ice / connected / video / key
        row["probe_first_keyframe_ms_p50"] = round(1000 * (percentile(probe_keys, 50) or 0)) if probe_keys else None
        row["probe_first_keyframe_ms_max"] = round(1000 * max(probe_keys)) if probe_keys else None
        row["probes_without_keyframe"] = len(probes) - len(probe_keys)
        self.failed += len(failed)
        row["joined_at_once"] = add
        row["join_server_cpu_s"] = round(join_cpu, 2) if join_cpu is not None else None
        row["join_server_threads_s"] = self.join_threads
        row["join_seconds"] = round(join_seconds, 2)
        row["joins_failed"] = len(failed)  # at this step; they stay out of every later figure
        row["subscribers_connected"] = n - self.failed
        row["join_failures_sample"] = failed[:3]
        row["server_udp_drops"] = server_drops
        row["bench_cpus"] = sorted(bench_cpus)
        row["bench_cpus_busy_percent"] = bench_busy
        row["bench_limited"] = bench_busy is not None and bench_busy >= BENCH_BUSY_LIMIT
        row["client_udp_drops"] = sum(w.get("udp_drops", 0) for w in after) - sum(w.get("udp_drops", 0)
                                                                                  for w in before)
        return row

    async def probe(self, n: int) -> list[dict[str, float | None]]:
        """`--probes` joiners, one at a time, while the step's N stay: the phases of each (`Subscriber.phases`),
        in seconds from the start of its join. Identities beyond any step's (uids from 10**6): none is reused by a
        step."""
        if not self.args.probes:
            return []
        first = 10**6 + self.probed
        self.probed += self.args.probes
        infos = await self.target.join_infos(self.session, first, first + self.args.probes)  # type: ignore[arg-type]
        await self.ask(0, "probe", (self.name, self.args.ice_host, infos))
        kind, value = await self.reply(0)
        assert kind == "probed", kind
        return value

    def profile(self, n: int) -> list[subprocess.Popen[bytes]]:
        """py-spy (sampling, from outside: the profiled process is not slowed) on the server and one worker."""
        if not self.args.profile:
            return []
        os.makedirs(self.args.profile, exist_ok=True)
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        targets = [("worker", self.workers[0][0].pid)]
        if self.pid:
            targets.insert(0, ("server", self.pid))
        # --subprocesses: the server's SFU worker processes (CLASSCAST_SFU_WORKERS) are where the media is
        return [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(self.args.duration)),
                                  "--rate", str(PROFILE_RATE), "--format", "raw", "--nonblocking",
                                  *(["--subprocesses"] if name == "server" else []),
                                  "--output", os.path.join(self.args.profile, f"{self.name}-{name}-N{n}.txt")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in targets]

    async def snapshot(self, command: str) -> list[dict[str, Any]]:
        for i in range(len(self.workers)):
            await self.ask(i, command)
        return [(await self.reply(i))[1] for i in range(len(self.workers))]

    async def close(self) -> None:
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.close()
        for i, (proc, _) in enumerate(self.workers):
            with contextlib.suppress(Exception):
                await self.ask(i, "quit")
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 15)
            if proc.is_alive():
                proc.kill()
        with contextlib.suppress(Exception):
            await self.target.close()
        if self.cap is not None:
            self.cap.release()
        if self.session is not None:
            await self.session.close()


def figures(n: int, elapsed: float, server_cpu: float, before: list[dict[str, Any]], after: list[dict[str, Any]],
            pub0: dict[str, int], pub1: dict[str, int], keyframe_requests: int,
            joins: list[tuple[float | None, float | None]], rss: int, rss0: int, publisher_cpu: float,
            load: list[float]) -> dict[str, Any]:
    subs0 = [s for w in before for s in w["subs"]]
    subs1 = [s for w in after for s in w["subs"]]
    client_cpu = sum(w["cpu"] for w in after) - sum(w["cpu"] for w in before)
    packets = octets = expected = received = 0
    per_stream = [0] * len(STREAMS)
    subs_detail: list[list[int]] = []
    worst = 0.0  # the most lossy subscriber's loss: a room's total can hide one worker's students (issue 15)
    should = 0
    coverage = 0.0
    published = {k: pub1[k] - pub0.get(k, 0) for k in pub1}
    for a, b in zip(subs0, subs1, strict=True):
        got = [y - x for x, y in zip(a["packets"], b["packets"], strict=True)]
        packets += sum(got)
        per_stream = [x + y for x, y in zip(per_stream, got, strict=True)]
        octets += b["octets"] - a["octets"]
        expected += b["expected"] - a["expected"]
        received += b["received"] - a["received"]
        if b["expected"] > a["expected"]:
            worst = max(worst, (b["expected"] - a["expected"] - (b["received"] - a["received"]))
                        / (b["expected"] - a["expected"]))
        subs_detail.append(got)
        # Coverage per kind: a subscriber may move between layers (each is the whole picture), so its video
        # coverage is the sum over layers of received / published; audio and screen are one stream each.
        kinds = [k for k in ([i for i in range(3) if STREAMS[i] in published], [3], [4])
                 if k and STREAMS[k[0]] in published]
        for kind in kinds:
            coverage += sum(got[i] / published[STREAMS[i]] for i in kind if published[STREAMS[i]])
            should += 1
    latencies = [x for w in after for x in w["latencies"]]
    lost = max(0, expected - received)
    first_video = [v for v, _ in joins if v is not None]
    first_key = [k for _, k in joins if k is not None]
    return {
        "subscribers": n,
        "seconds": round(elapsed, 2),
        "server_cpu_percent": round(100 * server_cpu / elapsed, 1),
        "cpu_us_per_packet": round(1e6 * server_cpu / packets, 1) if packets else None,
        "packets_out_per_s": round(packets / elapsed),
        "mbit_out_per_s": round(octets * 8 / elapsed / 1e6, 2),
        "loss_percent": round(100 * lost / expected, 3) if expected else None,
        "loss_percent_worst_subscriber": round(100 * worst, 3) if expected else None,
        "delivered_percent": round(100 * coverage / should, 1) if should else None,
        "latency_p50_ms": round(1000 * (percentile(latencies, 50) or 0), 2) if latencies else None,
        "latency_p99_ms": round(1000 * (percentile(latencies, 99) or 0), 2) if latencies else None,
        "first_video_ms_p50": round(1000 * (percentile(first_video, 50) or 0)) if first_video else None,
        "first_keyframe_ms_p50": round(1000 * (percentile(first_key, 50) or 0)) if first_key else None,
        "first_keyframe_ms_max": round(1000 * max(first_key)) if first_key else None,
        "joins_without_keyframe": sum(1 for _, k in joins if k is None),
        "server_rss_mb": round(rss / 2**20, 1),
        "server_rss_mb_before_subscribers": round(rss0 / 2**20, 1),
        "rss_per_subscriber_kb": round((rss - rss0) / 1024 / n, 1),
        "keyframe_requests_per_min": round(60 * keyframe_requests / elapsed, 1),
        "client_cpu_percent": round(100 * client_cpu / elapsed, 1),
        "client_cpu_per_subscriber_percent": round(100 * client_cpu / elapsed / n, 2),
        "client_to_server_cpu": round(client_cpu / server_cpu, 2) if server_cpu else None,
        "publisher_cpu_percent": round(100 * publisher_cpu / elapsed, 1),
        "published_packets_per_s": {k: round(v / elapsed) for k, v in published.items()},
        "received_packets_per_s": {k: round(v / elapsed) for k, v in zip(STREAMS, per_stream, strict=True) if v},
        "per_subscriber_sample": subs_detail[:3],
        # what the subscribers sent the server (per second, all of them): its cost counts in cpu_us_per_packet
        "feedback_per_s": {k: round(sum(b.get("feedback", {}).get(k, 0) - a.get("feedback", {}).get(k, 0)
                                        for a, b in zip(subs0, subs1, strict=True)) / elapsed, 1)
                           for k in ("rr", "twcc", "nack", "pli")},
        "feedback_total": {k: sum(b.get("feedback", {}).get(k, 0) for b in subs1)
                           for k in ("rr", "twcc", "nack", "pli")},
        "subscribers_with_twcc": sum(1 for b in subs1 if b.get("twcc")),
        "srtp_errors": sum(w.get("errors", 0) for w in after),
        "loadavg": load,
    }


KEEPS_UP_MS = 50  # a step whose median packet waits longer than this is past the knee (see knee)


def passes(r: dict[str, Any]) -> bool:
    """A step at or below the knee (see knee)."""
    return (r["loss_percent"] is not None and r["loss_percent"] < 1 and (r["delivered_percent"] or 0) > 95
            and not r.get("joins_failed")
            and (r.get("latency_p50_ms") is None or r["latency_p50_ms"] < KEEPS_UP_MS))


def knee(results: list[dict[str, Any]], at_80: dict[str, Any] | None = None) -> dict[str, Any]:
    """The knee: the largest N with loss under 1%, delivery over 95% and every join served (the issue's definition,
    plus joins: a server that turns students away is past its knee; plus a median latency under KEEPS_UP_MS: a
    server short of CPU first queues packets in its socket's megabytes of buffer, and an 8 s step ends before they
    overflow, so a capped server measured 0% loss with its median packet 1.3 s late; on a shared
    machine a noisy step below it may fail: first_failure names the smallest failing N), and subscribers per
    core from the server's CPU at the knee."""
    good = [r for r in results if passes(r)]
    bad = [r["subscribers"] for r in results if not passes(r)]
    if not good:
        return {"knee": None, "subscribers_per_core": None, "first_failure": min(bad, default=None)}
    best = max(good, key=lambda r: r["subscribers"])
    cores = max(best["server_cpu_percent"] / 100, 1e-9)
    # the targets "at 80% of the knee" (latency, first keyframe): the smallest passing step at or above it (a coarse
    # ramp gives a heavier load than 80%, never a lighter one that would flatter the figures), or the step measured
    # at exactly 80% on a fresh server after the ramp (--at-80, `at_80_percent`)
    near = at_80 or min((r for r in good if r["subscribers"] >= 0.8 * best["subscribers"]),
                        key=lambda r: r["subscribers"])
    near_figures = {"subscribers": near["subscribers"], "of_knee": round(near["subscribers"] / best["subscribers"], 2),
               "after_the_ramp": near is at_80, "passes": passes(near),
               **{k: near.get(k) for k in ("latency_p50_ms", "latency_p99_ms", "first_keyframe_ms_p50",
                                           "probe_first_keyframe_ms_p50", "loss_percent",
                                           "cpu_us_per_packet", "server_cpu_percent",
                                           "bench_cpus_busy_percent", "bench_limited")}}
    return {"knee": best["subscribers"], "subscribers_per_core": round(best["subscribers"] / cores, 1),
            "knee_is_last_step": best is results[-1], "first_failure": min(bad, default=None),
            "at_80_percent_of_knee": near_figures}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(), "kernel": platform.release()}


COLUMNS = (("N", "subscribers"), ("srv CPU%", "server_cpu_percent"), ("µs/pkt", "cpu_us_per_packet"),
           ("pkt/s out", "packets_out_per_s"), ("Mbit/s", "mbit_out_per_s"), ("loss%", "loss_percent"),
           ("deliv%", "delivered_percent"), ("lat p50 ms", "latency_p50_ms"), ("lat p99 ms", "latency_p99_ms"),
           ("1st video ms", "first_video_ms_p50"), ("1st key ms", "first_keyframe_ms_p50"),
           ("joiner key ms", "probe_first_keyframe_ms_p50"), ("RSS MB", "server_rss_mb"),
           ("RSS/sub KB", "rss_per_subscriber_kb"),
           ("KF req/min", "keyframe_requests_per_min"), ("client/srv CPU", "client_to_server_cpu"),
           ("join CPU s", "join_server_cpu_s"), ("join fail", "joins_failed"),
           ("bench CPU busy%", "bench_cpus_busy_percent"), ("load 1m", "loadavg"))


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "loadavg":
        return f"{value[0]:.2f}"
    return "-" if value is None else str(value)


def print_row(row: dict[str, Any]) -> None:
    print(" ".join(f"{k}={_cell(row, key)}" for k, key in COLUMNS), flush=True)
    if row.get("feedback_per_s"):
        print(f"  subscribers' RTCP per s: {row['feedback_per_s']}", flush=True)
    if row.get("server_threads_us_per_packet"):
        print(f"  server µs per forwarded packet by thread: {row['server_threads_us_per_packet']}", flush=True)
    if row.get("server_cpu_split", {}).get("us_per_packet"):
        print(f"  server µs per forwarded packet by part: {row['server_cpu_split']['us_per_packet']}", flush=True)


def table(result: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in result["steps"]:
        lines.append("| " + " | ".join(_cell(row, key) for _, key in COLUMNS) + " |")
    lines.append("")
    cap = f" (server capped to {result['server_cpu_cap']} of a core)" if result.get("server_cpu_cap") else ""
    lines.append(f"knee: {result['knee']} subscribers (loss < 1%, delivered > 95%){cap}; "
                 f"subscribers per core: {result['subscribers_per_core']}; "
                 f"first failing step: {result.get('first_failure')}")
    at_80 = result.get("at_80_percent_of_knee")
    if at_80 and (at_80.get("after_the_ramp") or not result.get("knee_is_last_step")):  # a knee the ramp reached
        lines.append(f"at {at_80['subscribers']} subscribers ({at_80['of_knee']:.0%} of the knee): latency p50 "
                     f"{at_80['latency_p50_ms']} ms, p99 {at_80['latency_p99_ms']} ms, first keyframe p50 "
                     f"{at_80['first_keyframe_ms_p50']} ms in the step's wave, "
                     f"{at_80.get('probe_first_keyframe_ms_p50')} ms for a joiner alone")
    limited = [row["subscribers"] for row in result["steps"] if row.get("bench_limited")]
    if limited:
        lines.append(f"the bench's own CPUs were {BENCH_BUSY_LIMIT}% busy or more at N={limited}: there the latency "
                     "and delivery figures include the bench's waits")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for result in results:
        xs = [r["subscribers"] for r in result["steps"]]
        label = f"{result['target']} ({result['scenario']})"
        ax1.plot(xs, [r["server_cpu_percent"] for r in result["steps"]], marker="o", label=label)
        ax2.plot(xs, [r["loss_percent"] or 0 for r in result["steps"]], marker="o", label=label)
    ax1.set(xlabel="subscribers", ylabel="server CPU % (100 = one core)", title="Server CPU")
    ax2.set(xlabel="subscribers", ylabel="loss %", title="Packet loss")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def ramp_steps(args: argparse.Namespace) -> list[int]:
    if args.ramp:
        start, step, top = (int(x) for x in args.ramp.split(":"))
        return list(range(start, top + 1, step))
    return [args.subscribers]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classcast-bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fanout", help="one publisher, N subscribers: the server's cost of fan-out")
    f.add_argument("--subscribers", type=int, default=10)
    f.add_argument("--ramp", help="START:STEP:MAX (subscribers), to find the knee")
    f.add_argument("--duration", type=float, default=10, help="seconds measured at each step")
    f.add_argument("--scenario", choices=SCENARIOS, default="lecture")
    f.add_argument("--target", default="classcast", help="classcast | janus | pion | pion-twcc | URL of a "
                                                                 "running classcast")
    f.add_argument("--compare", help="comma-separated other targets (janus, pion, pion-twcc): the same run against "
                                     "classcast and each of them, with the ratios of CPU per forwarded packet")
    f.add_argument("--codec", choices=cliplib.CODECS, help="the camera's codec (default: h264 for classcast "
                                                           "alone, vp8 when Janus or pion takes part)")
    f.add_argument("--baseline", help="a checkout of another classcast tree (e.g. `git worktree add /tmp/before "
                   "main`): also measured, as classcast-before, right after classcast")
    f.add_argument("--limit", action="store_true", help="also run bench/limit.c (SRTP protect + sendmmsg only, "
                   "in C) at each N and report each target's cost as a ratio to it")
    f.add_argument("--server-cpu", type=float, help="cap each server's process tree to this many cores (0.25: a "
                   "quarter of one; a cgroup quota, root only: bench/cpucap.py), so that its knee is reachable "
                   "before the bench's own subscribers run out of CPU")
    f.add_argument("--server-cpus", help="CPUs for each server's process tree (e.g. 1), the bench's own processes "
                   "on the others: the load generator never takes the server's CPU (bench/cpucap.py pin)")
    f.add_argument("--pacing", type=float, default=PACING_FACTOR, help="the teacher's pacer: video leaves at this "
                   "many times its bitrate, in 5 ms slices, as from a browser (0: each frame in one burst, as "
                   "runs before 2026-11-30 19:30 UTC did)")
    f.add_argument("--keyframe-interval", type=float, default=KEYFRAME_INTERVAL_S, help="the teacher's longest "
                   "time between keyframes when nobody asks one, in seconds: a browser's 100 s by default (3000 "
                   "frames); 3 sends the looped clip's keyframe every loop on all layers, as runs before "
                   "2026-12-01 did")
    f.add_argument("--probes", type=int, default=5, help="after each step's measurement, this many subscribers "
                   "join one at a time while the N stay: a joiner's first keyframe under that load")
    f.add_argument("--org", help="organization id (VF-ORG-ID) when --target is a URL")
    f.add_argument("--server-pid", type=int, help="with a URL: the server's process id on this machine, for the "
                                                   "CPU and RSS figures (left empty without it)")
    f.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2), help="subscriber processes")
    f.add_argument("--settle", type=float, default=5, help="seconds between joining and measuring")
    f.add_argument("--past-knee", type=int, default=0,
                   help="end a target's ramp after this many steps in a row past the knee (0: the whole ramp); "
                        "an overloaded server's steps take long and say nothing more")
    f.add_argument("--at-80", action="store_true", help="after each target's ramp, a fresh server with 80%% of "
                   "its knee (latency and a joiner's first keyframe at 80%% of the knee, in the same run)")
    f.add_argument("--profile", help="folder for py-spy profiles (collapsed stacks) of the server and a worker: "
                   "TARGET-server-N.txt, TARGET-worker-N.txt")
    f.add_argument("--json", help="write the figures here")
    f.add_argument("--plot", help="write a PNG chart of CPU and loss against N here")
    f.add_argument(INSIDE, action="store_true", help=argparse.SUPPRESS)  # set by the bench when it re-runs itself
    return p


INSIDE = "--inside-netns"


def plan(args: argparse.Namespace) -> list[str]:
    """The targets of this run, in order (classcast first in a comparison); refuses what cannot run here."""
    def known(name: str) -> str:
        if name not in targets.NAMES and not name.startswith("http"):
            raise SystemExit(f"unknown target {name!r}: one of {', '.join(targets.NAMES)} or a classcast URL")
        return name

    if args.compare:
        if args.target != "classcast":
            raise SystemExit("--compare runs classcast against the others: leave --target out")
        others = [known(n.strip()) for n in args.compare.split(",") if n.strip()]
        if not others or any(n not in targets.FOREIGN for n in others):
            raise SystemExit(f"--compare takes some of {','.join(targets.FOREIGN)}")
        return ["classcast", *([targets.BASELINE] if args.baseline else []), *others]
    if args.baseline:
        return [known(args.target), targets.BASELINE]
    return [known(args.target)]


def missing(names: list[str]) -> str | None:
    from bench.targets import janus, pion

    for name, check in (("janus", janus.missing), ("pion", pion.missing), ("pion-twcc", pion.missing)):
        if name in names and (why := check()):
            return why
    return netns.available() if any(n in targets.FOREIGN for n in names) else None


def at_80_percent(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """`--at-80`: once a target's ramp found its knee, a fresh server of that target gets 80% of the knee at once
    and that load is measured as the ramp's steps are (the figures issues 14 and 21 ask for at 80% of the knee;
    the ramp's own steps fall on 80% only by chance). A fresh server, not the ramp's with students sent away: a
    server the ramp took past its knee can stay behind for a while after the load drops (in a try, classcast
    still queued 2.5 s at 192 subscribers 28 s after 208 of 400 left, and Janus sent nothing at all), and that
    recovery is not the steady load the targets are about. Stored as `at_80_step`; `at_80_percent_of_knee` is then
    taken from it."""
    import copy

    import uvloop

    found = result["knee"]
    if not found or (n := round(0.8 * found)) in {r["subscribers"] for r in result["steps"]}:
        return  # no knee, or a ramp step is at 80% already (and is the figure)
    fresh = copy.copy(args)
    fresh.ramp, fresh.subscribers, fresh.past_knee = None, n, 0
    try:
        again = uvloop.run(asyncio.wait_for(Bench(fresh, result["target"]).run(), timeout=120 + step_timeout(args)))
    except Exception as e:  # the ramp's figures stand
        print(f"{result['target']} at 80% of its knee ({n}): {type(e).__name__}: {e}"[:300], file=sys.stderr)
        return
    if not again["steps"]:
        print(f"{result['target']} at 80% of its knee ({n}): {again.get('aborted')}", file=sys.stderr)
        return
    step = {**again["steps"][0], "of_knee": round(n / found, 2)}  # its row was printed by its run
    result["at_80_step"] = step
    result.update(knee(result["steps"], step))


def compare_table(results: list[dict[str, Any]]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """CPU per forwarded packet of each target at each N, and its ratio to classcast's (> 1: classcast is cheaper)."""
    base = {r["subscribers"]: r["cpu_us_per_packet"] for r in results[0]["steps"]}
    others = results[1:]
    head = ["N", "classcast µs/pkt"] + [f"{r['target']} {h}" for r in others for h in ("µs/pkt", "/ classcast")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios: dict[str, list[dict[str, Any]]] = {r["target"]: [] for r in others}
    for n, ours in base.items():
        cells = [str(n), str(ours)]
        for r in others:
            theirs = next((x["cpu_us_per_packet"] for x in r["steps"] if x["subscribers"] == n), None)
            ratio = round(theirs / ours, 2) if theirs and ours else None
            ratios[r["target"]].append({"subscribers": n, "cpu_us_per_packet": theirs, "classcast": ours,
                                        "ratio": ratio})
            cells += [str(theirs), "-" if ratio is None else f"{ratio}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), ratios


def _client_log(who: str) -> None:
    """CLASSCAST_BENCH_CLIENT_LOG=FILE: the bench's own peers log ICE/consent/DTLS state changes there (INFO)."""
    if path := os.environ.get("CLASSCAST_BENCH_CLIENT_LOG", ""):
        import logging

        logging.basicConfig(filename=path, level=logging.INFO,
                            format=f"%(asctime)s {who}-{os.getpid()} %(name)s %(levelname)s %(message)s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _client_log("main")
    if argv and argv[0] == "soak":
        from bench.soak import main as soak_main

        return soak_main(argv[1:])
    if argv and argv[0] != "fanout" and argv[0].startswith("-"):
        argv = ["fanout", *argv]  # `python -m bench.fanout --subscribers 5`
    args = parser().parse_args(argv)
    names = plan(args)
    foreign = any(n in targets.FOREIGN for n in names)
    args.codec = args.codec or ("vp8" if foreign else "h264")
    if foreign and not args.inside_netns:
        if why := missing(names):
            raise SystemExit(why)
        # every server and client of the run inside one private namespace, removed afterwards
        with netns.namespace(f"ccbench-{os.getpid()}") as ns:
            return subprocess.run(netns.command(ns, [sys.executable, "-m", "bench.fanout", *argv, INSIDE])).returncode
    args.ice_host = netns.ADDRESS if args.inside_netns else "127.0.0.1"
    import uvloop

    timeout = 120 + len(ramp_steps(args)) * (step_timeout(args) + 30)  # the steps time out first
    results = []
    for name in names:
        if len(names) > 1:
            print(f"\n## {name}", flush=True)
        results.append(uvloop.run(asyncio.wait_for(Bench(args, name).run(), timeout=timeout)))
        if args.at_80:
            at_80_percent(args, results[-1])
        print(table(results[-1]))
    output: dict[str, Any] = results[0]
    if len(results) > 1:
        text, ratios = compare_table(results)
        print("\nCPU per forwarded packet, each target against classcast (same run, same machine):")
        print(text)
        output = {"compare": results, "ratios": ratios, "command": results[0]["command"]}
    if args.limit:
        from bench import limit

        figures = limit.measure([r["subscribers"] for r in results[0]["steps"]], args.duration)
        print("\nThe physical limit (bench/limit.c: SRTP protect + sendmmsg only) and each target's cost against it:")
        print(limit.table(results, figures))
        output = {**output, "limit": figures}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(output, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
