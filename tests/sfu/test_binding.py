"""sfu/binding.py against aioice's STUN code, the reference: the same verdict on every request, byte-identical
answers."""

from __future__ import annotations

import random
import struct

from aioice import stun

from sfu import binding

PASSWORD = b"local-password-of-22-chars"
TID = bytes(range(12))


def _request(attributes: dict, integrity: bool = True, fingerprint: bool = True, tid: bytes = TID) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                           transaction_id=tid)
    message.attributes.update(attributes)
    if integrity:
        message.add_message_integrity(PASSWORD)  # and FINGERPRINT
        if not fingerprint:
            message.attributes.pop("FINGERPRINT")
    elif fingerprint:
        message.add_fingerprint()
    return bytes(message)


def _reference(data: bytes, password: bytes = PASSWORD) -> tuple[bool, bool]:
    """What the server accepted before this module (aioice): (accepted, nominated)."""
    try:
        message = stun.parse_message(data)
    except Exception:
        return False, False
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return False, False
    username = message.attributes.get("USERNAME")
    if "FINGERPRINT" not in message.attributes or not isinstance(username, str) or ":" not in username:
        return False, False
    return message.check_message_integrity(password), "USE-CANDIDATE" in message.attributes


def _ours(data: bytes, password: bytes = PASSWORD) -> tuple[bool, bool]:
    request = binding.read(data)
    if isinstance(request, str):
        return False, False
    return request.verify(password), request.use_candidate


def test_a_browser_request_is_read_and_answered_as_aioice_answers_it() -> None:
    data = _request({"USERNAME": "abcd:wxyz", "PRIORITY": 1853824767, "ICE-CONTROLLING": 0x1234567890,
                     "USE-CANDIDATE": None})
    request = binding.read(data)
    assert isinstance(request, binding.Request)
    assert request.username == "abcd:wxyz" and request.use_candidate and request.transaction_id == TID
    assert request.verify(PASSWORD) and not request.verify(b"another-password-of-22-ch")
    for address in (("127.0.0.1", 50000), ("198.18.0.7", 1), ("::1", 65535), ("2001:db8::5", 7882)):
        answer = binding.success(request, address, PASSWORD)
        expected = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                                transaction_id=TID)
        expected.attributes["XOR-MAPPED-ADDRESS"] = address
        expected.add_message_integrity(PASSWORD)
        assert answer == bytes(expected), address
        parsed = stun.parse_message(answer)  # checks the fingerprint
        assert parsed.attributes["XOR-MAPPED-ADDRESS"] == address and parsed.check_message_integrity(PASSWORD)


def test_each_defect_has_its_reason() -> None:
    good = _request({"USERNAME": "abcd:wxyz"})
    assert binding.read(good[:19]) == "stun_malformed"
    assert binding.read(good + b"\0\0\0\0") == "stun_malformed"  # the length field does not cover it
    assert binding.read(good[:4] + b"\0\0\0\0" + good[8:]) == "stun_malformed"  # no magic cookie
    flipped = bytearray(good)
    flipped[-1] ^= 1
    assert binding.read(bytes(flipped)) == "stun_bad_fingerprint"
    indication = bytearray(_request({"USERNAME": "abcd:wxyz"}, integrity=False))
    assert binding.read(_request({"USERNAME": "abcd:wxyz"}, fingerprint=False)) == "stun_no_fingerprint"
    assert binding.read(_request({"USERNAME": "abcd"})) == "stun_bad_username"
    assert binding.read(_request({})) == "stun_bad_username"
    no_integrity = binding.read(bytes(indication))
    assert isinstance(no_integrity, binding.Request) and not no_integrity.verify(PASSWORD)
    response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                            transaction_id=TID)
    response.add_message_integrity(PASSWORD)
    assert binding.read(bytes(response)) == "stun_not_binding_request"
    # an attribute whose length runs past the message
    broken = good[:20] + struct.pack("!HH", 0x0006, 200) + good[24:]
    assert binding.read(broken) == "stun_malformed"


def test_the_same_verdict_as_aioice_on_3000_requests() -> None:
    """Random attribute sets, signed or not, then corrupted at random (a bit, a cut, bytes added): whatever the
    reference refuses is refused, what it accepts is accepted unless malformed, and USE-CANDIDATE is read alike."""
    rng = random.Random(21)
    accepted = stricter = 0
    for _ in range(3000):
        attributes: dict = {}
        if rng.random() < 0.9:
            attributes["USERNAME"] = rng.choice(["abcd:wxyz", "abcd", "", "a:b:c", "é:ü", ":"])
        if rng.random() < 0.5:
            attributes["PRIORITY"] = rng.getrandbits(32)
        if rng.random() < 0.5:
            attributes["USE-CANDIDATE"] = None
        if rng.random() < 0.3:
            attributes["ICE-CONTROLLED"] = rng.getrandbits(64)
        if rng.random() < 0.2:
            attributes["SOFTWARE"] = "x" * rng.randrange(0, 9)  # padding of every length
        data = _request(attributes, integrity=rng.random() < 0.9, fingerprint=rng.random() < 0.9,
                        tid=rng.randbytes(12))
        roll = rng.random()
        if roll < 0.3:
            corrupt = bytearray(data)
            corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
            data = bytes(corrupt)
        elif roll < 0.4:
            data = data[: rng.randrange(len(data))]
        elif roll < 0.45:
            data += rng.randbytes(rng.randrange(1, 9))
        password = PASSWORD if rng.random() < 0.9 else b"wrong-password-of-22-chars"
        ours, reference = _ours(data, password), _reference(data, password)
        if ours != reference:
            # stricter than aioice only where the RFC is (an attribute's length that runs past the message, a
            # FINGERPRINT of another length than 4): never accepting what the reference refuses
            assert not ours[0] and binding.read(data) == "stun_malformed", data.hex()
            stricter += 1
        accepted += reference[0]
    assert 600 < accepted < 2400  # both kinds were met often
    assert stricter < 30
