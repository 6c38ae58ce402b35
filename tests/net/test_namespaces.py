"""A student in a school that lets only HTTPS out watches a teacher who sits behind a home NAT (issue 16).

tests/net/network.py builds the namespaces. `classcast serve` runs in the server namespace with
CLASSCAST_TURN=embedded, so it starts coturn itself (UDP/TCP 3478, TLS 443 on a second address, as a deployment
that serves HTTPS on 443 must). The aiortc teacher (tests/net/teacher.py) publishes from the home namespace through
the NAT; headless Chromium in the school namespace opens the student's classroom link and must get the teacher's
video and audio through TURN over TLS, the only way out of that network. A credential whose expiry has passed is
refused by coturn there too. Everything is made and removed by the test; no address outside 198.18.0.0/15 is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import async_playwright

from control.turn import turn_password, turn_username
from tests.e2e.conftest import CHROMIUM, FLAGS
from tests.net import network

REPO = Path(__file__).resolve().parents[2]
STEP_S = 30.0  # each step (start, join, first frame...) is bounded; the whole test takes about 15 s here


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the relay's address (a deployment uses its CA-signed one for its name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, network.RELAY)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(network.RELAY))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def net() -> AsyncIterator[network.Network]:
    reason = network.unavailable()
    assert reason is None, reason
    with network.network(f"cc{os.getpid() % 100000}") as made:
        yield made


async def _line(stream: asyncio.StreamReader, what: str, pattern: str = "") -> str:
    """The next stdout line (matching `pattern`) within STEP_S."""
    async def read() -> str:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"{what} ended before printing what the test waits for")
            line = raw.decode()
            if re.search(pattern, line):
                return line
    return await asyncio.wait_for(read(), STEP_S)


async def _stop(process: asyncio.subprocess.Process, sig: int) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


PLAYING_JS = """async () => {
  const v = document.getElementById('camera-video');
  if (!v || !v.videoWidth || v.currentTime < 0.5) return null;
  const room = window.classcastRoom;
  const stats = await room.pc.getStats();
  let audio = null, pair = null;
  stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s; });
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!audio || !pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
          audioEnergy: audio.totalAudioEnergy, samples: audio.totalSamplesReceived,
          local: {type: local.candidateType, relayProtocol: local.relayProtocol, url: local.url,
                  address: local.address},
          remote: {type: remote.candidateType, address: remote.address}};
}"""

DIAGNOSIS_JS = """async () => {
  const room = window.classcastRoom;
  if (!room || !room.pc) return 'no peer connection';
  const stats = await room.pc.getStats(), out = [];
  stats.forEach((s) => {
    if (s.type === 'local-candidate' || s.type === 'remote-candidate') {
      out.push(`${s.type} ${s.candidateType} ${s.address}:${s.port} ${s.relayProtocol || s.protocol}`);
    }
    if (s.type === 'candidate-pair') out.push(`pair ${s.state} nominated=${s.nominated}`);
  });
  const v = document.getElementById('camera-video');
  const pc = room.pc;
  return `state=${room.state} pc=${pc.connectionState}/${pc.iceConnectionState} video=${v && v.videoWidth} ${out}`;
}"""

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


async def test_a_student_behind_an_https_only_firewall_gets_the_class_through_turn_tls(
        net: network.Network, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLASSCAST_DATA_DIR": str(data),
           "CLASSCAST_HOST": network.SERVER, "CLASSCAST_PORT": "443",
           "CLASSCAST_PUBLIC_URL": f"http://{network.SERVER}:443", "CLASSCAST_LLM_BACKEND": "fake",
           # The SFU gathers on the server's address and talks to remote candidates of this private internet only.
           "CLASSCAST_ICE_HOSTS": network.SERVER, "CLASSCAST_ICE_ALLOWED_NETWORKS": "198.18.0.0/15",
           "CLASSCAST_TURN": "embedded", "CLASSCAST_TURN_HOST": network.RELAY,
           "CLASSCAST_TURN_LISTEN": network.RELAY, "CLASSCAST_TURN_TLS_PORT": "443",
           "CLASSCAST_TURN_TLS_CERT": str(cert), "CLASSCAST_TURN_TLS_KEY": str(key),
           "CLASSCAST_TURN_RELAY_PORTS": "50000-50100"}
    log = (tmp_path / "serve.log").open("w")
    server = await asyncio.create_subprocess_exec(
        *net.exec(net.server, [sys.executable, "-m", "control.cli", "serve", "--log-level", "DEBUG"]), env=env,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=log)
    teacher: asyncio.subprocess.Process | None = None
    try:
        assert server.stdout is not None
        banner = await _line(server.stdout, "classcast serve", r"Demo organization")
        org = re.search(r": ([A-Za-z0-9]{16})", banner)
        assert org, banner
        base = f"http://{network.SERVER}:443"

        teacher = await asyncio.create_subprocess_exec(
            *net.exec(net.home, [sys.executable, "-m", "tests.net.teacher", "--base", base, "--org", org.group(1),
                                 "--address", network.HOME]),
            env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "teacher.log").open("w"))
        assert teacher.stdout is not None
        hello = json.loads(await _line(teacher.stdout, "the teacher", r"^\{"))
        (relay,) = hello["iceServers"]
        assert relay["urls"] == [f"turn:{network.RELAY}:3478?transport=udp", f"turn:{network.RELAY}:3478?transport=tcp",
                                 f"turns:{network.RELAY}:443?transport=tcp"]
        assert re.fullmatch(r"\d+:teacher", relay["username"])

        # Chromium runs in the school namespace: Playwright starts this wrapper instead of the browser itself.
        wrapper = tmp_path / "chromium-in-school"
        wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {net.school} {CHROMIUM} \"$@\"\n")
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        # The relay's certificate is self-signed here; a deployment's is signed by a CA browsers trust.
        flags = [f for f in FLAGS if f != "--allow-loopback-in-peer-connection"] + ["--ignore-certificate-errors"]
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(wrapper), args=flags,
                                              ignore_default_args=["--headless"])
            try:
                context = await browser.new_context(bypass_csp=True)
                page = await context.new_page()
                console: list[str] = []  # shown when the page does not play
                page.on("console", lambda m: console.append(m.text))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                await page.goto(hello["iframeUrl"])
                first = await _poll(page, PLAYING_JS, console)
                await asyncio.sleep(2)
                later = await _poll(page, PLAYING_JS, console)
                student = await _student_path(page)

                secret = (data / "turn-secret").read_text().strip()
                url = f"turns:{network.RELAY}:443?transport=tcp"
                fresh = turn_username("probe", int(time.time()) + 600)
                expired = turn_username("probe", int(time.time()) - 10)
                accepted = await page.evaluate(GATHER_JS, [url, fresh, turn_password(secret, fresh)])
                refused = await page.evaluate(GATHER_JS, [url, expired, turn_password(secret, expired)])
            finally:
                await browser.close()
    finally:
        if teacher is not None:
            if teacher.stdin is not None:
                teacher.stdin.close()
            await _stop(teacher, 15)
        await _stop(server, 2)  # SIGINT: stop at once (SIGTERM would drain)
        log.close()

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


async def _poll(page: Any, script: str, console: list[str]) -> dict[str, Any]:
    """The first non-null result of an async page function, within STEP_S (wait_for_function does not await)."""
    deadline = time.monotonic() + STEP_S
    while time.monotonic() < deadline:
        result = await page.evaluate(script)
        if result is not None:
            return dict(result)
        await asyncio.sleep(0.5)
    diagnosis = await page.evaluate(DIAGNOSIS_JS)
    raise AssertionError(f"the student's page did not play within {STEP_S:.0f} s; {diagnosis}; "
                         f"console: {console[-20:]}")


async def _student_path(page: Any) -> dict[str, Any]:
    """What the SDK reports as the path (Room.stats().connectionType) and what the page's header shows."""
    return dict(await page.evaluate("""async () => ({
      sdk: (await window.classcastRoom.stats()).connectionType,
      shown: document.getElementById('net-path').textContent,
    })"""))
