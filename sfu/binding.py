"""ICE-lite's one STUN exchange: a binding request read, checked and answered without building a message object.

Every subscriber's browser sends a binding request every few seconds for consent (RFC 7675) and more while it
connects. aioice's `Message` decodes every attribute into a dict, goes through `ipaddress` for the address and
through `hmac.new` per digest: at 100 subscribers py-spy put a quarter of the event loop's busy time there. This
module reads only what an ICE-lite server needs (USERNAME, MESSAGE-INTEGRITY, FINGERPRINT, USE-CANDIDATE), checks
the integrity and the fingerprint with one-shot C digests (`hmac.digest`, `zlib.crc32`), and builds the answer from
bytes. aioice stays the reference: tests/sfu/test_binding.py holds both to the same verdicts and answers, and the
rtcserver fuzz target checks every address this accepts against aioice's reading.
"""

from __future__ import annotations

import hmac
import socket
import struct
import zlib
from dataclasses import dataclass

COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_MAPPED_ADDRESS = 0x0020
USE_CANDIDATE = 0x0025
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")
_COOKIE_BYTES = struct.pack("!I", COOKIE)


@dataclass(slots=True)
class Request:
    """An authenticated-to-be binding request: what the server answers and learns from it."""

    transaction_id: bytes
    username: str
    use_candidate: bool
    signed: bytes  # the bytes MESSAGE-INTEGRITY covers, with the length field as the signer set it
    integrity: bytes

    def verify(self, password: bytes) -> bool:
        """MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the local ICE password: short-term credentials)."""
        if not self.integrity:  # none in the request
            return False
        return hmac.compare_digest(hmac.digest(password, self.signed, "sha1"), self.integrity)


def read(data: bytes) -> Request | str:
    """A binding request, or why the datagram is dropped (the RtcServer's drop reasons).

    Stricter than aioice where the RFC is: the magic cookie, attributes that fit the message, and FINGERPRINT, when
    present, last. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are not authenticated and not read."""
    if len(data) < 20:
        return "stun_malformed"
    kind, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if len(data) != 20 + length or length % 4 or cookie != COOKIE or kind & 0xC000:
        return "stun_malformed"
    username: bytes | None = None
    integrity_at = -1
    integrity = b""
    use_candidate = False
    fingerprint = False
    pos = 20
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            return "stun_malformed"
        attr, size = _ATTR.unpack_from(data, pos)
        value_at = pos + 4
        following = value_at + ((size + 3) & ~3)
        if following > end:
            return "stun_malformed"
        if attr == FINGERPRINT:
            if size != 4 or following != end:
                return "stun_malformed"
            check = data[:2] + struct.pack("!H", pos + 8 - 20) + data[4:pos]
            if (zlib.crc32(check) ^ FINGERPRINT_XOR) != struct.unpack_from("!I", data, value_at)[0]:
                return "stun_bad_fingerprint"
            fingerprint = True
        elif integrity_at < 0:
            if attr == MESSAGE_INTEGRITY:
                if size != 20:
                    return "stun_malformed"
                integrity_at = pos
                integrity = data[value_at:value_at + 20]
            elif attr == USERNAME:
                username = data[value_at:value_at + size]
            elif attr == USE_CANDIDATE:
                use_candidate = True
        pos = following
    if kind != BINDING_REQUEST:
        return "stun_not_binding_request"  # the server never sends requests: no response is expected
    if not fingerprint:
        return "stun_no_fingerprint"
    try:
        name = username.decode("utf8") if username is not None else ""
    except UnicodeDecodeError:
        return "stun_bad_username"
    if ":" not in name:
        return "stun_bad_username"
    signed = data[:2] + struct.pack("!H", integrity_at + 24 - 20) + data[4:integrity_at] if integrity_at > 0 else b""
    return Request(transaction_id, name, use_candidate, signed, integrity)


def success(request: Request, address: tuple[str, int], password: bytes) -> bytes:
    """The binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT (RFC 8489, 8445)."""
    host, port = address[0], address[1]
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        pad = _COOKIE_BYTES + request.transaction_id
        xored = bytes(a ^ b for a, b in zip(raw, pad, strict=True))
        mapped = struct.pack("!HHBBH", XOR_MAPPED_ADDRESS, 20, 0, 2, port ^ (COOKIE >> 16)) + xored
    else:
        raw_v4 = struct.unpack("!I", socket.inet_aton(host))[0]
        mapped = struct.pack("!HHBBHI", XOR_MAPPED_ADDRESS, 8, 0, 1, port ^ (COOKIE >> 16), raw_v4 ^ COOKIE)
    head = struct.pack("!HHI", BINDING_SUCCESS, len(mapped) + 24, COOKIE) + request.transaction_id + mapped
    message = head + struct.pack("!HH", MESSAGE_INTEGRITY, 20) + hmac.digest(password, head, "sha1")
    message = message[:2] + struct.pack("!H", len(message) - 20 + 8) + message[4:]
    return message + struct.pack("!HHI", FINGERPRINT, 4, zlib.crc32(message) ^ FINGERPRINT_XOR)
