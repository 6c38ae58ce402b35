"""A private network namespace for comparisons with other SFUs.

Janus (libnice) skips loopback interfaces when it gathers candidates, so a run that compares it must give every
server and client a non-loopback address that is still private to this machine. The bench makes a network
namespace holding one device with a benchmark address (198.18.0.0/15 is reserved for benchmarking, RFC 2544) and
runs itself, the servers and the subscriber processes inside it; nothing in the namespace has a route out, so no
packet leaves it. A dummy device is asked for first; kernels built without it (some VMs) get a veth pair whose
both ends stay inside the namespace. The namespace is deleted afterwards, also when the run fails.

Needs CAP_SYS_ADMIN (root), like `ip netns` itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

ADDRESS = "198.18.0.1"
PREFIX = 24


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def available() -> str | None:
    """Why a namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "comparing with other SFUs needs root: the bench makes a network namespace (ip netns add)"
    try:
        _ip("-V")
    except FileNotFoundError:
        return "the `ip` command (Debian package iproute2) is missing"
    return None


def create(name: str) -> None:
    """The namespace `name`, with lo and one device holding ADDRESS/PREFIX, both up."""
    _ip("netns", "delete", name, check=False)  # a previous run killed before its cleanup
    _ip("netns", "add", name)
    try:
        if _ip("-n", name, "link", "add", "bench0", "type", "dummy", check=False).returncode != 0:
            _ip("-n", name, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1")
            _ip("-n", name, "link", "set", "bench1", "up")
        _ip("-n", name, "addr", "add", f"{ADDRESS}/{PREFIX}", "dev", "bench0")
        _ip("-n", name, "link", "set", "bench0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        delete(name)
        raise RuntimeError(f"could not set up network namespace {name}: {e.stderr.strip()}") from e


def delete(name: str) -> None:
    _ip("netns", "delete", name, check=False)


def command(name: str, argv: list[str]) -> list[str]:
    """argv run inside the namespace."""
    return ["ip", "netns", "exec", name, *argv]


@contextlib.contextmanager
def namespace(name: str) -> Iterator[str]:
    create(name)
    try:
        yield name
    finally:
        delete(name)
