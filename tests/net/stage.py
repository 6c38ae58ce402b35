"""The class on the namespaces of tests/net/network.py: `classcast serve` with its embedded coturn in the server
namespace, the aiortc teacher in the home namespace, Chromium in the school namespace. Shared by the test
(tests/net/test_namespaces.py) and the path-cost measurement (tests/net/path_cost.py)."""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import Browser, async_playwright

from tests.e2e.conftest import CHROMIUM, FLAGS
from tests.net import network

REPO = Path(__file__).resolve().parents[2]
STEP_S = 30.0  # each step (start, join, first frame...) is bounded


def certificate(directory: Path) -> tuple[Path, Path]:
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


async def line(stream: asyncio.StreamReader, what: str, pattern: str = "") -> str:
    """The next stdout line (matching `pattern`) within STEP_S."""
    async def read() -> str:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"{what} ended before printing what the test waits for")
            text = raw.decode()
            if re.search(pattern, text):
                return text
    return await asyncio.wait_for(read(), STEP_S)


async def stop(process: asyncio.subprocess.Process, sig: int) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass
class Stage:
    base: str
    data: Path
    server: asyncio.subprocess.Process
    teacher: asyncio.subprocess.Process
    links: list[str]  # the students' classroom links (iframeUrl)
    teacher_ice_servers: list[dict[str, Any]]


@contextlib.asynccontextmanager
async def stage(net: network.Network, tmp_path: Path, *, students: int = 1,
                video: str = "320x240x15", noise: bool = False) -> AsyncIterator[Stage]:
    cert, key = certificate(tmp_path)
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
    teacher_log = (tmp_path / "teacher.log").open("w")
    server = await asyncio.create_subprocess_exec(
        *net.exec(net.server, [sys.executable, "-m", "control.cli", "serve", "--log-level", "DEBUG"]), env=env,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=log)
    teacher: asyncio.subprocess.Process | None = None
    try:
        assert server.stdout is not None
        banner = await line(server.stdout, "classcast serve", r"Demo organization")
        org = re.search(r": ([A-Za-z0-9]{16})", banner)
        assert org, banner
        base = f"http://{network.SERVER}:443"
        teacher = await asyncio.create_subprocess_exec(
            *net.exec(net.home, [sys.executable, "-m", "tests.net.teacher", "--base", base, "--org", org.group(1),
                                 "--address", network.HOME, "--video", video, "--students", str(students),
                                 *(["--noise"] if noise else [])]),
            env=env, cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=teacher_log)
        assert teacher.stdout is not None
        hello = json.loads(await line(teacher.stdout, "the teacher", r"^\{"))
        yield Stage(base=base, data=data, server=server, teacher=teacher, links=hello["iframeUrls"],
                    teacher_ice_servers=hello["iceServers"])
    finally:
        if teacher is not None:
            if teacher.stdin is not None:
                teacher.stdin.close()
            await stop(teacher, 15)
        await stop(server, 2)  # SIGINT: stop at once (SIGTERM would drain)
        log.close()
        teacher_log.close()


@contextlib.asynccontextmanager
async def school_browser(net: network.Network, tmp_path: Path) -> AsyncIterator[Browser]:
    """Headless Chromium in the school namespace: Playwright starts a wrapper that enters it first."""
    wrapper = tmp_path / "chromium-in-school"
    wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {net.school} {CHROMIUM} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    # The relay's certificate is self-signed here; a deployment's is signed by a CA browsers trust (without this
    # flag Chromium refuses the relay: no relay candidate at all).
    flags = [f for f in FLAGS if f != "--allow-loopback-in-peer-connection"] + ["--ignore-certificate-errors"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(wrapper), args=flags,
                                          ignore_default_args=["--headless"])
        try:
            yield browser
        finally:
            await browser.close()


# What the student's page plays, and on which path: null until the video has played half a second.
PLAYING_JS = """async () => {
  const v = document.getElementById('camera-video');
  if (!v || !v.videoWidth || v.currentTime < 0.5) return null;
  const room = window.classcastRoom;
  const stats = await room.pc.getStats();
  let audio = null, pair = null, bytes = 0;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp') bytes += s.bytesReceived;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s;
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!audio || !pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime, bytes,
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


async def poll(page: Any, script: str, console: list[str]) -> dict[str, Any]:
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


async def open_student(browser: Browser, link: str) -> tuple[Any, list[str]]:
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    console: list[str] = []  # shown when the page does not play
    page.on("console", lambda m: console.append(m.text))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    await page.goto(link)
    return page, console
