"""The relay between nodes is SRTP on the wire (issue 18 req 4): two routers' ends of a node pipe (sfu/pipe.py with
keys from control/relay.py) talk through a recording man in the middle on 127.0.0.1. What it sees holds no payload
in clear; the keys the nodes derive from their shared secret decrypt it and another pipe's keys do not; what it
forges is dropped and counted. The calls between nodes are signed with the same secret."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from types import SimpleNamespace

import pylibsrtp
import pytest

from control.errors import ApiError
from control.relay import Signer, pipe_keys
from sfu.errors import SignalingError
from sfu.ice import IceConfig
from sfu.router import Sfu
from sfu.rtp import parse_rtp

SECRET = b"district-9-shared-secret-0123456789abcdef"
PAYLOAD = b"LECTURE-SLIDE-7-PAYLOAD-" * 8


class Middle:
    """Two UDP sockets: what end A sends to `port_a` goes on to B's port, and the other way; everything is kept."""

    def __init__(self) -> None:
        self.a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.a, self.b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        self.port_a, self.port_b = self.a.getsockname()[1], self.b.getsockname()[1]
        self.to_a = self.to_b = 0
        self.seen: list[bytes] = []

    def pump(self) -> None:
        for src, dst, port in ((self.a, self.b, lambda: self.to_b), (self.b, self.a, lambda: self.to_a)):
            while True:
                try:
                    data = src.recv(9216)
                except BlockingIOError:
                    break
                self.seen.append(data)
                dst.sendto(data, ("127.0.0.1", port()))

    def close(self) -> None:
        self.a.close()
        self.b.close()


def _rtp(seq: int, ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHII", 0x80, 102, seq, 90000 + seq, ssrc) + PAYLOAD


async def _until(done, what: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_node_pipe_packets_are_srtp_on_the_wire_and_forgeries_are_dropped() -> None:
    a, b = Sfu(IceConfig()), Sfu(IceConfig())
    middle = Middle()
    try:
        pipe_id = "4f1c0b5e9a7d3c2e1f0a9b8c7d6e5f40"
        keys_a = pipe_keys(SECRET, pipe_id, "node-a", "node-b")
        keys_b = pipe_keys(SECRET, pipe_id, "node-b", "node-a")
        assert keys_a == (keys_b[1], keys_b[0]), "both ends derive the same key for each direction"
        assert keys_a[0] != keys_a[1], "one key per direction"
        assert pipe_keys(SECRET, "another-pipe", "node-a", "node-b") != keys_a
        assert pipe_keys(b"another-district-secret-0123456789abc", pipe_id, "node-a", "node-b") != keys_a

        with pytest.raises(SignalingError):  # never plain RTP between nodes
            a.open_pipe("RM_1", "node-b", host="127.0.0.1")
        with pytest.raises(ValueError):
            a.open_pipe("RM_1", "node-b", host="127.0.0.1", keys=(b"short", b"keys"))
        a.open_pipe("RM_1", "node-b", host="127.0.0.1", keys=keys_a)
        port_b = b.open_pipe("RM_1", "node-a", host="127.0.0.1", keys=keys_b)
        middle.to_b = port_b
        a.connect_pipe("RM_1", "node-b", middle.port_a)
        middle.to_a = a.routers["RM_1"].pipes["node-b"].port
        b.connect_pipe("RM_1", "node-a", middle.port_b)
        end_a, end_b = a.routers["RM_1"].pipes["node-b"], b.routers["RM_1"].pipes["node-a"]

        packets = [_rtp(seq) for seq in range(100, 110)]
        for packet in packets:
            assert end_a._send(packet)
        end_a.send_layers("TR_teacher_camera", 0b101)  # RTCP (an APP packet) goes the same way
        end_b.send_layers("TR_student_camera", 0b1)

        def pumped() -> bool:
            middle.pump()
            return end_b.unknown_ssrc >= len(packets) and len(middle.seen) >= len(packets) + 2

        await _until(pumped, "B authenticated and read A's packets (an SSRC it does not know yet: counted)")
        assert end_b.auth_failed == 0 and end_a.auth_failed == 0
        assert end_a.stats()["srtp"] and end_b.stats()["srtp"]

        # nothing in clear on the wire: neither the media payload nor the RTCP's names
        assert not any(PAYLOAD[:24] in d for d in middle.seen)
        assert not any(b"CCLN" in d or b"TR_teacher_camera" in d or b"TR_student_camera" in d for d in middle.seen)
        rtp_seen = [d for d in middle.seen if d[1] == 102]
        assert len(rtp_seen) == len(packets)
        # the receiving direction's key (derived, never sent) decrypts what crossed; another pipe's key does not
        policy = pylibsrtp.Policy(key=keys_b[1], ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                  srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
        assert pylibsrtp.Session(policy).unprotect(rtp_seen[0]) == packets[0]
        wrong = pylibsrtp.Policy(key=pipe_keys(SECRET, "another-pipe", "node-b", "node-a")[1],
                                 ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                 srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
        with pytest.raises(pylibsrtp.Error):
            pylibsrtp.Session(wrong).unprotect(rtp_seen[0])

        # the man in the middle forges (plain RTP, a flipped bit in a real packet) and replays: all dropped
        read = end_b.unknown_ssrc
        forged = bytearray(rtp_seen[3])
        forged[20] ^= 1
        for datagram in (_rtp(500), bytes(forged), rtp_seen[4]):
            middle.b.sendto(datagram, ("127.0.0.1", port_b))
        await _until(lambda: end_b.auth_failed == 3, "B dropped the forgeries and the replay")
        assert end_b.unknown_ssrc == read, "nothing forged reached the router"

        # published packets: an index is encrypted once. A second packet under a used (SSRC, sequence number) -- a
        # duplicate, or a publisher that chose another's SSRC -- is refused (AES-GCM under one nonce twice would give
        # the keys away), and a NACK is answered with the ciphertext that went the first time
        stream = SimpleNamespace(index=0, producer=SimpleNamespace(id="TR_teacher_camera"))
        middle.seen.clear()
        now = time.monotonic()
        for seq in range(200, 206):
            packet = _rtp(seq, ssrc=0x55667788)
            end_a.rtp(stream, packet, parse_rtp(packet), now)  # type: ignore[arg-type]
        await _until(lambda: (middle.pump(), len(middle.seen) >= 7)[1], "the map and six packets crossed")
        first = {struct.unpack_from("!H", d, 2)[0]: d for d in middle.seen if d[1] == 102}
        assert sorted(first) == list(range(200, 206))
        other = _rtp(202, ssrc=0x55667788)[:-1] + b"!"
        end_a.rtp(stream, other, parse_rtp(other), now)  # type: ignore[arg-type]
        assert end_a.srtp_refused == 1
        middle.seen.clear()
        end_a._on_nack(0x55667788, [203])
        await _until(lambda: (middle.pump(), middle.seen)[1], "the NACK's answer crossed")
        assert middle.seen == [first[203]] and end_a.retransmitted == 1
    finally:
        middle.close()
        await a.close()
        await b.close()


def test_calls_between_nodes_are_signed_with_the_node_secret() -> None:
    signer = Signer(SECRET)
    body = b'{"room": "RM_1", "node": "node-b"}'
    header = signer.sign("POST", "/internal/relay/open", body)
    signer.verify(header, "POST", "/internal/relay/open", body)
    with pytest.raises(ApiError):  # replayed
        signer.verify(header, "POST", "/internal/relay/open", body)
    header = signer.sign("POST", "/internal/relay/open", body)
    for bad in ((header, "POST", "/internal/relay/open", body + b" "),  # another body
                (header, "POST", "/internal/relay/close", body),  # another call
                (Signer(b"another-district-secret-0123456789abc").sign("POST", "/internal/relay/open", body),
                 "POST", "/internal/relay/open", body),  # another district's secret
                (signer.sign("POST", "/internal/relay/open", body, int(time.time() * 1000) - 120_000),
                 "POST", "/internal/relay/open", body),  # too old
                ("", "POST", "/internal/relay/open", body),
                (header.replace(".", ".0", 1), "POST", "/internal/relay/open", body)):  # another nonce
        with pytest.raises(ApiError) as exc:
            signer.verify(*bad)
        assert exc.value.status == 401
