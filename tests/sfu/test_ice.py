"""ICE configuration: loopback by default, configured ports, remote candidates outside allowed networks ignored."""

from __future__ import annotations

import ipaddress

import pytest
from aioice.ice import Connection

from sfu.ice import IceConfig, filter_sdp_candidates, gather_host_candidates
from tests.sfu.conftest import Classroom
from tests.sfu.test_forwarding import _router

SDP = """v=0\r
o=- 1 1 IN IP4 0.0.0.0\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r
a=candidate:2 1 udp 2130706431 192.168.1.20 5001 typ host\r
a=candidate:3 1 udp 2130706431 3f1c7a2e-1111-2222-3333-444455556666.local 5002 typ host\r
a=candidate:4 1 udp 1694498815 203.0.113.9 5003 typ srflx raddr 0.0.0.0 rport 0\r
"""


def test_defaults_are_loopback_only() -> None:
    ice = IceConfig.from_env({})
    assert ice.hosts == ("127.0.0.1",) and ice.servers == ()
    assert ice.allows("127.0.0.1") and ice.allows("::1")
    for address in ("192.168.1.20", "10.0.0.1", "8.8.8.8", "host.local", "not-an-ip"):
        assert not ice.allows(address)


def test_environment_parsing() -> None:
    ice = IceConfig.from_env({
        "CLASSCAST_ICE_HOSTS": "127.0.0.1, ::1", "CLASSCAST_ICE_PORT_RANGE": "40000-40010",
        "CLASSCAST_ICE_SERVERS": '[{"urls": "stun:stun.example.org:3478"}]',
        "CLASSCAST_ICE_ALLOWED_NETWORKS": "127.0.0.0/8,198.18.0.0/15"})
    assert ice.hosts == ("127.0.0.1", "::1") and (ice.port_min, ice.port_max) == (40000, 40010)
    assert ice.servers == ({"urls": "stun:stun.example.org:3478"},)
    assert ice.allows("198.18.0.7") and not ice.allows("192.168.0.1")
    for bad in ({"CLASSCAST_ICE_HOSTS": "localhost"}, {"CLASSCAST_ICE_PORT_RANGE": "80-90"},
                {"CLASSCAST_ICE_SERVERS": '["stun:x"]'}, {"CLASSCAST_ICE_ALLOWED_NETWORKS": "nonsense"}):
        with pytest.raises(ValueError):
            IceConfig.from_env(bad)


def test_remote_candidates_outside_allowed_networks_are_dropped() -> None:
    sdp, dropped = filter_sdp_candidates(SDP, IceConfig())
    assert dropped == 3
    assert "127.0.0.1 5000" in sdp and "192.168.1.20" not in sdp and ".local" not in sdp and "203.0.113.9" not in sdp


async def test_gathering_uses_only_configured_addresses_and_ports() -> None:
    ice = IceConfig(hosts=("127.0.0.1",), port_min=47100, port_max=47104)
    connections = [Connection(ice_controlling=True) for _ in range(3)]
    ports = []
    try:
        for conn in connections:
            [candidate] = await gather_host_candidates(conn, 1, ice)
            assert candidate.host == "127.0.0.1" and candidate.type == "host"
            ports.append(candidate.port)
        assert all(47100 <= p <= 47104 for p in ports) and len(set(ports)) == 3
    finally:
        for conn in connections:
            await conn.close()


@pytest.mark.in_process_sfu("reads the participant's ICE connection")
async def test_server_offers_loopback_candidates_only(classroom: Classroom) -> None:
    from sfu.client import SyntheticVideoTrack

    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack()})
    answer = next(m for m in teacher.messages if m["type"] == "answer")
    addresses = [line.split()[4] for line in answer["sdp"].splitlines() if line.startswith("a=candidate:")]
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    trickled = [m["candidate"] for m in teacher.messages if m["type"] == "candidate"]
    assert trickled[-1] is None and all(c["candidate"].split()[4] == "127.0.0.1" for c in trickled[:-1] if c)
    # A candidate the client trickles from another network is never contacted.
    participant = next(iter(_router(classroom).participants.values()))
    before = len(participant.peer.pc.getTransceivers()[0].receiver.transport.transport._connection._remote_candidates)
    await teacher.send({"type": "candidate", "candidate": {
        "candidate": "candidate:9 1 udp 2130706431 192.168.7.7 6000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}})
    await teacher.request({"type": "ping"}, "pong")
    after = participant.peer.pc.getTransceivers()[0].receiver.transport.transport._connection._remote_candidates
    assert len(after) == before and all(c.host != "192.168.7.7" for c in after)
