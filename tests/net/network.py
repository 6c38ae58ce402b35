"""A small internet of namespaces on this machine (issue 16), for tests that need clients on other networks.

    home 198.18.1.2 --[NAT]--+                         +-- 198.18.0.1  classcast (HTTP on 443, SFU)
                             |-- router 198.18.0.254 --|
    school 198.18.2.2 -[443]-+                         +-- 198.18.0.2  coturn (UDP/TCP 3478, TLS 443)

The router masquerades both networks behind 198.18.0.254 (a home NAT, a school NAT) and forwards from the school
only TCP to port 443, as firewalls that let only HTTPS out do. Every address is in 198.18.0.0/15 (RFC 2544's
benchmark range); no namespace has a route anywhere else, so nothing leaves this machine. nftables (Debian's
package, installed by `make test`) holds the rules, inside the router namespace only. Needs root, like `ip netns`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

SERVER, RELAY, ROUTER_WAN = "198.18.0.1", "198.18.0.2", "198.18.0.254"
HOME, HOME_GW = "198.18.1.2", "198.18.1.1"
SCHOOL, SCHOOL_GW = "198.18.2.2", "198.18.2.1"

# What the school's firewall lets out: TCP 443 only, as HTTPS-only networks do (tests/net/path_cost.py varies it).
SCHOOL_ALLOWS = "tcp dport 443"
RULES = """
table inet classcast_net {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "r-home" oifname "r-wan" accept
    iifname "r-school" oifname "r-wan" {school} accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100;
    oifname "r-wan" masquerade
  }}
}}
"""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why the network cannot be built here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: `make test` installs iproute2 and nftables"
    return None


@dataclass(frozen=True)
class Network:
    server: str
    router: str
    home: str
    school: str

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.server, self.router, self.home, self.school)

    def exec(self, namespace: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]


def _veth(ns_a: str, a: str, ns_b: str, b: str) -> None:
    tmp_a, tmp_b = f"v{secrets.token_hex(5)}", f"v{secrets.token_hex(5)}"  # made in the root ns, moved at once
    _run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    _run("ip", "link", "set", tmp_a, "netns", ns_a)
    _run("ip", "link", "set", tmp_b, "netns", ns_b)
    _run("ip", "-n", ns_a, "link", "set", tmp_a, "name", a)
    _run("ip", "-n", ns_b, "link", "set", tmp_b, "name", b)


def _addr(ns: str, dev: str, *cidrs: str) -> None:
    for cidr in cidrs:
        _run("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
    _run("ip", "-n", ns, "link", "set", dev, "up")


def create(prefix: str, school_allows: str = SCHOOL_ALLOWS) -> Network:
    net = Network(server=f"{prefix}-server", router=f"{prefix}-router", home=f"{prefix}-home",
                  school=f"{prefix}-school")
    for ns in net.namespaces:
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
    _veth(net.server, "s-wan", net.router, "r-wan")
    _veth(net.home, "h-lan", net.router, "r-home")
    _veth(net.school, "c-lan", net.router, "r-school")
    _addr(net.server, "s-wan", f"{SERVER}/24", f"{RELAY}/24")
    _addr(net.router, "r-wan", f"{ROUTER_WAN}/24")
    _addr(net.router, "r-home", f"{HOME_GW}/24")
    _addr(net.router, "r-school", f"{SCHOOL_GW}/24")
    _addr(net.home, "h-lan", f"{HOME}/24")
    _addr(net.school, "c-lan", f"{SCHOOL}/24")
    # Home and school send everything to their router; the server has no route beyond its own /24, so it can
    # answer the NAT's public address only, like a server on the internet.
    _run("ip", "-n", net.home, "route", "add", "default", "via", HOME_GW)
    _run("ip", "-n", net.school, "route", "add", "default", "via", SCHOOL_GW)
    # /proc/sys/net shows the writing process's namespace (no procps needed for sysctl).
    _run("ip", "netns", "exec", net.router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    subprocess.run(["ip", "netns", "exec", net.router, "nft", "-f", "-"], input=RULES.format(school=school_allows),
                   text=True, check=True, capture_output=True)
    return net


def delete(net: Network) -> None:
    """Ends whatever still runs inside (by pid), then removes the namespaces and so their devices and rules."""
    for ns in net.namespaces:
        pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        if pids:
            time.sleep(0.2)
        _run("ip", "netns", "delete", ns, check=False)


@contextlib.contextmanager
def network(prefix: str, school_allows: str = SCHOOL_ALLOWS) -> Iterator[Network]:
    net = Network(server=f"{prefix}-server", router=f"{prefix}-router", home=f"{prefix}-home",
                  school=f"{prefix}-school")
    delete(net)  # a previous run killed before its cleanup
    try:
        net = create(prefix, school_allows)
        yield net
    finally:
        delete(net)
