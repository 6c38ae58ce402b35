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

from sfu.hdrext import URI_TWCC
from sfu.peer import Peer

NAMES = ("classcast", "janus", "pion", "pion-twcc")
# the servers that are not classcast: built here from Debian's packages, run in a network namespace
FOREIGN = ("janus", "pion", "pion-twcc")
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
    if name in ("pion", "pion-twcc"):
        from bench.targets.pion import PionTarget

        return PionTarget(ice_host, twcc=name == "pion-twcc")
    from bench.targets.classcast import ClasscastTarget

    target = ClasscastTarget(ice_host, url, org, server_pid, tree=tree if name == BASELINE else "")
    target.name = name
    return target


def browser_answer(offer: str, answer: str) -> str:
    """aiortc's answer made to say yes to transport-wide-cc where the server offered it, as Chrome's does.

    aiortc neither knows the extension nor its feedback, so a raw aiortc subscriber would never send TWCC feedback
    and the servers would not do the work they do for browsers (stamping, reading feedback). Per m-section (the
    answer's are in the offer's order, RFC 8829): the offer's extension id, and `a=rtcp-fb:PT transport-cc` for
    each answered payload type the offer asked it for.
    """
    def sections(sdp: str) -> list[list[str]]:
        out: list[list[str]] = [[]]
        for line in sdp.splitlines():
            if line.startswith("m="):
                out.append([])
            out[-1].append(line)
        return out

    offered, answered = sections(offer), sections(answer)
    result = answered[0]
    for i, lines in enumerate(answered[1:], start=1):
        theirs = offered[i] if i < len(offered) else []
        ext = next((line for line in theirs if line.startswith("a=extmap:") and URI_TWCC in line), None)
        if ext is None or any(URI_TWCC in line for line in lines) or lines[0].split(" ")[1] == "0":
            result += lines
            continue
        ident = ext[9:].split(" ", 1)[0].split("/")[0]
        fb = {line[10:].split(" ", 1)[0] for line in theirs if line.startswith("a=rtcp-fb:") and
              line.endswith(" transport-cc")}
        have = {line for line in lines if line.startswith("a=rtcp-fb:")}
        extra = [f"a=extmap:{ident} {URI_TWCC}"] + [f"a=rtcp-fb:{pt} transport-cc" for pt in lines[0].split(" ")[3:]
                                                     if pt in fb and f"a=rtcp-fb:{pt} transport-cc" not in have]
        at = max((j for j, line in enumerate(lines) if line.startswith(("a=extmap:", "a=rtcp-fb:", "a=rtpmap:"))),
                 default=len(lines) - 1)
        result += lines[:at + 1] + extra + lines[at + 1:]
    return "\r\n".join(result) + "\r\n"


async def subscribe(name: str, session: aiohttp.ClientSession, info: Any, peer: Peer) -> Link:
    """Join as a subscriber of target `name` (in a worker process): the peer is negotiated on return.

    The answer goes through `browser_answer` in every target (transport-wide-cc accepted as a browser would)."""
    if name == "janus":
        from bench.targets.janus import subscribe as join
    elif name in ("pion", "pion-twcc"):
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
