"""A student in a school that lets only HTTPS out watches a teacher who sits behind a home NAT (issue 16).

tests/net/network.py builds the namespaces, tests/net/stage.py runs the class on them: `classcast serve` in the
server namespace with CLASSCAST_TURN=embedded, so it starts coturn itself (UDP/TCP 3478, TLS 443 on a second
address, as a deployment that serves HTTPS on 443 must); the aiortc teacher (tests/net/teacher.py) publishes from
the home namespace through the NAT; headless Chromium in the school namespace opens the student's classroom link
and must get the teacher's video and audio through TURN over TLS, the only way out of that network. A credential
whose expiry has passed is refused by coturn there too. Everything is made and removed by the test; no address
outside 198.18.0.0/15 is used.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.turn import turn_password, turn_username
from tests.net import network
from tests.net.stage import PLAYING_JS, open_student, poll, school_browser, stage

# A peer connection of its own that only gathers: a relay candidate appears when coturn accepted the credential;
# otherwise Chromium reports an icecandidateerror with coturn's STUN error code.
GATHER_JS = """async ([url, username, credential]) => {
  const pc = new RTCPeerConnection({iceServers: [{urls: url, username, credential}], iceTransportPolicy: 'relay'});
  const relays = [], errors = [];
  pc.onicecandidateerror = (e) => errors.push(e.errorCode);
  pc.onicecandidate = (e) => { if (e.candidate && e.candidate.type === 'relay') relays.push(e.candidate.candidate); };
  pc.createDataChannel('probe');
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') done(); };
    setTimeout(done, 10000);
  });
  pc.close();
  return {relays, errors};
}"""


# The SDK's two pure functions, from the module the server serves: the order it gives RTCPeerConnection its ICE
# servers in, and the path it reads from a stats report (here made up, for the paths this network cannot show).
SDK_JS = """async () => {
  const sdk = await import('/sdk/classcast.js');
  const order = sdk.orderIceServers([
    {urls: ['turns:h:443?transport=tcp', 'turn:h:3478?transport=tcp', 'turn:h:3478?transport=udp'],
     username: 'u', credential: 'c'},
    {urls: 'stun:s:3478'}]);
  const report = (local) => new Map([
    ['T', {type: 'transport', selectedCandidatePairId: 'P'}],
    ['P', {type: 'candidate-pair', localCandidateId: 'L'}], ['L', {type: 'local-candidate', ...local}]]);
  return {order: order.map((s) => [s.urls, s.username || null]),
          types: [{candidateType: 'host', protocol: 'udp'}, {candidateType: 'prflx', protocol: 'tcp'},
                  {candidateType: 'relay', relayProtocol: 'udp'}, {candidateType: 'relay', relayProtocol: 'tcp'}]
                 .map((c) => sdk.connectionTypeOf(report(c))),
          none: sdk.connectionTypeOf(new Map())};
}"""


@pytest.fixture
async def net() -> AsyncIterator[network.Network]:
    reason = network.unavailable()
    assert reason is None, reason
    with network.network(f"cc{os.getpid() % 100000}") as made:
        yield made


async def test_a_student_behind_an_https_only_firewall_gets_the_class_through_turn_tls(
        net: network.Network, tmp_path: Path) -> None:
    async with stage(net, tmp_path) as cls:
        (relay,) = cls.teacher_ice_servers
        assert relay["urls"] == [f"turn:{network.RELAY}:3478?transport=udp",
                                 f"turn:{network.RELAY}:3478?transport=tcp",
                                 f"turns:{network.RELAY}:443?transport=tcp"]
        assert re.fullmatch(r"\d+:teacher", relay["username"])
        async with school_browser(net, tmp_path) as browser:
            page, console = await open_student(browser, cls.links[0])
            first = await poll(page, PLAYING_JS, console)
            await asyncio.sleep(2)
            later = await poll(page, PLAYING_JS, console)
            student = await _student_path(page)

            secret = (cls.data / "turn-secret").read_text().strip()
            url = f"turns:{network.RELAY}:443?transport=tcp"
            fresh = turn_username("probe", int(time.time()) + 600)
            expired = turn_username("probe", int(time.time()) - 10)
            accepted = await page.evaluate(GATHER_JS, [url, fresh, turn_password(secret, fresh)])
            refused = await page.evaluate(GATHER_JS, [url, expired, turn_password(secret, expired)])
            sdk = await page.evaluate(SDK_JS)
        coturn = int((cls.data / "turnserver.pid").read_text())
        assert _running(coturn)
    assert not _running(coturn), "coturn outlived the server that started it"

    # Video: the teacher's 320x240 picture, playing on; audio: the tone arrives with energy, not silence.
    assert (first["width"], first["height"]) == (320, 240), first
    assert later["time"] > first["time"] + 1.0, (first, later)
    assert later["samples"] > first["samples"] > 0 and later["audioEnergy"] > first["audioEnergy"] > 0, later
    # The path: Chromium's own relay candidate over TLS to coturn, coturn to the SFU's host candidate.
    assert later["local"]["type"] == "relay" and later["local"]["relayProtocol"] == "tls", later
    assert later["local"]["url"] == f"turns:{network.RELAY}:443?transport=tcp", later
    assert later["remote"] == {"type": "host", "address": network.SERVER}, later
    assert student == {"sdk": "relay-tls", "shown": "relay · TLS"}, student
    # coturn, reached through the same firewall: a valid credential gets a relay, an expired one is refused (401).
    assert accepted["relays"] and not accepted["errors"], accepted
    assert not refused["relays"] and 401 in refused["errors"], refused
    # The SDK tries the cheapest path first (UDP, then TCP, then TLS; each URL keeps its credential).
    assert sdk["order"] == [["turn:h:3478?transport=udp", "u"], ["stun:s:3478", None],
                            ["turn:h:3478?transport=tcp", "u"], ["turns:h:443?transport=tcp", "u"]], sdk
    assert sdk["types"] == ["direct-udp", "direct-tcp", "relay-udp", "relay-tcp"] and sdk["none"] is None, sdk


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _student_path(page: Any) -> dict[str, Any]:
    """What the SDK reports as the path (Room.stats().connectionType) and what the page's header shows."""
    return dict(await page.evaluate("""async () => ({
      sdk: (await window.classcastRoom.stats()).connectionType,
      shown: document.getElementById('net-path').textContent,
    })"""))


@pytest.mark.parametrize(("school_allows", "path"), [
    ("meta l4proto tcp", "relay-tcp"),  # a TCP-only network: TURN over TCP stands in for ICE-TCP (no TLS needed)
    ("ip daddr 198.18.0.0/24", "direct-udp"),  # an open network behind the school's NAT: no relay at all
])
async def test_the_student_ends_on_the_cheapest_path_its_network_allows(school_allows: str, path: str,
                                                                         tmp_path: Path) -> None:
    reason = network.unavailable()
    assert reason is None, reason
    with network.network(f"cp{os.getpid() % 100000}", school_allows) as net:
        async with stage(net, tmp_path) as cls, school_browser(net, tmp_path) as browser:
            page, console = await open_student(browser, cls.links[0])
            first = await poll(page, PLAYING_JS, console)
            await asyncio.sleep(1)
            later = await poll(page, PLAYING_JS, console)
            student = await _student_path(page)
    assert later["time"] > first["time"] and later["samples"] > first["samples"] > 0, (first, later)
    assert student["sdk"] == path, (student, later)
    if path == "direct-udp":  # straight to the SFU, seen through the school's NAT
        assert later["local"]["type"] in ("host", "srflx", "prflx") and later["remote"]["address"] == network.SERVER
