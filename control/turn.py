"""The TURN relay: coturn's configuration, per-participant credentials, and the supervised coturn of `serve`.

Students behind a strict NAT or a school firewall that lets only HTTPS out cannot reach the SFU's UDP port; a TURN
relay next to the SFU can be reached over UDP 3478, TCP 3478 or TLS on 443 and forwards to the SFU from inside.

Both ways of running coturn are offered, from one generator so they cannot drift apart:
- `CLASSCAST_TURN=embedded`: `classcast serve` writes the configuration into the data dir and runs Debian's
  `turnserver` as a child, restarting it when it dies (like the recorder). One machine, one command: what a school
  running `make run` needs.
- `CLASSCAST_TURN=external`: coturn runs as its own service (another host, another address for TLS on 443, a
  district's shared relay); `classcast turn-config` prints the configuration to install there.

Credentials follow coturn's REST scheme (`use-auth-secret`): username `expiry:uid`, password
base64(HMAC-SHA1(secret, username)). coturn checks them with the shared secret alone, so classcast never talks to
coturn, and every participant gets its own credential that dies with its join token: no shared password a student
could pass on. Expiry bounds new allocations only: coturn checks an allocation's later requests (Refresh,
CreatePermission, ChannelBind) with the key it cached at Allocate (tests/net/test_turn.py shows both). What bounds
a removed participant is the peer list: the relay reaches only the SFU, which ends that participant's session at
removal, so whatever it still relays is dropped there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import grp
import hashlib
import hmac
import ipaddress
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("classcast.turn")

SECRET_FILE = "turn-secret"
CONFIG_FILE = "turnserver.conf"
TURNSERVER = "/usr/bin/turnserver"
REALM = "classcast"
# A client must refresh its allocation before this runs out (RFC 8656's default lifetime is 600 s as well): an
# abandoned allocation (a closed laptop) is gone within 10 minutes.
MAX_ALLOCATE_LIFETIME_S = 600
MODES = ("off", "embedded", "external")
USER_QUOTA = 12
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# A uid goes into the TURN username as it is when it is plain; anything else (spaces, non-ASCII, ':') is replaced by
# a digest, so coturn's username parsing and SASLprep never see it.
PLAIN_UID = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")


@dataclass(frozen=True)
class TurnConfig:
    """Where clients find the relay and how coturn is set up (docs/operations.md, "TURN relay")."""

    mode: str = "off"
    host: str = ""  # name or IP in the turn: URLs; empty: the announced address, else the first ICE host
    port: int = 3478  # UDP and TCP
    tls_port: int = 443  # 0: no TLS listener
    tls_cert: str = ""
    tls_key: str = ""
    secret: str = ""  # empty: generated once into DATA_DIR/turn-secret
    listen: tuple[str, ...] = ()  # coturn's listening (and relay) addresses; empty: every address
    external_ip: str = ""  # public[/private] when coturn sits behind a 1:1 NAT (cloud VMs)
    relay_port_min: int = 49152
    relay_port_max: int = 65535

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TurnConfig:
        mode = env.get("CLASSCAST_TURN", "").strip().lower() or "off"
        if mode not in MODES:
            raise SystemExit(f"CLASSCAST_TURN must be off, embedded or external, got {mode!r}")
        port = _port(env, "CLASSCAST_TURN_PORT", 3478, allow_zero=False)
        tls_port = _port(env, "CLASSCAST_TURN_TLS_PORT", 443, allow_zero=True)
        if tls_port == port:
            raise SystemExit("CLASSCAST_TURN_TLS_PORT must differ from CLASSCAST_TURN_PORT")
        listen = tuple(a.strip() for a in env.get("CLASSCAST_TURN_LISTEN", "").split(",") if a.strip())
        for address in listen:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise SystemExit(f"CLASSCAST_TURN_LISTEN: {address!r} is not an IP address") from None
        lo, hi = 49152, 65535
        if env.get("CLASSCAST_TURN_RELAY_PORTS"):
            a, _, b = env["CLASSCAST_TURN_RELAY_PORTS"].partition("-")
            try:
                lo, hi = int(a), int(b)
            except ValueError:
                lo = hi = 0
            if not 1024 <= lo <= hi <= 65535:
                raise SystemExit("CLASSCAST_TURN_RELAY_PORTS must be MIN-MAX within 1024-65535")
        cert, key = env.get("CLASSCAST_TURN_TLS_CERT", ""), env.get("CLASSCAST_TURN_TLS_KEY", "")
        if bool(cert) != bool(key):
            raise SystemExit("CLASSCAST_TURN_TLS_CERT and CLASSCAST_TURN_TLS_KEY go together")
        if cert and mode == "embedded" and tls_port:  # coturn would start without its TLS listener, saying so at
            for name, path in (("CLASSCAST_TURN_TLS_CERT", cert), ("CLASSCAST_TURN_TLS_KEY", key)):  # debug only
                if not (os.path.isfile(path) and os.access(path, os.R_OK)):
                    raise SystemExit(f"{name}: {path!r} is not a readable file")
        return cls(mode=mode, host=env.get("CLASSCAST_TURN_HOST", "").strip(), port=port, tls_port=tls_port,
                   tls_cert=cert, tls_key=key, secret=env.get("CLASSCAST_TURN_SECRET", ""), listen=listen,
                   external_ip=env.get("CLASSCAST_TURN_EXTERNAL_IP", "").strip(), relay_port_min=lo,
                   relay_port_max=hi)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def tls(self) -> bool:
        """TLS needs a certificate: without one the TLS listener is left out (and `doctor` says so)."""
        return bool(self.tls_port and self.tls_cert)


def _port(env: Mapping[str, str], name: str, default: int, *, allow_zero: bool) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a port number, got {raw!r}") from None
    if not (allow_zero and value == 0) and not 1 <= value <= 65535:
        raise SystemExit(f"{name} must be a port number (1-65535{', or 0 for none' if allow_zero else ''})")
    return value


def load_or_create_secret(turn: TurnConfig, data_dir: Path) -> str:
    """The configured secret, else the one kept in the data dir (made on first use, mode 0600), so `serve` and
    `turn-config` on the same machine agree without the operator choosing one."""
    if turn.secret:
        return turn.secret
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def turn_username(uid: str, expiry_s: int) -> str:
    if not PLAIN_UID.fullmatch(uid):
        uid = "u-" + hashlib.sha256(uid.encode("utf-8")).hexdigest()[:24]
    return f"{int(expiry_s)}:{uid}"


def turn_password(secret: str, username: str) -> str:
    """coturn's REST scheme: base64 of HMAC-SHA1 over the username, keyed by the shared secret."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def relay_host(turn: TurnConfig, ice: Any) -> str:
    """The name or address clients put in their turn: URLs."""
    if turn.host:
        return turn.host
    announced = getattr(ice, "announced", "") or ""  # CLASSCAST_ANNOUNCED_ADDRESS (issue 14), when present
    return announced or (ice.hosts[0] if ice.hosts else "127.0.0.1")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def relay_urls(turn: TurnConfig, ice: Any) -> list[str]:
    """Cheapest first: UDP, then TCP, then TLS (what a browser should try in that order)."""
    host = _url_host(relay_host(turn, ice))
    urls = [f"turn:{host}:{turn.port}?transport=udp", f"turn:{host}:{turn.port}?transport=tcp"]
    if turn.tls:
        urls.append(f"turns:{host}:{turn.tls_port}?transport=tcp")
    return urls


def ice_servers(turn: TurnConfig, ice: Any, secret: str, uid: str, expiry_s: int) -> list[dict[str, Any]]:
    """The `iceServers` of one participant's `joined`: the configured static servers, then the relay with a
    credential of its own that expires with the join token."""
    servers: list[dict[str, Any]] = [dict(s) for s in ice.servers]
    if turn.enabled:
        username = turn_username(uid, expiry_s)
        servers.append({"urls": relay_urls(turn, ice), "username": username,
                        "credential": turn_password(secret, username)})
    return servers


def relay_peers(ice: Any) -> list[str]:
    """The only addresses the relay may forward to: the SFU's own. A TURN server open to every peer would let any
    participant use it to reach the server's private network (or the internet) under the school's name."""
    peers = [*ice.hosts]
    announced = getattr(ice, "announced", "") or ""  # clients (and so the relay) send to this address (issue 14)
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(announced)
        peers.append(announced)
    return list(dict.fromkeys(peers))


def coturn_config(turn: TurnConfig, ice: Any, secret: str, *, log_file: str = "stdout",
                  pid_file: str = "", run_as: str = "") -> str:
    """turnserver.conf for this deployment."""
    lines = [
        "# coturn configuration written by classcast (control/turn.py); `classcast turn-config` prints it again.",
        "# Credentials are per participant (REST scheme): classcast signs them with the same static-auth-secret.",
        f"listening-port={turn.port}",
    ]
    if turn.tls:
        lines += [f"tls-listening-port={turn.tls_port}", f"cert={turn.tls_cert}", f"pkey={turn.tls_key}",
                  "no-tlsv1", "no-tlsv1_1", "no-dtls"]
    else:
        lines += ["no-tls", "no-dtls"]
    # No listening-ip: every address of the host.
    lines += [f"listening-ip={a}" for a in turn.listen]
    lines += [f"relay-ip={a}" for a in turn.listen]
    if turn.external_ip:
        lines.append(f"external-ip={turn.external_ip}")
    lines += [
        f"min-port={turn.relay_port_min}",
        f"max-port={turn.relay_port_max}",
        "fingerprint",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={REALM}",
        f"max-allocate-lifetime={MAX_ALLOCATE_LIFETIME_S}",
        "stale-nonce=600",
        # Allocations at once per participant (coturn counts the uid, whatever the expiry): a browser allocates once
        # per relay URL (3), and an ICE restart allocates again before the old ones expire. Enough, but not a pool.
        f"user-quota={USER_QUOTA}",
        "no-multicast-peers",
        "no-cli",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "response-origin-only-with-rfc5780",
        # Only the SFU may be reached through the relay (relay_peers).
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    for peer in relay_peers(ice):
        lines.append(f"allowed-peer-ip={peer}")
        if ipaddress.ip_address(peer).is_loopback:
            lines.append("allow-loopback-peers")
    lines.append(f"log-file={log_file}")
    lines.append("simple-log")
    if pid_file:
        lines.append(f"pidfile={pid_file}")
    if run_as:  # coturn binds its ports (443) as root, then drops to this user
        lines += [f"proc-user={run_as}", f"proc-group={run_as}"]
    return "\n".join(dict.fromkeys(lines)) + "\n"


class Relay:
    """coturn as a child of `classcast serve` (CLASSCAST_TURN=embedded), restarted when it dies.

    Why a child and not a system service: a school's one machine then needs nothing but `make run`, and coturn's
    secret and configuration come from the same settings as the credentials, so they cannot disagree."""

    RESTART_S = 1.0

    def __init__(self, turn: TurnConfig, ice: Any, data_dir: Path, *, executable: str = TURNSERVER) -> None:
        self.turn = turn
        self.ice = ice
        self.data_dir = data_dir
        self.executable = executable
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    def write_config(self) -> Path:
        """Mode 0600: the file holds the shared secret."""
        secret = load_or_create_secret(self.turn, self.data_dir)
        text = coturn_config(self.turn, self.ice, secret, pid_file=str(self.data_dir / "turnserver.pid"),
                             run_as=_unprivileged_user())
        path = self.config_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    async def start(self) -> None:
        if shutil.which(self.executable) is None:
            raise SystemExit(f"CLASSCAST_TURN=embedded needs coturn ({self.executable}): `make install` installs it")
        self.write_config()
        await self._spawn()
        self._task = asyncio.create_task(self._watch())

    async def _spawn(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.executable, "-c", str(self.config_path), "--no-cli",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        self.starts += 1
        log.info("coturn started (pid %d) on UDP/TCP %d%s", self.process.pid, self.turn.port,
                 f", TLS {self.turn.tls_port}" if self.turn.tls else "")

    async def _watch(self) -> None:
        while not self._stopping:
            process = self.process
            assert process is not None and process.stdout is not None
            async for raw in process.stdout:
                log.debug("coturn: %s", raw.decode("utf-8", "replace").rstrip())
            code = await process.wait()
            if self._stopping:
                return
            log.error("coturn exited with status %s; starting it again in %.0f s", code, self.RESTART_S)
            await asyncio.sleep(self.RESTART_S)
            if not self._stopping:
                await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _unprivileged_user() -> str:
    """Debian's coturn package makes the user `turnserver`: a server started as root runs the relay, a network-facing
    daemon, as that user once its ports are bound. Empty when not root (nothing to drop) or the user is missing."""
    if os.geteuid() != 0:
        return ""
    try:
        pwd.getpwnam("turnserver")
        grp.getgrnam("turnserver")
    except KeyError:
        return ""
    return "turnserver"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the server dies, however it dies (a crash, SIGKILL, a failed start),
    so a relay never outlives the classcast that owns its secret and ports."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def is_public_url(url: str) -> bool:
    """Whether a URL's host is something the internet can reach (a name, or a global address)."""
    host = urlsplit(url).hostname or ""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return host not in ("localhost",) and not host.endswith((".localhost", ".local", ".internal", ".lan"))


def is_private_address(address: str) -> bool:
    """Loopback, RFC 1918, link-local, CGNAT, benchmark (198.18/15) and the like: unreachable from the internet."""
    try:
        return not ipaddress.ip_address(address).is_global
    except ValueError:
        return address == "localhost" or address.endswith(".localhost")


def reachability_warnings(config: Any) -> list[str]:
    """What stops browsers outside the server's own network from getting media, for `classcast doctor` and the
    start of `classcast serve`. Only a deployment with a public URL is judged: a laptop demo on 127.0.0.1 is fine."""
    if not config.public_url or not is_public_url(config.public_url):
        return []
    ice, turn = config.ice, config.turn
    out: list[str] = []
    announced = getattr(ice, "announced", "") or ""
    media = [announced] if announced else list(ice.hosts)
    if all(is_private_address(a) for a in media):
        what = "CLASSCAST_ANNOUNCED_ADDRESS" if announced else "CLASSCAST_ICE_HOSTS"
        out.append(f"{what} is {', '.join(media)}, a loopback/private address, but CLASSCAST_PUBLIC_URL "
                   f"({config.public_url}) is public: browsers elsewhere cannot reach the media; announce the "
                   "server's public address")
    loopback_only = all(net.is_loopback for net in ice.allowed_networks)
    if loopback_only:
        out.append("CLASSCAST_ICE_ALLOWED_NETWORKS allows only loopback: every remote browser's candidates are "
                   "ignored; set it to 0.0.0.0/0,::/0 (or your clients' networks)")
    if not turn.enabled:
        out.append("CLASSCAST_TURN is off: students whose network blocks UDP (many schools) cannot get media; "
                   "set CLASSCAST_TURN=embedded (docs/operations.md, TURN relay)")
        return out
    host = relay_host(turn, ice)
    if is_private_address(host):
        out.append(f"the TURN relay is announced as {host}, a loopback/private address, while the public URL is "
                   "public: set CLASSCAST_TURN_HOST to its public name or address")
    if turn.tls_port and not turn.tls_cert:
        out.append("no TURN/TLS: CLASSCAST_TURN_TLS_CERT and CLASSCAST_TURN_TLS_KEY are not set, so students behind "
                   "firewalls that only let HTTPS out cannot connect")
    if turn.mode == "embedded" and shutil.which(TURNSERVER) is None:
        out.append(f"CLASSCAST_TURN=embedded but {TURNSERVER} is missing: `make install` installs coturn")
    if turn.mode == "embedded" and os.geteuid() != 0 and min(turn.port, turn.tls_port or 65535) < 1024:
        out.append("coturn cannot bind ports below 1024 without root or CAP_NET_BIND_SERVICE "
                   "(setcap cap_net_bind_service=+ep /usr/bin/turnserver), or choose CLASSCAST_TURN_TLS_PORT=5349")
    return out
