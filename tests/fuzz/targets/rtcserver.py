"""Every datagram that reaches the single media port (sfu/rtcserver.py `RtcServer.received`): random bytes, STUN
with any attributes, DTLS records, SRTP, from a few source addresses. Nothing may raise; only a binding request
carrying the live connection's ufrag, a correct MESSAGE-INTEGRITY and a FINGERPRINT binds an address, and the
tables never grow past their bounds; every response the server sends is a binding success answering that request."""

from __future__ import annotations

from typing import Any

INSTRUMENT = ("sfu.rtcserver", "sfu.binding")
BOUND_MS = 5.0
STATELESS = True
UFRAG, PASSWORD, REMOTE = "fzuf", "fuzz-password-of-22-chars", "rmte"  # tests/fuzz/seeds.py signs with these

rtcserver: Any = None
stun: Any = None
IceConfig: Any = None


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False


def setup() -> None:
    global rtcserver, stun, IceConfig
    from aioice import stun as stun_module

    from sfu import rtcserver as module
    from sfu.ice import IceConfig as config

    rtcserver, stun, IceConfig = module, stun_module, config


def one_input(data: bytes) -> None:
    server = rtcserver.RtcServer(IceConfig(rtc_port=0))
    connection = server.connection(UFRAG, PASSWORD)
    connection.remote_username = REMOTE
    server.register(connection)
    listener = rtcserver._Listener(server, "127.0.0.1")
    listener.transport = _Transport()
    # the input is cut in up to 4 datagrams at 0xFF 0xFE 0xFD markers: the first two from one source, the others
    # from another
    for i, datagram in enumerate(data.split(b"\xff\xfe\xfd")[:4]):
        source = ("127.0.0.1", 40000 + i // 2)
        before = set(server._by_addr)
        server.received(datagram, source, listener)
        learned = set(server._by_addr) - before
        if learned:
            assert learned == {source}
            message = stun.parse_message(datagram)
            assert message.check_message_integrity(PASSWORD.encode()) and "FINGERPRINT" in message.attributes
            assert message.attributes["USERNAME"] == f"{UFRAG}:{REMOTE}"
    assert len(server._by_addr) <= rtcserver.MAX_ADDRESSES
    assert len(connection.addresses) <= rtcserver.MAX_ADDRESSES
    assert connection._queue.qsize() <= rtcserver.MAX_QUEUE
    for sent, addr in listener.transport.sent:
        response = stun.parse_message(sent)
        assert response.message_class == stun.Class.RESPONSE
        assert response.check_message_integrity(PASSWORD.encode())
        assert response.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert sum(server.drops.values()) + len(listener.transport.sent) <= server.counters["datagrams_in"]
