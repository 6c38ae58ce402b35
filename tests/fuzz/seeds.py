"""Writes the seed corpora in tests/fuzz/corpus/ (committed): `python -m tests.fuzz.seeds`.

Seeds are valid inputs of each kind the parsers see in a class, built with the project's own builders and the
benchmark's real encoded clip (H.264, VP8, Opus payloads), so the fuzzers start from deep inside each format.
Re-running writes the same files (deterministic), so a diff shows what changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
MID, RID, TWCC, ABS = 9, 10, 3, 2


def _write(target: str, items: list[bytes]) -> int:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for item in items:
        (folder / hashlib.sha1(item).hexdigest()).write_bytes(item)
    return len(items)


def _ext(items: list[tuple[int, bytes]], two_byte: bool = False) -> bytes:
    if two_byte:
        body = b"".join(bytes([i, len(v)]) + v for i, v in items)
        profile = 0x1000
    else:
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in items)
        profile = 0xBEDE
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!HH", profile, len(body) // 4) + body


def _rtp(payload: bytes, seq: int = 1, ts: int = 3000, ssrc: int = 0x1234, pt: int = 96, marker: bool = True,
         ext: bytes = b"", csrcs: tuple[int, ...] = (), padding: int = 0) -> bytes:
    b0 = 0x80 | (0x10 if ext else 0) | (0x20 if padding else 0) | len(csrcs)
    head = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq, ts, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs) + ext
    pad = (b"\0" * (padding - 1) + bytes([padding])) if padding else b""
    return head + payload + pad


def _clip_payloads() -> dict[str, list[bytes]]:
    from bench import clip

    out: dict[str, list[bytes]] = {}
    for codec in ("h264", "vp8"):
        tracks = clip.load(codec)
        frames = tracks["q"].frames
        out[codec] = [p for _, payloads in frames[:3] for p in payloads][:12]
    out["opus"] = [p for _, payloads in clip.load("h264")["audio"].frames[:4] for p in payloads]
    return out


def rtp_seeds(clip: dict[str, list[bytes]]) -> list[bytes]:
    mid_rid = _ext([(MID, b"0"), (RID, b"q"), (TWCC, b"\x00\x07"), (ABS, b"\x01\x02\x03")])
    return [
        _rtp(clip["h264"][0][:200], ext=mid_rid),
        _rtp(clip["vp8"][0][:200], ext=_ext([(MID, b"1"), (TWCC, b"\xff\xff")], two_byte=True), csrcs=(7, 8)),
        _rtp(clip["opus"][0], pt=111, ext=_ext([(MID, b"2")]), padding=4),
        _rtp(b"", padding=1),
        _rtp(b"\x00" * 16, ext=_ext([(15, b"\x00")])),
    ]


def vp8_seeds(clip: dict[str, list[bytes]]) -> list[bytes]:
    key = clip["vp8"][0][:64]
    return [
        key,
        bytes([0x90, 0xE0, 0x80 | 0x12, 0x34, 0x05, 0x40]) + key[1:32],  # X, I (15-bit), L, T
        bytes([0x90, 0x80, 0x21]) + b"\x9d\x01\x2a" * 4,  # 7-bit picture id
        bytes([0x80, 0x10, 0x3F]) + b"\x01" * 8,  # K only
        bytes([0x10]) + b"\x00\x00\x00\x9d\x01\x2a\x80\x02\xe0\x01",
    ]


def h264_seeds(clip: dict[str, list[bytes]]) -> list[bytes]:
    payloads = clip["h264"]
    return [*payloads[:6], bytes([0x7C, 0x85]) + b"\x88" * 20, bytes([0x41, 0x9A, 0x00])]


def rtcp_seeds() -> list[bytes]:
    from sfu import rtcp
    from sfu.bwe import TwccFeedback

    block = rtcp.ReportBlock(5000, 12, 3, 70000, 55, 0x12345678, 655)
    record = TwccFeedback()
    for i, seq in enumerate((10, 11, 13, 14, 40)):
        record.record(seq, 1.0 + i * 0.004)
    twcc = record.build(1, 5000) or b""
    sr = rtcp.build_sr(7, rtcp.ntp_now(1.7e9), 90000, 100, 120000, [block])
    return [
        sr,
        rtcp.build_rr(7, [block, block]),
        rtcp.build_nack(7, 5000, [2900, 2901, 2905, 2920, 2999]),
        rtcp.build_pli(7, 5000),
        rtcp.build_fir(7, 5000, 3),
        rtcp.build_remb(7, 1_500_000, [5000, 5001]),
        twcc,
        rtcp.build_rr(7, [block]) + rtcp.build_sdes(7, "cname") + rtcp.build_pli(7, 5000),
        b"\x81\xcb\x00\x01\x00\x00\x00\x07",  # BYE
    ]


def twcc_seeds() -> list[bytes]:
    from sfu.bwe import TwccFeedback

    out = []
    for pattern in ((0, 1, 2, 3), (0, 2, 5, 9, 10, 11), tuple(range(0, 300, 3))):
        record = TwccFeedback()
        for i, seq in enumerate(pattern):
            record.record((8000 + seq) & 0xFFFF, 1.0 + i * 0.002 + (0.1 if i == 2 else 0))
        packet = record.build(1, 2)
        assert packet is not None
        out.append(packet[12:])  # the FCI
    out.append(struct.pack("!HHI", 8100, 20, 0) + struct.pack("!H", 0x2000 | 20) + b"\x04" * 20)
    out.append(struct.pack("!HHI", 8100, 14, 0) + struct.pack("!H", 0xBFFF) + b"\x01" * 14)  # one-bit vector
    return out


async def _aiortc_offer() -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def sdp_seeds() -> list[bytes]:
    from tests.sfu.test_simulcast_sdp import CHROME_OFFER

    aiortc_offer = asyncio.run(_aiortc_offer())
    with_candidates = CHROME_OFFER + "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n" + \
        "a=candidate:2 1 udp 2130706431 example.local 50001 typ host\r\n"
    return [CHROME_OFFER.encode(), aiortc_offer.encode(), with_candidates.encode()]


def signaling_seeds() -> list[bytes]:
    messages = [
        {"type": "ping", "ts": 1}, {"type": "chat", "text": "what is a derivative?"}, {"type": "raise_hand"},
        {"type": "lower_hand"}, {"type": "poll_answer", "pollId": "PL_x", "option": 1},
        {"type": "set_quality", "quality": "low"}, {"type": "set_quality", "width": 320, "height": 180},
        {"type": "publish", "tracks": [{"source": "camera", "mid": "0"}]},
        {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                            "sdpMid": "0", "sdpMLineIndex": 0}},
        {"type": "mute", "source": "microphone", "muted": True}, {"type": "restart"}, {"type": "join"},
        {"type": "kick", "uid": "teacher"}, {"type": "set_topic", "topic": "limits"},
        {"type": "recording_start", "options": {"layout": "grid"}}, {"type": "end_class"},
    ]
    return [json.dumps(m).encode() for m in messages] + [b'{"type": "chat", "text": "\\ud800\\u00e9"}']


def rest_seeds() -> list[bytes]:
    bodies = [
        (0, {"roomId": "r2", "title": "Algebra", "roomDescription": "x",
             "participant": {"uid": "t1", "name": "Ada", "role": "TEACHER", "metadata": {"k": [1, 2.5, None]}},
             "customization": {"allowChat": True, "theme": "dark"},
             "settings": {"maxParticipants": 30, "emptyTimeout": 600, "autoClose": True}, "expiresIn": 3600}),
        (1, {"participant": {"uid": "s9", "name": "Sam", "role": "STUDENT", "photoURL": "https://x.test/a.png"},
             "expiresIn": 60}),
        (2, {"roomId": "fuzz", "from": "2026-01-01", "to": "2026-12-31", "format": "csv"}),
        (3, {"reason": "disruptive"}),
        (4, {"exceptUids": ["teacher"]}),
        (5, {"options": {"layout": "speaker", "preset": "H264_720P_30", "mode": "track"}}),
        (6, {"egressId": "EG_1"}),
        (7, {"ids": ["EG_1", "EG_2"]}),
        (8, {"ids": ["EG_3"]}),
    ]
    return [bytes([i]) + json.dumps(b).encode() for i, b in bodies]


def recorder_seeds(clip: dict[str, list[bytes]]) -> list[bytes]:
    def record(op: int, track: int, body: bytes) -> bytes:
        return bytes([op, track]) + struct.pack("!H", len(body)) + body

    out = []
    for track, codec, pt in ((0, "h264", 102), (1, "vp8", 96), (2, "opus", 111)):
        items = [record(1, track, struct.pack("!QI", (3_900_000_000 << 32), 0))]
        for seq, payload in enumerate(clip[codec][:8]):
            items.append(record(0, track, _rtp(payload[:900], seq=seq, ts=3000 * (seq // 3), pt=pt)))
        items.append(record(2, track, b"\x01"))
        items.append(record(2, track, b"\x00"))
        out.append(b"".join(items))
    return out


def rtcserver_seeds() -> list[bytes]:
    """Datagrams for the single media port: binding requests signed with the target's credentials (valid,
    nominating, wrong password, no fingerprint, unknown ufrag), a DTLS record, SRTP, and a request followed by DTLS
    from one source, SRTP and a request from another (the fuzz target cuts inputs at 0xFF 0xFE 0xFD)."""
    from aioice import stun

    from tests.fuzz.targets.rtcserver import PASSWORD, REMOTE, UFRAG

    def request(username: str, password: str, nominate: bool = False, fingerprint: bool = True) -> bytes:
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=b"classcast-12")
        message.attributes["USERNAME"] = username
        message.attributes["PRIORITY"] = 0x6E7F1EFF
        message.attributes["ICE-CONTROLLING"] = 0x1122334455667788
        if nominate:
            message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(password.encode())
        if not fingerprint:
            message.attributes.pop("FINGERPRINT")
        return bytes(message)

    valid = request(f"{UFRAG}:{REMOTE}", PASSWORD)
    dtls = bytes([22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12]) + bytes(12)
    srtp = _rtp(bytes(40)) + bytes(10)
    sep = b"\xff\xfe\xfd"
    return [valid, request(f"{UFRAG}:{REMOTE}", PASSWORD, nominate=True),
            request(f"{UFRAG}:{REMOTE}", "not-the-password-at-all"),
            request(f"{UFRAG}:{REMOTE}", PASSWORD, fingerprint=False), request(f"nope:{REMOTE}", PASSWORD),
            request(f"{UFRAG}:other", PASSWORD), dtls, srtp, valid + sep + dtls + sep + srtp + sep + valid]


def main() -> None:
    clip = _clip_payloads()
    counts = {
        "rtp": _write("rtp", rtp_seeds(clip)),
        "vp8": _write("vp8", vp8_seeds(clip)),
        "h264": _write("h264", h264_seeds(clip)),
        "rtcp": _write("rtcp", rtcp_seeds()),
        "twcc": _write("twcc", twcc_seeds()),
        "sdp": _write("sdp", sdp_seeds()),
        "signaling": _write("signaling", signaling_seeds()),
        "rest": _write("rest", rest_seeds()),
        "recorder_feed": _write("recorder_feed", recorder_seeds(clip)),
        "rtcserver": _write("rtcserver", rtcserver_seeds()),
    }
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
