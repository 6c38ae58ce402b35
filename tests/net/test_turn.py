"""Per-participant TURN credentials: what `joined` carries, and what a real coturn configured by classcast does
with them (control/turn.py). coturn listens on 127.0.0.1 only; its peers are limited to the SFU's address."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import os
import pwd
import random
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aioice import stun
from aioice import turn as aioice_turn

from control.config import Config
from control.turn import (
    TURNSERVER,
    Relay,
    TurnConfig,
    coturn_config,
    load_or_create_secret,
    reachability_warnings,
    turn_password,
    turn_username,
)
from sfu.ice import IceConfig
from tests.net.conftest import Classroom


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        port = random.randrange(20000, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def test_the_password_is_corturns_rest_scheme() -> None:
    username = turn_username("student-7", 1_900_000_000)
    assert username == "1900000000:student-7"
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()).decode()
    assert turn_password("s3cret", username) == expected
    # A uid that coturn's username parsing or SASLprep could misread is replaced by a digest, never passed on.
    odd = turn_username("Zoë: the 2nd", 1_900_000_000)
    assert odd.startswith("1900000000:u-") and odd.count(":") == 1


def test_bad_settings_are_refused_with_the_key_named() -> None:
    with pytest.raises(SystemExit, match="CLASSCAST_TURN must be"):
        TurnConfig.from_env({"CLASSCAST_TURN": "yes"})
    with pytest.raises(SystemExit, match="CLASSCAST_TURN_TLS_KEY"):
        TurnConfig.from_env({"CLASSCAST_TURN": "embedded", "CLASSCAST_TURN_TLS_CERT": "/c.pem"})
    with pytest.raises(SystemExit, match="CLASSCAST_TURN_TLS_CERT: '/nonexistent\\.pem' is not a readable file"):
        TurnConfig.from_env({"CLASSCAST_TURN": "embedded", "CLASSCAST_TURN_TLS_CERT": "/nonexistent.pem",
                             "CLASSCAST_TURN_TLS_KEY": "/nonexistent.key"})  # coturn went on without TLS
    with pytest.raises(SystemExit, match="CLASSCAST_TURN_PORT"):
        TurnConfig.from_env({"CLASSCAST_TURN_PORT": "70000"})
    with pytest.raises(SystemExit, match="CLASSCAST_TURN_LISTEN"):
        TurnConfig.from_env({"CLASSCAST_TURN_LISTEN": "turn.example.org"})
    with pytest.raises(SystemExit, match="CLASSCAST_TURN_RELAY_PORTS"):
        TurnConfig.from_env({"CLASSCAST_TURN_RELAY_PORTS": "10-5"})


async def test_joined_gives_each_participant_its_own_credential_that_expires_with_its_token(
        classroom: Classroom) -> None:
    turn = TurnConfig(mode="external", host="turn.school.example", tls_cert="/etc/x.pem", tls_key="/etc/x.key",
                      secret="district-secret")
    classroom.svc.config = dataclasses.replace(classroom.svc.config, turn=turn)
    await classroom.create_room("net-1")
    tokens = {uid: await classroom.token("net-1", uid) for uid in ("ana", "ben")}
    servers: dict[str, list[dict[str, Any]]] = {}
    for uid, token in tokens.items():
        client = await classroom.client(token, name=uid)
        servers[uid] = client.joined["iceServers"]
    for uid, token in tokens.items():
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        (relay,) = servers[uid]
        assert relay["urls"] == ["turn:turn.school.example:3478?transport=udp",
                                 "turn:turn.school.example:3478?transport=tcp",
                                 "turns:turn.school.example:443?transport=tcp"]
        assert relay["username"] == f"{exp}:{uid}"
        assert relay["credential"] == base64.b64encode(
            hmac.new(b"district-secret", relay["username"].encode(), hashlib.sha1).digest()).decode()
    assert servers["ana"][0]["credential"] != servers["ben"][0]["credential"]


async def test_without_a_certificate_there_is_no_tls_url_and_static_servers_come_first(
        classroom: Classroom) -> None:
    ice = dataclasses.replace(classroom.svc.config.ice, servers=({"urls": "stun:stun.school.example:3478"},))
    classroom.svc.config = dataclasses.replace(classroom.svc.config, ice=ice,
                                               turn=TurnConfig(mode="embedded", host="198.18.0.9"))
    token = await classroom.create_room("net-2")
    client = await classroom.client(token)
    stun_server, relay = client.joined["iceServers"]
    assert stun_server == {"urls": "stun:stun.school.example:3478"}
    assert relay["urls"] == ["turn:198.18.0.9:3478?transport=udp", "turn:198.18.0.9:3478?transport=tcp"]
    # The secret was made once in the data dir and is what the credential is signed with.
    secret = (classroom.svc.config.data_dir / "turn-secret").read_text().strip()
    assert len(secret) == 64 and relay["credential"] == turn_password(secret, relay["username"])


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[tuple[Relay, int, int]]:
    """Debian's coturn run by classcast's supervisor on 127.0.0.1, relaying only to one "SFU" UDP socket."""
    assert shutil.which(TURNSERVER), "make install installs coturn"
    port = _free_port()
    base = random.randrange(41000, 60000, 50)
    turn = TurnConfig(mode="embedded", port=port, tls_port=0, listen=("127.0.0.1",), relay_port_min=base,
                      relay_port_max=base + 40)
    sfu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sfu.bind(("127.0.0.1", 0))
    relay = Relay(turn, IceConfig(hosts=("127.0.0.1",)), tmp_path)
    await relay.start()
    try:
        await _wait_listening(port)
        yield relay, port, sfu.getsockname()[1]
    finally:
        await relay.stop()
        sfu.close()


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("coturn did not start listening")


async def _allocate(port: int, username: str, password: str) -> Any:
    transport, _ = await aioice_turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", port), username, password, lifetime=600)
    return transport


def _real_uid(pid: int) -> int:
    """The uid coturn runs as, once it has dropped root (it does so after binding; polled for a moment)."""
    for _ in range(50):
        uid = int(next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if ln.startswith("Uid:")).split()[1])
        if uid != 0:
            return uid
        time.sleep(0.1)
    return 0


def _inner(transport: Any) -> Any:
    return transport._TurnTransport__inner_protocol  # aioice keeps the TURN client protocol private


async def test_coturn_relays_for_a_valid_credential_and_refuses_an_expired_one(
        coturn: tuple[Relay, int, int], tmp_path: Path) -> None:
    relay, port, sfu_port = coturn
    secret = load_or_create_secret(relay.turn, tmp_path)
    now = int(time.time())

    fresh = turn_username("student-1", now + 3)
    transport = await _allocate(port, fresh, turn_password(secret, fresh))
    relayed = transport.get_extra_info("sockname")
    assert relayed[0] == "127.0.0.1" and relay.turn.relay_port_min <= relayed[1] <= relay.turn.relay_port_max
    inner = _inner(transport)
    await inner.channel_bind(0x4000, ("127.0.0.1", sfu_port))  # the SFU: allowed
    with pytest.raises(stun.TransactionFailed, match="403"):  # anything else: the relay is not an open proxy
        await inner.channel_bind(0x4001, ("127.0.0.2", sfu_port))

    expired = turn_username("student-2", now - 1)
    with pytest.raises(stun.TransactionFailed, match="401"):
        await _allocate(port, expired, turn_password(secret, expired))
    with pytest.raises(stun.TransactionFailed, match="401"):  # somebody else's password
        await _allocate(port, fresh, turn_password("another-secret", fresh))

    # What expiry bounds (docs/operations.md, "TURN relay"): once the credential has expired nobody can make a new
    # allocation with it, but coturn checks an allocation's later requests with the key it cached at Allocate, so
    # an existing allocation is still refreshed. Its only peer is the SFU, which dropped a removed participant's
    # session at removal: what it can still send goes nowhere.
    await asyncio.sleep(max(0.0, now + 4.2 - time.time()))
    with pytest.raises(stun.TransactionFailed, match="401"):
        await _allocate(port, fresh, turn_password(secret, fresh))
    refresh = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
    refresh.attributes["LIFETIME"] = 600
    response, _ = await inner.request_with_retry(refresh)
    assert response.attributes["LIFETIME"] <= 600  # max-allocate-lifetime caps each refresh
    transport.close()


async def test_a_coturn_that_dies_is_started_again(coturn: tuple[Relay, int, int]) -> None:
    relay, port, _ = coturn
    assert relay.process is not None
    first = relay.process.pid
    if os.geteuid() == 0:  # started by root: coturn runs as Debian's `turnserver` user once its ports are bound
        uid = await asyncio.to_thread(_real_uid, first)
        assert uid == pwd.getpwnam("turnserver").pw_uid
    relay.process.kill()
    for _ in range(100):  # Relay.RESTART_S after the exit; polled, as the supervisor has no event to wait on
        if relay.starts >= 2:
            break
        await asyncio.sleep(0.1)
    assert relay.starts == 2 and relay.process.pid != first
    await _wait_listening(port)


def test_the_printed_configuration_uses_the_rest_scheme_and_only_the_sfu_as_peer() -> None:
    turn = TurnConfig(mode="external", tls_cert="/etc/ssl/turn.pem", tls_key="/etc/ssl/turn.key",
                      external_ip="203.0.113.7/10.0.0.7")
    text = coturn_config(turn, IceConfig(hosts=("10.0.0.7",)), "abc")
    lines = text.splitlines()
    for line in ("listening-port=3478", "tls-listening-port=443", "cert=/etc/ssl/turn.pem", "use-auth-secret",
                 "static-auth-secret=abc", "external-ip=203.0.113.7/10.0.0.7", "allowed-peer-ip=10.0.0.7",
                 "denied-peer-ip=0.0.0.0-255.255.255.255", "max-allocate-lifetime=600"):
        assert line in lines, line
    assert "allow-loopback-peers" not in lines and "no-tls" not in lines


def test_doctor_warns_when_a_public_url_meets_private_media_addresses() -> None:
    config = Config.from_env({"CLASSCAST_PUBLIC_URL": "https://class.school.example"})
    warnings = reachability_warnings(config)
    assert any("CLASSCAST_ICE_HOSTS is 127.0.0.1" in w for w in warnings)
    assert any("CLASSCAST_TURN is off" in w for w in warnings)
    # A global address (only parsed, never contacted): documentation ranges such as 203.0.113.0/24 are not global.
    good = Config.from_env({
        "CLASSCAST_PUBLIC_URL": "https://class.school.example", "CLASSCAST_ICE_HOSTS": "5.6.7.8",
        "CLASSCAST_ICE_ALLOWED_NETWORKS": "0.0.0.0/0,::/0", "CLASSCAST_TURN": "external",
        "CLASSCAST_TURN_TLS_CERT": "/c.pem", "CLASSCAST_TURN_TLS_KEY": "/k.pem"})
    assert reachability_warnings(good) == []
    private_relay = Config.from_env({
        "CLASSCAST_PUBLIC_URL": "https://class.school.example", "CLASSCAST_ICE_HOSTS": "5.6.7.8",
        "CLASSCAST_ICE_ALLOWED_NETWORKS": "0.0.0.0/0", "CLASSCAST_TURN": "external",
        "CLASSCAST_TURN_HOST": "192.168.1.5"})
    assert [w for w in reachability_warnings(private_relay) if "192.168.1.5" in w or "TURN/TLS" in w] and len(
        reachability_warnings(private_relay)) == 2
    # A laptop demo (no public URL) is not judged.
    assert reachability_warnings(Config.from_env({})) == []


def test_the_commands_print_the_configuration_and_the_warnings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from control.cli import main

    monkeypatch.setenv("CLASSCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLASSCAST_TURN", "external")
    monkeypatch.setenv("CLASSCAST_ICE_HOSTS", "10.1.2.3")
    assert main(["turn-config"]) == 0
    printed = capsys.readouterr().out.splitlines()
    secret = (tmp_path / "turn-secret").read_text().strip()  # made once, the one `serve` signs with
    assert f"static-auth-secret={secret}" in printed and "allowed-peer-ip=10.1.2.3" in printed
    assert "log-file=/var/log/turnserver.log" in printed
    assert main(["doctor"]) == 0  # no public URL: a private deployment is not judged
    assert "ok:" in capsys.readouterr().out
    monkeypatch.setenv("CLASSCAST_PUBLIC_URL", "https://class.school.example")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "WARNING: CLASSCAST_ICE_HOSTS is 10.1.2.3, a loopback/private address" in out


RELAY_OWNER = """
import asyncio, sys
from pathlib import Path
from control.turn import Relay, TurnConfig
from sfu.ice import IceConfig

async def main() -> None:
    turn = TurnConfig(mode="embedded", port=int(sys.argv[1]), tls_port=0, listen=("127.0.0.1",))
    relay = Relay(turn, IceConfig(), Path(sys.argv[2]))
    await relay.start()
    print(relay.process.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie left for an init that does not reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_relay_never_outlives_a_server_that_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", RELAY_OWNER, str(_free_port()), str(tmp_path)],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert owner.stdout is not None
        coturn = int(owner.stdout.readline())
        assert _alive(coturn)
        owner.kill()  # SIGKILL: no cleanup of its own runs; the death signal (and the closed log pipe) end coturn
        owner.wait(10)
        deadline = time.monotonic() + 10
        while _alive(coturn) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(coturn), "coturn kept running after its server was killed"
    finally:
        if owner.poll() is None:
            owner.kill()
