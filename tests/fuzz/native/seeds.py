"""Writes the seed corpora of the engine's native fuzz targets into tests/fuzz/corpus/engine_*:
`python -m tests.fuzz.native.seeds`. Seeds are real packet shapes (VP8 key and delta frames with 7- and 15-bit
picture ids, H.264 STAP-A with SPS and FU-A, Opus with a header extension, padding, RTX-like payloads), NACK lists,
RTCP/RTP for the protect target, and transport-cc feedback; the fuzzer mutates from there."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pylibsrtp

from tests.sfu.test_engine_diff import _twcc_fci, h264_stream, opus_stream, rtp, vp8_stream

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def write(name: str, seeds: list[bytes]) -> None:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def main() -> None:
    push = []
    for layer, packets in ((0, vp8_stream(1, 65530, 2**32 - 6000, 4, pid=32766, tl0=255, gop=2)),
                           (3, vp8_stream(2, 1, 1, 2, pid=100, tl0=1, long_pid=False)),
                           (4, vp8_stream(3, 9, 9, 2, pid=5, tl0=5)),
                           (1, h264_stream(4, 100, 100, 2, gop=1)),
                           (2, opus_stream(5, 7, 7, 3))):
        push += [bytes([layer]) + p for p in packets]
    push.append(bytes([0]) + rtp(96, 1, 1, 1, b"", padding=8))  # padding only
    push.append(bytes([2]) + rtp(111, 2, 2, 5, b"\x00\x07" + bytes(40), ext=b"\x21\xab\xcd\x00"))
    push.append(bytes([0xC0]) + push[0][1:])  # a layer switch command, then a keyframe
    write("engine_push", push)
    write("engine_nack", [bytes([0]) + struct.pack("!10H", *range(2990, 3000)),
                          bytes([1]) + struct.pack("!64H", *range(0, 64 * 40, 40)),
                          bytes([0]) + struct.pack("!H", 65535)])
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x1000, 1, 2, 3, 4, 5)
    write("engine_protect", [bytes([2]) + sr, bytes([3]) + sr, bytes([0]) + rtp(96, 1, 1, 1, bytes(100)),
                             bytes([1]) + rtp(96, 2, 2, 1, bytes(1100), ext=b"\x10\x01\x00\x00")])
    # transport-cc feedback: two bytes (how far back from the next number the base lies), then the FCI as a
    # browser writes it (the base bytes are replaced by the target)
    twcc = []
    for back, arrivals in ((20, [1.0 + i / 100 for i in range(20)]),
                           (60, [1.0 + i / 100 if i % 5 else None for i in range(60)]),
                           (10, [1.0, None, None, 9.0, 1.0, None, 2.5, 2.5, 2.51, 30.0]),
                           ):
        fci = _twcc_fci(0, arrivals)
        twcc.append(struct.pack("!H", back) + fci[2:])
    twcc.append(struct.pack("!HHIH", 300, 300, 0, 300))  # a run: 300 not received
    twcc.append(struct.pack("!HHI", 14, 14, 0) + struct.pack("!H", 0x8000 | 0x2AAA) + bytes(7))  # one-bit vector
    write("engine_twcc", twcc)
    # receive: the first byte picks the source (even: the selected address); SRTP and SRTCP protected with the
    # target's first receive key (AEAD_AES_256_GCM, fuzz_common.h's KEY), so the fuzzer starts past authentication
    key = bytes(range(1, 45))
    session = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                 srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM))
    receive = [bytes([0]) + session.protect(packet) for packet in vp8_stream(9, 1, 1, 2, pid=3, tl0=1)[:4]]
    receive.append(bytes([0]) + session.protect_rtcp(sr))
    receive += [bytes([1]) + receive[0][1:], bytes([0, 0, 1, 0, 0]) + bytes(16), bytes([0, 22, 0xFE, 0xFD]) + bytes(9)]
    write("engine_receive", receive)
    # native feedback: the first byte picks the transport (even: the numbered one); then a plaintext compound as
    # subscribers send it (receiver reports, SDES, transport-cc whose base bytes say how far back it lies)
    from sfu import rtcp

    def rr(*fractions: int) -> bytes:
        return rtcp.build_rr(0x77, [rtcp.ReportBlock(0x1000 + i, f, 3, 100, 1, 0, 0) for i, f in enumerate(fractions)])

    def tcc(back: int, arrivals: list[float | None]) -> bytes:
        fci = struct.pack("!H", back) + _twcc_fci(0, arrivals)[2:]
        fci += bytes(-len(fci) % 4)
        return struct.pack("!BBHII", 0x80 | 15, 205, 2 + len(fci) // 4, 0x77, 0x1000) + fci

    sdes = rtcp.build_sdes(0x77, "student")
    write("engine_feedback", [bytes([0]) + rr(0, 2) + sdes, bytes([0]) + tcc(20, [1.0 + i / 100 for i in range(20)]),
                              bytes([0]) + rr(0) + sdes + tcc(60, [1.0 if i % 3 else None for i in range(60)]),
                              bytes([1]) + rr(9) + sdes, bytes([1]) + tcc(10, [1.0] * 10),
                              bytes([0]) + rr() + rtcp.build_nack(0x77, 0x1000, [1, 2, 40]),
                              bytes([0]) + rtcp.build_pli(0x77, 0x1000) + sdes])


if __name__ == "__main__":
    main()
