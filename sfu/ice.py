"""ICE configuration: which addresses and ports the SFU uses, which remote candidates it will talk to.

Media goes through one UDP port per process (`CLASSCAST_RTC_PORT`, sfu/rtcserver.py) unless
`CLASSCAST_ICE_PORT_RANGE` selects the per-connection mode (a socket per participant, gathered here).
Defaults keep everything on the loopback interface: the server gathers on 127.0.0.1 only, never contacts a
STUN or TURN server itself, and ignores remote candidates outside `CLASSCAST_ICE_ALLOWED_NETWORKS`, so a test
or a laptop demo never sends a packet off the machine. Deployments set the variables (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_RTC_PORT = 7882
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_address_or_host_name(value: str) -> bool:
    """An IP address, or a DNS name by RFC 1123 whose last label is not all digits: `1.5` or `10.0.0` is a mistyped
    address, not a name, and a browser given it as a candidate would look it up and fail quietly."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    name = value.removesuffix(".")
    labels = name.split(".")
    return (len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


@dataclass(frozen=True)
class IceConfig:
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port_min: int = 0
    port_max: int = 0
    # Handed to clients (browsers may need STUN/TURN); the server itself never uses them.
    servers: tuple[dict[str, Any], ...] = ()
    allowed_networks: tuple[IpNetwork, ...] = field(default_factory=lambda: LOOPBACK)
    # The single media port of the process (sfu/rtcserver.py); 0 = any free port. Unused in the per-connection
    # mode, which a port range selects (one aioice socket per connection, as before issue 14).
    rtc_port: int = DEFAULT_RTC_PORT
    # What candidates advertise instead of the listening addresses (1:1 NAT, published container port, LB).
    announced: str | None = None
    # Who reads the media port with the native engine: "thread" (the engine's reader thread: forwarding waits for
    # neither the event loop nor the GIL) or "loop" (the event loop, as with the Python engine).
    media_reader: str = "thread"
    # How many nice steps the reader thread runs above the event loop's thread (sfu/rtcserver.py
    # `prioritize_reader`); 0: the same priority.
    reader_priority: int = 5

    @property
    def single_port(self) -> bool:
        """One UDP port for all media (the default), unless CLASSCAST_ICE_PORT_RANGE asks for a port per
        connection."""
        return not self.port_min

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IceConfig:
        with _named("CLASSCAST_ICE_HOSTS"):
            hosts = tuple(h.strip() for h in (env.get("CLASSCAST_ICE_HOSTS") or "127.0.0.1").split(",") if h.strip())
            for h in hosts:
                ipaddress.ip_address(h)  # ValueError names the bad address
            if not hosts:
                raise ValueError("no address given")
        port_min = port_max = 0
        if env.get("CLASSCAST_ICE_PORT_RANGE"):
            lo, _, hi = env["CLASSCAST_ICE_PORT_RANGE"].partition("-")
            try:
                port_min, port_max = int(lo), int(hi)
            except ValueError:
                port_min = port_max = 0
            if not 1024 <= port_min <= port_max <= 65535:
                raise ValueError("CLASSCAST_ICE_PORT_RANGE must be MIN-MAX within 1024-65535")
        with _named("CLASSCAST_ICE_SERVERS"):
            servers = tuple(json.loads(env["CLASSCAST_ICE_SERVERS"])) if env.get("CLASSCAST_ICE_SERVERS") else ()
        if not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise ValueError('CLASSCAST_ICE_SERVERS must be a JSON list of {"urls": ...} objects')
        networks = env.get("CLASSCAST_ICE_ALLOWED_NETWORKS")
        with _named("CLASSCAST_ICE_ALLOWED_NETWORKS"):
            allowed = (tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip())
                       if networks else LOOPBACK)
            if not allowed:  # " " allowed nothing: every candidate refused, quietly
                raise ValueError("no network given")
        rtc_port = DEFAULT_RTC_PORT
        if env.get("CLASSCAST_RTC_PORT", "").strip():
            try:
                rtc_port = int(env["CLASSCAST_RTC_PORT"])
            except ValueError:
                rtc_port = -1
            if not (rtc_port == 0 or 1024 <= rtc_port <= 65535):
                raise ValueError("CLASSCAST_RTC_PORT must be a UDP port within 1024-65535 (or 0: any free port)")
        announced = env.get("CLASSCAST_ANNOUNCED_ADDRESS", "").strip() or None
        if announced is not None and not is_address_or_host_name(announced):
            raise ValueError(f"CLASSCAST_ANNOUNCED_ADDRESS must be one IP address or host name, got {announced!r}")
        if not port_min and announced is None and any(ipaddress.ip_address(h).is_unspecified for h in hosts):
            raise ValueError("listening on every address (CLASSCAST_ICE_HOSTS=0.0.0.0 or ::) needs "
                             "CLASSCAST_ANNOUNCED_ADDRESS: the address clients reach the media port at")
        media_reader = env.get("CLASSCAST_MEDIA_READER", "").strip().lower() or "thread"
        if media_reader not in ("thread", "loop"):
            raise ValueError("CLASSCAST_MEDIA_READER must be thread or loop")
        priority = env.get("CLASSCAST_READER_PRIORITY", "").strip() or "5"
        if not priority.isdigit() or int(priority) > 19:
            raise ValueError("CLASSCAST_READER_PRIORITY must be a whole number of nice steps from 0 to 19")
        return cls(hosts=hosts, port_min=port_min, port_max=port_max, servers=servers, allowed_networks=allowed,
                   rtc_port=rtc_port, announced=announced, media_reader=media_reader, reader_priority=int(priority))

    def allows(self, address: str) -> bool:
        """Only literal IPs inside the allowed networks: mDNS names and the like are refused."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.allowed_networks if net.version == ip.version)


@contextlib.contextmanager
def _named(setting: str) -> Iterator[None]:
    """A setting's parse error names the setting: "'1.2.3' does not appear to be an IPv4 or IPv6 address" did not."""
    try:
        yield
    except (ValueError, TypeError) as exc:  # TypeError: CLASSCAST_ICE_SERVERS=5, JSON but not a list
        raise ValueError(f"{setting}: {exc}") from None


def candidate_address(candidate_line: str) -> str | None:
    """The connection address of an SDP `candidate:` attribute (with or without the `a=` prefix)."""
    parts = candidate_line.removeprefix("a=").split()
    return parts[4] if len(parts) >= 8 else None


def filter_sdp_candidates(sdp: str, config: IceConfig) -> tuple[str, int]:
    """Drops remote candidates the server must not contact; returns the SDP and how many were dropped."""
    kept, dropped = [], 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            address = candidate_address(line)
            if address is None or not config.allows(address):
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


async def gather_host_candidates(connection: Connection, component: int, config: IceConfig) -> list[Candidate]:
    """Host candidates on the configured addresses and port range only (aioice offers neither option)."""
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    for address in config.hosts:
        protocol = await _bind(loop, connection, address, config)
        if protocol is None:
            continue
        _grow_buffers(protocol.transport.get_extra_info("socket"))
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
            priority=candidate_priority(component, "host"), host=host, port=port, type="host",
        )
        connection._protocols.append(protocol)  # aioice reads and closes its protocols from this list
        candidates.append(protocol.local_candidate)
    return candidates


SOCKET_BUFFER = 4 * 1024 * 1024


def _grow_buffers(sock: socket.socket | None) -> None:
    """Media sockets get 4 MiB buffers (the kernel default is about 200 KiB): a burst of packets arriving while the
    event loop fans out the previous ones is queued, not dropped (the fan-out benchmark saw the loss start there).
    As root the limit is forced past net.core.rmem_max; otherwise the kernel caps it at that maximum."""
    if sock is None:
        return
    for forced, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                          (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced if forced is not None else plain, SOCKET_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


async def _bind(loop: asyncio.AbstractEventLoop, connection: Connection, address: str,
                config: IceConfig) -> StunProtocol | None:
    if not config.port_min:
        ports: list[int] = [0]
    else:
        ports = list(range(config.port_min, config.port_max + 1))
        start = random.randrange(len(ports))
        ports = ports[start:] + ports[:start]
    for port in ports:
        try:
            _transport, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(connection), local_addr=(address, port)
            )
            return protocol
        except OSError:
            continue
    return None
