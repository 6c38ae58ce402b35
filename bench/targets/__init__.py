"""The SFUs the fan-out benchmark can measure, behind one small interface.

Each target starts its server (or is given one), takes the teacher's offer and hands out what a subscriber needs
to join; a subscriber (in a worker process) joins through `subscribe`, which leaves its Peer negotiated. Media
itself never passes through this layer: publisher and subscribers are the same code for every target, so the
figures compare servers, not clients.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any, Protocol

import aiohttp

from sfu.peer import Peer

NAMES = ("classcast", "janus", "pion")
# classcast from another checkout (fanout --baseline PATH): the "before" of a before/after comparison
BASELINE = "classcast-before"


class Link(Protocol):
    """A participant's signaling, kept open while it is in the room (closing it leaves)."""

    async def close(self) -> None: ...


class Target(Protocol):
    name: str
    base: str  # where its API is
    pid: int  # the server process whose tree /proc figures cover (0: not on this machine)
    rids: tuple[str, ...]  # the teacher's simulcast layers in the order this server expects them in the offer

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the server (unless given one) and make the room."""

    async def publish(self, session: aiohttp.ClientSession, peer: Peer, sdp: str,
                      tracks: list[tuple[str, str]]) -> str:
        """The teacher's offer (tracks: (source, mid)) in, the server's answer out."""

    async def join_infos(self, session: aiohttp.ClientSession, first: int, last: int) -> list[Any]:
        """What subscribers first..last-1 need to join (picklable: it goes to the worker processes)."""

    async def close(self) -> None:
        """Leave as the teacher and stop the server if it was started here."""


def make(name: str, ice_host: str, codec: str, url: str = "", org: str = "", server_pid: int = 0,
         tree: str = "") -> Target:
    if name == "janus":
        from bench.targets.janus import JanusTarget

        return JanusTarget(ice_host, codec)
    if name == "pion":
        from bench.targets.pion import PionTarget

        return PionTarget(ice_host)
    from bench.targets.classcast import ClasscastTarget

    target = ClasscastTarget(ice_host, url, org, server_pid, tree=tree if name == BASELINE else "")
    target.name = name
    return target


async def subscribe(name: str, session: aiohttp.ClientSession, info: Any, peer: Peer) -> Link:
    """Join as a subscriber of target `name` (in a worker process): the peer is negotiated on return."""
    if name == "janus":
        from bench.targets.janus import subscribe as join
    elif name == "pion":
        from bench.targets.pion import subscribe as join
    else:
        from bench.targets.classcast import subscribe as join
    return await join(session, info, peer)


def stop(proc: subprocess.Popen[Any] | None) -> None:
    """A server process started by a target: asked to stop, killed if it will not within 10 s.

    SIGINT, not SIGTERM: classcast drains on SIGTERM (lets classes run on), while SIGINT stops it at once; Janus and
    the pion SFU stop on either."""
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
