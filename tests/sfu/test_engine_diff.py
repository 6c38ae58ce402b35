"""The native engine against its Python reference: the same recorded packet sequences and commands through both,
and the same bytes out, before encryption (the capture hook) and after it (same keys, same libsrtp).

Each scenario is a list of commands replayed on a fresh engine of each kind; everything an engine returns
(flags, missing packets, layer-switch events, counters) is compared too.
"""

from __future__ import annotations

import itertools
import random
import socket
import struct
import time

import pylibsrtp
import pytest

from sfu.engine import CODEC_H264, CODEC_OTHER, CODEC_VP8, F_KEYFRAME, PythonEngine, native_engine_class
from sfu.engine.reference import REPLAY_MAX, TX_WINDOW
from sfu.rtp import parse_rtp

NativeEngine = native_engine_class()
pytestmark = pytest.mark.skipif(NativeEngine is None, reason="native engine not built (make install builds it)")

VP8_PT, H264_PT, OPUS_PT = 96, 102, 111
PROFILES = {
    "AES128_CM_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}


# ---- recorded publisher streams ------------------------------------------------------------------------------

def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False, *, ext: bytes = b"",
        padding: int = 0) -> bytes:
    b0 = 0x80 | (0x10 if ext else 0) | (0x20 if padding else 0)
    head = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    if ext:
        head += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    tail = b"\x00" * (padding - 1) + bytes([padding]) if padding else b""
    return head + payload + tail


def vp8_payload(picture_id: int, tl0: int, keyframe: bool, start: bool, size: int, *, long_pid: bool = True,
                rng: random.Random) -> bytes:
    desc = bytearray([0x90 if start else 0x80, 0xC0])  # X, S; I and L present
    desc += struct.pack("!H", 0x8000 | (picture_id & 0x7FFF)) if long_pid else bytes([picture_id & 0x7F])
    desc.append(tl0 & 0xFF)
    body = bytes([0x00 if keyframe and start else 0x01]) + (b"\x9d\x01\x2a\x80\x02\xe0\x01" if keyframe else b"")
    return bytes(desc) + body + rng.randbytes(max(0, size - len(body)))


def vp8_stream(ssrc: int, first_seq: int, first_ts: int, frames: int, *, pid: int, tl0: int, gop: int = 10,
               per_frame: int = 3, long_pid: bool = True, seed: int = 1) -> list[bytes]:
    """A VP8 layer: `per_frame` packets a frame, a keyframe every `gop` frames, picture ids counting up."""
    rng = random.Random(seed)
    packets = []
    seq, ts = first_seq, first_ts
    for f in range(frames):
        key = f % gop == 0
        for k in range(per_frame):
            payload = vp8_payload(pid + f, tl0 + f, key, k == 0, rng.randrange(20, 300), long_pid=long_pid, rng=rng)
            packets.append(rtp(VP8_PT, seq, ts, ssrc, payload, marker=k == per_frame - 1))
            seq += 1
        ts += 3000
    return packets


def h264_stream(ssrc: int, first_seq: int, first_ts: int, frames: int, gop: int = 8, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    packets = []
    seq, ts = first_seq, first_ts
    for f in range(frames):
        if f % gop == 0:  # STAP-A with SPS + PPS, then an IDR in FU-A
            sps, pps = b"\x67\x42\xc0\x1f" + rng.randbytes(8), b"\x68\xce\x3c\x80"
            stap = b"\x18" + struct.pack("!H", len(sps)) + sps + struct.pack("!H", len(pps)) + pps
            packets.append(rtp(H264_PT, seq, ts, ssrc, stap))
            seq += 1
            packets.append(rtp(H264_PT, seq, ts, ssrc, b"\x7c\x85" + rng.randbytes(200)))
            seq += 1
            packets.append(rtp(H264_PT, seq, ts, ssrc, b"\x7c\x45" + rng.randbytes(100), marker=True))
        else:
            packets.append(rtp(H264_PT, seq, ts, ssrc, b"\x41" + rng.randbytes(rng.randrange(10, 400)),
                               marker=True))
        seq += 1
        ts += 3000
    return packets


def opus_stream(ssrc: int, first_seq: int, first_ts: int, count: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    return [rtp(OPUS_PT, first_seq + i, first_ts + 960 * i, ssrc, rng.randbytes(rng.randrange(3, 160)),
                ext=b"\x10\xff\x00\x00") for i in range(count)]


# ---- replaying a scenario on an engine ---------------------------------------------------------------------

KEY = bytes(range(1, 61))


def replay(engine_class: type, commands: list[tuple], profile: str = "AES128_CM_SHA1_80") -> tuple[list, list]:
    """Run the commands; returns (what every command returned, the capture)."""
    engine = engine_class()
    capture: list = []
    engine.set_capture(capture)
    results: list = []
    srtp_profile, key_len = PROFILES[profile]
    for command in commands:
        name, *args = command
        if name == "set_srtp":
            args = [args[0], srtp_profile, KEY[args[1]: args[1] + key_len]]
        try:
            results.append((name, getattr(engine, name)(*args)))
        except Exception as exc:  # both engines must refuse the same commands
            results.append((name, "error", type(exc).__name__.replace("PythonEngineError", "EngineError")))
    return results, capture


def assert_same(commands: list[tuple], profile: str = "AES128_CM_SHA1_80") -> list:
    py_results, py_capture = replay(PythonEngine, commands, profile)
    c_results, c_capture = replay(NativeEngine, commands, profile)
    assert len(c_capture) == len(py_capture)
    for i, (py, c) in enumerate(zip(py_capture, c_capture, strict=True)):
        assert c[0] == py[0], f"packet {i}: transport"
        assert c[1] == py[1], f"packet {i}: plaintext differs:\n python {py[1].hex()}\n native {c[1].hex()}"
        assert c[2] == py[2], f"packet {i}: ciphertext differs"
    assert c_results == py_results
    return py_capture


def subscribers(n: int, twcc: bool = True, rtx: bool = True, clock_rate: int = 90000) -> list[tuple]:
    """n transports with keys, each with one slot bound (slot i on transport i)."""
    commands: list[tuple] = []
    for i in range(n):
        commands += [("add_transport",), ("set_srtp", i, i)]
        if twcc and i % 2 == 0:
            commands.append(("set_twcc", i, 3 + i % 5))
        commands += [("add_slot", i, clock_rate),
                     ("bind_slot", i, 0x1000 + i, 100 + i % 3, 0x2000 + i if rtx and i % 3 else None,
                      101 if rtx and i % 3 else None)]
    return commands


def pushes(sid: int, packets: list[bytes], start: float = 1000.0, step: float = 0.01) -> list[tuple]:
    return [("push", sid, p, start + i * step) for i, p in enumerate(packets)]


def reading(slots: int, streams: int, transports: int) -> list[tuple]:
    return ([("slot_info", s) for s in range(slots)] + [("current", s) for s in range(slots)]
            + [("bytes_out", s) for s in range(slots)]
            + [("stream_stats", s) for s in range(streams)]
            + [("transport_stats", t) for t in range(transports)] + [("events",), ("totals",)])


# ---- scenarios ---------------------------------------------------------------------------------------------

def test_vp8_fanout_loss_reordering_duplicates() -> None:
    packets = vp8_stream(0xA1, 100, 5000, 40, pid=1000, tl0=7)
    rng = random.Random(5)
    played = [p for p in packets if rng.random() > 0.1]  # 10% loss
    for i in range(0, len(played) - 3, 7):  # reordering
        played[i], played[i + 2] = played[i + 2], played[i]
    played += played[10:14]  # duplicates, late
    commands = [("add_stream", CODEC_VP8, True, VP8_PT), *subscribers(4)]
    commands += [("attach", i, [0], True, False) for i in range(4)]
    commands += [("start", i) for i in range(4)] + pushes(0, played)
    commands += [("retransmit", i, list(range(100, 200, 3))) for i in range(4)]  # a NACK burst
    commands += reading(4, 1, 4)
    captured = assert_same(commands)
    assert len(captured) > 4 * 90  # every subscriber got the stream and its retransmissions


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_srtp_profiles_and_decryption(profile: str) -> None:
    """Same ciphertext from both; and pylibsrtp, given the subscriber's key, decrypts the native output to the
    plaintext the capture hook saw."""
    commands = [("add_stream", CODEC_OTHER, False, OPUS_PT), *subscribers(2)]
    commands += [("attach", i, [0], False, False) for i in range(2)]
    commands += pushes(0, opus_stream(0x55, 65500, 2**32 - 5000, 80))  # wraps sequence and timestamp
    commands += [("retransmit", 1, [65510, 65535, 0, 3])]
    commands += [("protect_rtcp", 0, struct.pack("!BBHI", 0x80, 201, 1, 0x1000)),
                 ("send_rtcp", 0, struct.pack("!BBHI", 0x80, 201, 1, 0x1000)),  # no path here: not sent
                 ("protect_rtp", 1, rtp(100, 7, 9, 0x1001, b"probe" * 10))]
    assert_same(commands, profile)
    _, capture = replay(NativeEngine, commands, profile)
    srtp_profile, key_len = PROFILES[profile]
    receivers = {}
    for tid in (0, 1):
        policy = pylibsrtp.Policy(key=KEY[tid: tid + key_len], ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                  srtp_profile=srtp_profile)
        policy.window_size = 1024
        policy.allow_repeat_tx = True
        receivers[tid] = pylibsrtp.Session(policy)
    assert len(capture) == 2 * 80 + 4
    for tid, plain, cipher in capture:
        assert cipher is not None and cipher != plain
        assert receivers[tid].unprotect(cipher) == plain


def test_simulcast_layer_switches_at_keyframes_and_paused_layers() -> None:
    low = vp8_stream(0xB0, 1, 10, 60, pid=50, tl0=1, gop=15, seed=7)
    mid = vp8_stream(0xB1, 40000, 777777, 60, pid=32700, tl0=250, gop=20, seed=8)  # picture id and tl0 wrap
    high = vp8_stream(0xB2, 65000, 2**32 - 40000, 60, pid=9, tl0=3, gop=25, long_pid=False, seed=9)
    commands = [("add_stream", CODEC_VP8, True, VP8_PT) for _ in range(3)] + subscribers(3)
    commands += [("attach", i, [0, 1, 2], True, False) for i in range(3)]
    commands += [("start", i) for i in range(3)]
    t = 1000.0
    for f in range(60):
        for layer, packets in enumerate((low, mid, high)):
            if layer == 2 and 20 <= f < 35:
                continue  # the publisher paused the top layer
            for p in packets[3 * f: 3 * f + 3]:
                commands.append(("push", layer, p, t))
                t += 0.003
        if f == 5:
            commands += [("set_target", 0, 1), ("set_target", 1, 2), ("set_target", 2, 2)]
        if f == 30:
            commands += [("set_target", 1, 0), ("set_paused", 2, True)]
        if f == 40:
            commands += [("set_target", 0, 2), ("set_paused", 2, False), ("restart", 2)]
        if f % 9 == 0:
            commands += [("retransmit", i, [(s * 37) & 0xFFFF for s in range(40)]) for i in range(3)]
            commands.append(("events",))
    commands += reading(3, 3, 3)
    captured = assert_same(commands)
    assert len(captured) > 200


def test_publisher_restart_keeps_numbers_continuous() -> None:
    first = h264_stream(0xC0, 65530, 2**32 - 9000, 20)
    second = h264_stream(0xC1, 300, 123, 20, seed=4)
    commands = [("add_stream", CODEC_H264, True, H264_PT), *subscribers(2, rtx=False)]
    commands += [("attach", i, [0], True, False) for i in range(2)] + pushes(0, first)
    commands += [("remove_stream", 0), ("add_stream", CODEC_H264, True, H264_PT)]
    commands += [("attach", i, [1], True, False) for i in range(2)]
    commands += pushes(1, second, start=1001.0)
    commands += [("retransmit", 0, list(range(65530, 65536)) + list(range(0, 40)))]
    commands += reading(2, 0, 2)
    captured = assert_same(commands)
    seqs = [struct.unpack_from("!H", plain, 2)[0] for tid, plain, _ in captured if tid == 1]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "numbering stays continuous"


def test_joiner_gets_the_group_of_pictures() -> None:
    packets = vp8_stream(0xD0, 10, 10, 12, pid=3, tl0=3, gop=100)
    commands = [("add_stream", CODEC_VP8, True, VP8_PT), *pushes(0, packets), *subscribers(1)]
    commands += [("attach", 0, [0], True, False), ("start", 0), *reading(1, 1, 1)]
    captured = assert_same(commands)
    assert len(captured) == len(packets)


def test_a_joiner_of_a_long_group_gets_its_keyframe_alone_then_the_next_keyframe() -> None:
    """A group longer than REPLAY_MAX packets is not replayed in one burst: the joiner gets the keyframe's packets,
    `start` asks for a keyframe, delta frames wait, and the next keyframe follows with no gap in the numbering."""
    frames = REPLAY_MAX // 3 + 5  # three packets a frame: the group outgrows the replay
    stream = vp8_stream(0xD0, 65500, 10, frames + 5, pid=3, tl0=3, gop=frames + 2)  # keyframes: 0, frames + 2
    group, late, key_after = stream[:3 * frames], stream[3 * frames:3 * frames + 6], stream[3 * frames + 6:]
    commands = [("add_stream", CODEC_VP8, True, VP8_PT), *pushes(0, group), *subscribers(1),
                ("attach", 0, [0], True, False), ("start", 0), *reading(1, 1, 1),
                *pushes(0, late, start=1001.0), *pushes(0, key_after, start=1002.0)]
    captured = assert_same(commands)
    assert len(captured) == 3 + len(key_after), "the keyframe's three packets, no delta frame, then the next group"
    # past the RTP header (the copies carry a transport-wide number) and the VP8 descriptor (5 bytes: rewritten ids)
    payloads = [plain[parse_rtp(plain).payload_offset + 5:] for _, plain, _ in captured]
    assert payloads == [p[12 + 5:] for p in group[:3] + key_after]
    assert payloads[0][0] == 0x00 and payloads[3][0] == 0x00, "each part starts a keyframe"
    seqs = [struct.unpack_from("!H", plain, 2)[0] for _, plain, _ in captured]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "numbering stays continuous"
    results, _ = replay(PythonEngine, commands)
    assert ("start", True) in results, "and a keyframe is asked for"


def test_a_joiner_whose_dtls_is_not_done_starts_on_the_cached_pictures() -> None:
    """The subscriber's m-section is bound (the answer came) but DTLS is not done: a keyframe the publisher sends
    then cannot reach it. It must not count as the consumer's start, or the start at connect would skip the cached
    pictures and the joiner would get delta frames first (the bench saw joiners wait 1-3 s for a keyframe).
    Once the keys come, `start` replays the group from its keyframe."""
    early = vp8_stream(0xD0, 10, 10, 4, pid=3, tl0=3, gop=100)
    later = vp8_stream(0xD0, 22, 12010, 8, pid=7, tl0=7, gop=4, seed=2)  # keyframes at its frames 0 and 4
    commands = [("add_stream", CODEC_VP8, True, VP8_PT), *pushes(0, early),
                ("add_transport",), ("add_slot", 0, 90000), ("bind_slot", 0, 0x1000, 100, None, None),
                ("attach", 0, [0], True, False), *pushes(0, later, start=1001.0),  # DTLS under way: no keys
                ("set_srtp", 0, 0), ("start", 0), *reading(1, 1, 1)]
    captured = assert_same(commands)
    group = later[4 * 3:]  # the last keyframe's frame and the three after it
    assert len(captured) == len(group), "the joiner got the cached group, and nothing before its keys"
    assert all(cipher is not None for _, _, cipher in captured)
    body = 12 + 5  # RTP header, then the VP8 descriptor (X, I with a 15-bit picture id, L)
    assert captured[0][1][body] == 0x00, "its first packet starts a keyframe"
    assert [plain[body:] for _, plain, _ in captured] == [p[body:] for p in group]
    results, _ = replay(PythonEngine, commands)
    totals = next(value for name, value in results if name == "totals")
    assert totals["drops"]["srtp_error"] == 2  # the two keyframes sent while the keys were missing


def test_rtx_repeats_what_was_sent_after_a_switch() -> None:
    """The bug of the old Consumer._retransmit: it asked the live VP8 rewriter again, so after a layer switch a
    retransmission carried another picture id than the original. The engine repeats the ids it sent."""
    low = vp8_stream(0xE0, 1, 10, 10, pid=100, tl0=10, gop=5)
    high = vp8_stream(0xE1, 5000, 10, 10, pid=20000, tl0=200, gop=5, seed=11)
    commands = [("add_stream", CODEC_VP8, True, VP8_PT), ("add_stream", CODEC_VP8, True, VP8_PT)]
    commands += subscribers(1, twcc=False, rtx=False)
    commands += [("attach", 0, [0, 1], True, False), *pushes(0, low[:15])]
    commands += [("set_target", 0, 1), *pushes(1, high[:30], start=1001.0)]  # switches at its first keyframe
    commands += [("retransmit", 0, list(range(1, 16)))]
    captured = assert_same(commands)
    originals = {struct.unpack_from("!H", plain, 2)[0]: plain for _, plain, _ in captured[:15]}
    for _, plain, _ in captured[-15:]:
        seq = struct.unpack_from("!H", plain, 2)[0]
        assert plain == originals[seq], "a retransmission is the packet that was sent"


def test_retransmissions_without_rtx_stay_in_the_senders_replay_window() -> None:
    """Without RTX a retransmission repeats its sequence number, and so its SRTP index: libsrtp will not protect
    one older than the sender's replay window (TX_WINDOW), so neither engine sends those. The younger ones leave
    as the packet first sent, byte for byte, encrypted alike."""
    packets = opus_stream(0x57, 1, 5000, TX_WINDOW + 100)
    commands = [("add_stream", CODEC_OTHER, False, OPUS_PT), *subscribers(1, twcc=False, rtx=False)]
    commands += [("attach", 0, [0], False, False), *pushes(0, packets)]
    _, first = replay(PythonEngine, commands)
    sent = {struct.unpack_from("!H", plain, 2)[0]: (plain, cipher) for _, plain, cipher in first}
    last = struct.unpack_from("!H", first[-1][1], 2)[0]
    young = [(last - k) & 0xFFFF for k in (0, 5, TX_WINDOW - 1)]
    old = [(last - k) & 0xFFFF for k in (TX_WINDOW, TX_WINDOW + 50)]
    assert all(seq in sent for seq in young + old)
    commands.append(("retransmit", 0, old + young))
    captured = assert_same(commands)
    again = captured[len(first):]
    assert [struct.unpack_from("!H", plain, 2)[0] for _, plain, _ in again] == young
    for _, plain, cipher in again:
        assert (plain, cipher) == sent[struct.unpack_from("!H", plain, 2)[0]]


def test_drops_are_counted_by_reason() -> None:
    packets = vp8_stream(0xF0, 1, 1, 6, pid=1, tl0=1, gop=3)
    commands = [("add_stream", CODEC_VP8, True, VP8_PT), *subscribers(2)]
    commands += [("attach", 0, [0], True, False), ("attach", 1, [0], True, True)]
    commands += [("push", 0, packets[1], 1.0),  # not a keyframe: before_keyframe / paused
                 ("push", 0, b"\x80" * 5, 1.0),  # malformed
                 ("push", 0, rtp(97, 1, 1, 0xF0, b"x"), 1.0),  # wrong payload type
                 ("push", 0, rtp(VP8_PT, 2, 1, 0xF0, b"", padding=4), 1.0),  # padding only
                 ("set_blocked", 0, True), ("push", 0, packets[0], 1.0), ("set_blocked", 0, False)]
    results, _ = replay(NativeEngine, commands + reading(2, 1, 2))
    assert_same(commands + reading(2, 1, 2))
    info = {name: value for name, value in results if name in ("slot_info", "stream_stats")}
    stream = next(v for n, v in results if n == "stream_stats")
    assert stream["drops"] == {"malformed": 1, "wrong_payload_type": 1, "padding": 1, "blocked": 1}
    slots = [v for n, v in results if n == "slot_info"]
    assert slots[0]["drops"] == {"before_keyframe": 1} and slots[1]["drops"] == {"paused": 1}
    assert info


def test_random_command_sequences() -> None:
    """Seeded random interleavings of everything, checked packet by packet."""
    for seed in range(6):
        rng = random.Random(seed)
        layers = [vp8_stream(0x100 + k, rng.randrange(65536), rng.randrange(2**32), 40, pid=rng.randrange(32768),
                             tl0=rng.randrange(256), gop=rng.randrange(3, 12), long_pid=rng.random() < 0.7,
                             seed=seed * 10 + k) for k in range(3)]
        commands: list[tuple] = [("add_stream", CODEC_VP8, True, VP8_PT) for _ in range(3)]
        commands += subscribers(5, rtx=rng.random() < 0.5)
        commands += [("set_loss", rng.randrange(5), rng.randrange(300), rng.randrange(2**32), rng.random() < 0.5)]
        commands += [("attach", i, [0, 1, 2] if i < 4 else [rng.randrange(3)], True, rng.random() < 0.2)
                     for i in range(5)]
        positions = [0, 0, 0]
        t = 50.0
        for _ in range(400):
            r = rng.random()
            if r < 0.75:
                k = rng.randrange(3)
                if positions[k] < len(layers[k]):
                    jitter = rng.randrange(-2, 3) if rng.random() < 0.2 else 0
                    index = max(0, min(len(layers[k]) - 1, positions[k] + jitter))
                    commands.append(("push", k, layers[k][index], t))
                    positions[k] += 1 if rng.random() > 0.05 else 2  # loss
            elif r < 0.82:
                commands.append(("set_target", rng.randrange(5), rng.randrange(3)))
            elif r < 0.86:
                commands.append(("set_paused", rng.randrange(5), rng.random() < 0.5))
                if rng.random() < 0.1:
                    commands += [("unbind_slot", 1), ("bind_slot", 1, 0x1001, 101, None, None)]
            elif r < 0.90:
                commands.append(("start", rng.randrange(5)))
            elif r < 0.97:
                commands.append(("retransmit", rng.randrange(5), [rng.randrange(65536) for _ in range(5)]
                                 + list(range(rng.randrange(65536), 65536))[:20]))
            else:
                commands.append(("events",))
            t += rng.random() * 0.02
        commands += reading(5, 3, 5)
        assert_same(commands, rng.choice(sorted(PROFILES)))


def test_keyframe_flag_and_unknown_objects() -> None:
    commands = [("add_stream", CODEC_H264, True, H264_PT), ("push", 0, h264_stream(1, 1, 1, 1)[0], 1.0),
                ("push", 5, b"", 1.0), ("add_slot", 9, 90000), ("slot_info", 3), ("attach", 0, [], True, False),
                ("protect_rtp", 0, b"\x80" * 20), ("set_twcc", 0, 3), ("bytes_out", 7)]
    results, _ = replay(NativeEngine, commands)
    assert results[1] == ("push", F_KEYFRAME | 4)
    assert [r[1] for r in results[2:]] == ["error"] * 7
    assert_same(commands)


@pytest.mark.parametrize("engine_class", [PythonEngine, NativeEngine], ids=["python", "native"])
def test_copies_reach_loopback_sockets(engine_class: type) -> None:
    """The real send: sendmmsg (native) or sendto (Python) on a socket, to each subscriber's address; what
    arrives decrypts, with the subscriber's key, to the packet the capture hook saw, in order."""
    import socket

    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    receivers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for r in receivers:
            r.bind(("127.0.0.1", 0))
            r.settimeout(2)
        engine = engine_class()
        capture: list = []
        engine.set_capture(capture)
        sid = engine.add_stream(CODEC_VP8, True, VP8_PT)
        srtp_profile, key_len = PROFILES["AEAD_AES_128_GCM"]
        for i, r in enumerate(receivers):
            tid = engine.add_transport()
            engine.set_srtp(tid, srtp_profile, KEY[i: i + key_len])
            engine.set_path(tid, out.fileno(), "127.0.0.1", r.getsockname()[1])
            slot = engine.add_slot(tid, 90000)
            engine.bind_slot(slot, 0x500 + i, 96, None, None)
            engine.attach(slot, [sid], True, False)
        for n, packet in enumerate(vp8_stream(0x77, 1, 1, 10, pid=5, tl0=5)):
            engine.push(sid, packet, n * 0.01)
        sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x500, 1, 2, 3, 4, 5)
        assert all(engine.send_rtcp(i, sr) for i in range(3))  # RTCP from Python, same context and socket
        for i, r in enumerate(receivers):
            policy = pylibsrtp.Policy(key=KEY[i: i + key_len], ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                      srtp_profile=srtp_profile)
            session = pylibsrtp.Session(policy)
            expected = [plain for tid, plain, _ in capture if tid == i]
            assert len(expected) == 31 and expected[-1] == sr
            got = [r.recv(2048) for _ in expected]
            assert [session.unprotect(d) for d in got[:-1]] + [session.unprotect_rtcp(got[-1])] == expected
            assert engine.transport_stats(i)["packets_out"] == 31
    finally:
        out.close()
        for r in receivers:
            r.close()


def _twcc_fci(base: int, arrivals: list[float | None]) -> bytes:
    """A subscriber's feedback, as a browser writes it: what arrived of base, base+1, ... (None: lost)."""
    from sfu import rtcp
    from sfu.bwe import TwccFeedback

    record = TwccFeedback()
    record.record(base, arrivals[0] if arrivals[0] is not None else 1.0)  # anchors the base
    record._take(base)
    record.next_base = base
    for i, arrival in enumerate(arrivals):
        if arrival is not None:
            record.record((base + i) & 0xFFFF, arrival)
    record.highest = base + len(arrivals) - 1
    packet = record.build(1, 2)
    assert packet is not None
    [parsed] = rtcp.parse_rtcp(packet)
    return parsed.fci


def test_transport_cc_feedback_is_read_alike() -> None:
    """A subscriber's TWCC feedback read by each engine (twcc_feedback): the same counts of reported and lost,
    the same refusals (malformed, more statuses than sent, over the budget, reserved symbols, overruns, random
    bytes), the same counters; numbers are taken once, so a repeated feedback reports nothing new."""
    rng = random.Random(21)
    packets = vp8_stream(0xA1, 100, 5000, 30, pid=1000, tl0=7)
    commands: list[tuple] = [("add_stream", CODEC_VP8, True, VP8_PT), *subscribers(3)]
    commands += [("attach", i, [0], True, False) for i in range(3)] + [("start", i) for i in range(3)]
    commands += pushes(0, packets)  # transports 0 and 2 number their copies (set_twcc)
    sent = len(packets)
    for tid in (0, 2):
        commands.append(("twcc_feedback", tid, _twcc_fci(0, [1.0 + i / 100 if i % 7 else None for i in range(20)])))
        commands.append(("twcc_feedback", tid, _twcc_fci(0, [1.0] * 20)))  # again: nothing new to report
        commands.append(("twcc_feedback", tid, _twcc_fci(20, [2.0 + i / 50 if rng.random() > 0.2 else None
                                                            for i in range(sent - 20)])))
        commands.append(("twcc_feedback", tid, _twcc_fci(0, [1.0] * (sent + 5))))  # more than was sent
        commands.append(("twcc_feedback", tid, struct.pack("!HHI", 0, 10, 0) + struct.pack("!H", 0x6000 | 10)))
        commands.append(("twcc_feedback", tid, struct.pack("!HHI", 0, 10, 0) + struct.pack("!H", 0x2000 | 10)))
        commands.append(("twcc_feedback", tid, b"\x00\x01"))
        commands += [("twcc_feedback", tid, bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
                     for _ in range(200)]
        commands += [("twcc_feedback", tid, struct.pack("!HH", 0, rng.randrange(sent)) + bytes(
            rng.randrange(256) for _ in range(rng.randrange(4, 60)))) for _ in range(300)]
    commands.append(("twcc_feedback", 1, _twcc_fci(0, [1.0] * 5)))  # transport 1 numbers nothing: refused
    commands += pushes(0, vp8_stream(0xA1, 130, 95000, 10, pid=1030, tl0=12))
    commands += [("twcc_feedback", 0, _twcc_fci(sent, [3.0] * 10)), ("twcc_feedback", 7, b"")]
    commands += reading(3, 1, 3)
    results = [r for r in (replay(PythonEngine, commands)[0]) if r[0] in ("twcc_feedback", "transport_stats")]
    assert_same(commands)
    feedback = [r[1] for r in results if r[0] == "twcc_feedback"]
    assert feedback[0] == (20, 3) and feedback[1] == (0, 0)  # 20 reported, 3 of them (0, 7, 14) lost; then none
    assert feedback[3] is None and feedback[4] is None and feedback[6] is None
    assert ("twcc_feedback", "error", "EngineError") in results
    stats = [r[1] for r in results if r[0] == "transport_stats"]
    assert stats[0]["twcc_refused"] > 0 and stats[0]["twcc_reported"] >= sent and stats[1]["twcc_feedbacks"] == 0


def test_transport_cc_feedback_reading_is_budgeted() -> None:
    """Replaying one valid feedback costs at most two statuses read per number sent (plus the slack)."""
    packets = vp8_stream(0xA1, 100, 5000, 40, pid=1000, tl0=7)
    commands: list[tuple] = [("add_stream", CODEC_VP8, True, VP8_PT), *subscribers(1), ("attach", 0, [0], True,
                                                                                          False), ("start", 0)]
    commands += pushes(0, packets)
    fci = struct.pack("!HHI", 0, len(packets), 0) + struct.pack("!H", len(packets))  # run: all "not received"
    commands += [("twcc_feedback", 0, fci)] * 100 + [("transport_stats", 0)]
    assert_same(commands)
    results = replay(NativeEngine, commands)[0]
    read = sum(1 for name, r in results if name == "twcc_feedback" and r is not None)
    assert read * len(packets) <= 2 * len(packets) + 2000
    assert results[-1][1]["twcc_refused"] == 100 - read


def _receive(engine_class: type, profile: str, datagrams: list[tuple[int, bytes]],
             feedback: bool = False) -> tuple[list, dict, dict]:
    """One engine reads what two sources sent to its socket (source 0: the transport's selected address)."""
    import socket
    import time

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    sources = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for s in sources:
            s.bind(("127.0.0.1", 0))
        engine = engine_class()
        tid = engine.add_transport()
        srtp_profile, key_len = PROFILES[profile]
        engine.set_srtp_rx(tid, srtp_profile, KEY[:key_len])
        engine.set_path(tid, server.fileno(), *sources[0].getsockname())
        engine.set_feedback(tid, feedback)
        received: list = []
        for i in range(0, len(datagrams), 50):  # batches smaller than the socket buffer
            for source, data in datagrams[i:i + 50]:
                sources[source].sendto(data, server.getsockname())
            time.sleep(0.05)
            while batch := engine.recv(server.fileno()):
                received += batch
        names = {s.getsockname(): f"source{i}" for i, s in enumerate(sources)}
        # the source ports differ from run to run: name them; arrivals are checked on their own (below)
        received = [(t, k, d, names.get(a, a) if a else None) for t, k, d, a, _ in received]
        return received, engine.rx_stats(), engine.rx_stats(tid)
    finally:
        server.close()
        for s in sources:
            s.close()


@pytest.mark.parametrize("profile", list(PROFILES))
def test_receive_unprotects_and_sorts_alike(profile: str) -> None:
    """Native receive (recvmmsg + libsrtp unprotect, issue 14) against the reference: SRTP and SRTCP from the
    selected address come out unprotected for the transport; a replayed packet, a tampered one, one protected with
    another key fail authentication and are dropped; STUN, DTLS, short datagrams and anything from another address
    go to the slow path unchanged, with their source."""
    srtp_profile, key_len = PROFILES[profile]
    sender = pylibsrtp.Session(pylibsrtp.Policy(key=KEY[:key_len], ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=srtp_profile))
    stranger = pylibsrtp.Session(pylibsrtp.Policy(key=KEY[1:key_len + 1],
                                                  ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                  srtp_profile=srtp_profile))
    rng = random.Random(14)
    datagrams: list[tuple[int, bytes]] = []
    packets = vp8_stream(0x111, 65500, 1000, 40, pid=7, tl0=1) + opus_stream(0x222, 1, 1, 30)
    for n, packet in enumerate(packets):
        protected = sender.protect(packet)
        datagrams.append((0, protected))
        if n % 7 == 0:
            datagrams.append((0, protected))  # replayed: dropped by the replay window
        if n % 11 == 0:
            tampered = bytearray(protected)
            tampered[-1] ^= 1
            datagrams.append((0, bytes(tampered)))
        if n % 13 == 0:
            datagrams.append((1, protected))  # the same bytes from another address: slow path
        if n % 5 == 0:
            sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x111, n, 2, 3, 4, 5)
            datagrams.append((0, sender.protect_rtcp(sr)))
        if n % 17 == 0:
            datagrams.append((0, stranger.protect(packet)))  # another key
    datagrams += [(0, bytes([0, 1, 0, 0]) + bytes(rng.randrange(256) for _ in range(40))),  # STUN-looking
                  (0, bytes([22, 0xFE, 0xFD]) + bytes(30)), (0, bytes([0x80, 96])), (0, b""),
                  (0, bytes([200]) + bytes(50)), (1, bytes([0x80, 200]) + bytes(30))]
    py = _receive(PythonEngine, profile, datagrams)
    native = _receive(NativeEngine, profile, datagrams)
    assert native == py
    received, totals, per_transport = py
    plain = [d for t, k, d, _ in received if t == 0 and k == 0]
    assert plain == packets  # every media packet once, unprotected, in order
    assert sum(1 for t, k, _, _ in received if t == 0 and k == 1) == len(packets[::5])
    assert totals["auth_failed"] == per_transport["auth_failed"] == len(packets[::7]) + len(packets[::11]) + len(
        packets[::17])
    assert all(a == "source1" for t, _, _, a in received if t == -1 and a != "source0")


def _until_the_kernel_stamps(server: socket.socket, source: socket.socket) -> None:
    """Linux turns receive stamping on for the whole machine through a static key that it flips from a work queue
    (net_enable_timestamp): when the socket of `stamp_arrivals` is the only stamped one on the machine, datagrams
    that arrive before that work ran carry no stamp, and the kernel fills in the time of the read. A probe that
    waited in the queue shows when stamping is on; the datagrams the test times are sent after that."""
    from sfu.engine.reference import SO_TIMESTAMPNS

    deadline = time.monotonic() + 5
    while True:
        source.sendto(b"probe", server.getsockname())
        time.sleep(0.01)
        _, ancillary, _, _ = server.recvmsg(64, socket.CMSG_SPACE(16))
        read = time.time()
        stamps = [struct.unpack("@qq", payload) for level, kind, payload in ancillary
                  if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        if stamps and read - (stamps[0][0] + stamps[0][1] * 1e-9) >= 0.005:
            return
        assert time.monotonic() < deadline, "the kernel never stamped a datagram's arrival"


@pytest.mark.parametrize("engine_class", [PythonEngine, NativeEngine], ids=["python", "native"])
def test_arrival_is_when_the_kernel_received_the_datagram(engine_class: type) -> None:
    """TWCC feedback reports each packet's arrival; taken when a busy event loop finally reads the socket, a stall
    looks to the publisher's congestion control like queueing in the network, and it lowers its rate. With the
    socket's receive stamps on, both engines report when the datagram reached the machine, on the monotonic clock."""
    from sfu.engine import stamp_arrivals

    sender_key = KEY[:30]
    sender = pylibsrtp.Session(pylibsrtp.Policy(key=sender_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    for stamped in (True, False):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            server.bind(("127.0.0.1", 0))
            server.setblocking(False)
            source.bind(("127.0.0.1", 0))
            if stamped:
                stamp_arrivals(server)
                _until_the_kernel_stamps(server, source)
            engine = engine_class()
            tid = engine.add_transport()
            engine.set_srtp_rx(tid, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, sender_key)
            engine.set_path(tid, server.fileno(), *source.getsockname())
            packet = vp8_stream(0x333, 1000 + stamped, 90000, 1, pid=1, tl0=1)[0]
            sent = time.monotonic()
            source.sendto(sender.protect(packet), server.getsockname())
            source.sendto(b"\x00\x01" + bytes(18), server.getsockname())  # STUN-looking: the slow path, stamped too
            delivered = time.monotonic()  # loopback delivers within sendto
            time.sleep(0.3)  # the event loop was busy
            before_read = time.monotonic()
            batch = engine.recv(server.fileno())
            assert [(t, k) for t, k, *_ in batch] == [(tid, 0), (-1, 2)]
            for _, _, _, _, arrival in batch:
                if stamped:
                    assert sent - 0.01 <= arrival <= delivered + 0.01 < before_read, (sent, arrival, before_read)
                else:
                    assert before_read <= arrival <= time.monotonic()
        finally:
            server.close()
            source.close()


def _rr(fractions: list[int], ssrc: int = 0x77) -> bytes:
    blocks = b"".join(struct.pack("!IIIIII", 0x1000 + i, f << 24 | 3, 100, 1, 0, 0) for i, f in enumerate(fractions))
    return struct.pack("!BBHI", 0x80 | len(fractions), 201, 1 + 6 * len(fractions), ssrc) + blocks


def _sdes() -> bytes:
    from sfu import rtcp

    return rtcp.build_sdes(0x77, "student")


def _twcc(fci: bytes) -> bytes:
    fci += bytes(-len(fci) % 4)
    return struct.pack("!BBHII", 0x80 | 15, 205, 2 + len(fci) // 4, 0x77, 0x1000) + fci


def test_native_feedback_reads_what_python_would_ignore_alike() -> None:
    """Native feedback (set_feedback, rx_feedback): a subscriber's RTCP that holds only receiver reports at or below
    LOSS_QUIET, SDES and one transport-cc feedback is read in the engine (1); a transport-cc loss window above
    LOSS_QUIET comes up as (2, lost, reported) for the estimate; anything else -- NACK, PLI, SR, REMB, a report with
    loss, two feedbacks, transport-cc without numbering, malformed framing, trailing bytes, random bytes -- goes
    to Python untouched (0), and nothing of it was applied (the window and the numbers are left as they were)."""
    from sfu import rtcp

    rng = random.Random(2121)
    packets = vp8_stream(0xA1, 100, 5000, 200, pid=1000, tl0=7)
    commands: list[tuple] = [("add_stream", CODEC_VP8, True, VP8_PT), *subscribers(3)]
    commands += [("attach", i, [0], True, False) for i in range(3)] + [("start", i) for i in range(3)]
    commands += pushes(0, packets)
    commands += [("set_feedback", 0, True), ("set_feedback", 1, True)]  # transport 2: off
    quiet = _twcc(_twcc_fci(0, [1.0 + i / 100 for i in range(30)]))
    lossy = _twcc(_twcc_fci(30, [2.0 if i % 4 else None for i in range(40)]))  # completes a window, 25% lost
    for tid in (0, 1, 2):
        commands += [("rx_feedback", tid, _rr([0, 5]) + _sdes() + quiet), ("rx_feedback", tid, lossy),
                     ("twcc_window", tid), ("rx_stats", tid)]
    others = [_rr([6]), _rr([0]) + _rr([200]), _rr([]) + rtcp.build_nack(0x77, 0x1000, [5, 6]),
              rtcp.build_pli(0x77, 0x1000), rtcp.build_sr(0x1000, 1, 2, 3, 4),
              _twcc(_twcc_fci(70, [3.0] * 5)) + _twcc(_twcc_fci(75, [3.0] * 5)),
              struct.pack("!BBHII", 0x80 | 15, 206, 2, 0x77, 0) + b"REMB",
              _rr([0])[:-4], _rr([0]) + b"\x80", bytes([0x40]) + _rr([0])[1:], _sdes()[:3], b""]
    for data in others:
        commands += [("rx_feedback", 0, data), ("twcc_window", 0)]
    commands += [("rx_feedback", 0, _rr([1]) + _sdes()), ("rx_feedback", 0, _sdes())]
    for _ in range(400):  # random compounds of the three kinds, some broken, and random bytes
        parts = [rng.choice([_rr([rng.choice([0, 3, 5, 6, 255])]), _sdes(), quiet, lossy]) for _ in range(3)]
        data = b"".join(parts[: rng.randrange(1, 4)])
        if rng.random() < 0.3:
            cut = bytearray(data)
            cut[rng.randrange(len(cut))] = rng.randrange(256)
            data = bytes(cut)
        commands.append(("rx_feedback", rng.choice((0, 1)), data))
        commands.append(("rx_feedback", 0, bytes(rng.randrange(256) for _ in range(rng.randrange(60)))))
    commands += [("rx_feedback", 9, b""), ("set_feedback", 9, True), ("twcc_window", 9),
                 ("rx_feedback", 1, _rr([0]) + _sdes())]
    commands += reading(3, 1, 3) + [("rx_stats", t) for t in range(3)] + [("rx_stats",)]
    assert_same(commands)
    results = replay(NativeEngine, commands)[0]
    read = [r[1] for r in results if r[0] == "rx_feedback"]
    assert read[:2] == [(1, 0, 0), (2, 10, 70)]  # transport 0: quiet, then the window of 70 with 10 lost
    assert read[2:4] == [(0, 0, 0), (0, 0, 0)]  # transport 1 numbers nothing: its transport-cc is Python's
    assert read[4:6] == [(0, 0, 0), (0, 0, 0)]  # transport 2: feedback off
    assert all(r == (0, 0, 0) for r in read[6:6 + len(others)])
    assert read[6 + len(others):8 + len(others)] == [(1, 0, 0), (1, 0, 0)]
    assert ("rx_feedback", "error", "EngineError") in results
    assert read[-1] == (1, 0, 0)  # transport 1's quiet report: read in the engine


def test_native_feedback_through_receive_alike() -> None:
    """With native feedback on, the receive path leaves out what the engine read and hands up the rest."""
    from sfu import rtcp

    sender = pylibsrtp.Session(pylibsrtp.Policy(key=KEY[:30], ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    compounds = [_rr([0, 2]) + _sdes(), _rr([40]) + _sdes(), rtcp.build_pli(0x77, 0x1000), _rr([5]),
                 _rr([]) + rtcp.build_nack(0x77, 0x1000, [9])]
    datagrams = [(0, sender.protect_rtcp(c)) for c in compounds]
    for feedback in (False, True):
        py = _receive(PythonEngine, "AES128_CM_SHA1_80", datagrams, feedback)
        native = _receive(NativeEngine, "AES128_CM_SHA1_80", datagrams, feedback)
        assert native == py
        received, totals, per_transport = py
        up = [d for t, k, d, _ in received if t == 0 and k == 1]
        assert up == (compounds if not feedback else [compounds[1], compounds[2], compounds[4]])
        assert totals["consumed"] == per_transport["rtcp_consumed"] == (2 if feedback else 0)


def _sender_reports(engine_class: type) -> tuple[list, list, list]:
    """Three subscribers of a stream (slot 1 unbound, slot 2 on another layer), one publisher SR translated."""
    import socket

    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    try:
        engine = engine_class()
        capture: list = []
        engine.set_capture(capture)
        low, high = engine.add_stream(CODEC_VP8, True, VP8_PT), engine.add_stream(CODEC_VP8, True, VP8_PT)
        srtp_profile, key_len = PROFILES["AEAD_AES_128_GCM"]
        for i in range(4):
            tid = engine.add_transport()
            engine.set_srtp(tid, srtp_profile, KEY[i: i + key_len])
            if i != 3:  # transport 3: no path yet
                engine.set_path(tid, out.fileno(), "127.0.0.1", receiver.getsockname()[1])
            slot = engine.add_slot(tid, 90000)
            engine.bind_slot(slot, 0x500 + i, 96, None, None)
            engine.attach(slot, [low, high] if i == 2 else [low], True, False)
            if i == 2:
                engine.set_target(slot, high)
        for n, packet in enumerate(vp8_stream(0x77, 65530, 2**32 - 100, 10, pid=5, tl0=5)):
            engine.push(low, packet, n * 0.01)
        for n, packet in enumerate(vp8_stream(0x78, 1, 7, 10, pid=5, tl0=5)):
            engine.push(high, packet, n * 0.01)
        engine.unbind_slot(1)
        results = [engine.sender_reports(low, 0x1122334455667788, 2**32 - 10),
                   engine.sender_reports(high, 5 << 32, 1234)]
        try:
            engine.sender_reports(9, 0, 0)
        except Exception as exc:
            results.append(type(exc).__name__.replace("PythonEngineError", "EngineError"))
        ts = [engine.ts_peek(s, 2**32 - 10) for s in range(4)] + [engine.ts_peek(2, 1234)]
        return results + ts, [c for c in capture if c[1][1] == 200], [engine.slot_info(s) for s in range(4)]
    finally:
        out.close()
        receiver.close()


def test_sender_reports_are_translated_alike() -> None:
    """The publisher's SR for a stream, translated natively for every slot carrying it (sender_reports): the same
    bytes from both engines; each has the slot's SSRC, the publisher's NTP time, the RTP time in the slot's
    timeline (ts_peek) and the slot's counts; an unbound slot, one on another layer and one without a path get
    none."""
    from sfu import rtcp

    py = _sender_reports(PythonEngine)
    assert _sender_reports(NativeEngine) == py
    results, reports, infos = py
    assert results[:3] == [1, 1, "EngineError"]
    parsed = [(tid, rtcp.parse_rtcp(plain)[0]) for tid, plain, _ in reports]
    assert [tid for tid, _ in parsed] == [0, 2]
    (_, to0), (_, to2) = parsed
    assert (to0.ssrc, to0.ntp, to0.rtp_timestamp) == (0x500, 0x1122334455667788, results[3])
    assert (to0.packets, to0.octets) == (infos[0]["packets_sent"], infos[0]["octets_sent"])
    assert (to2.ssrc, to2.ntp, to2.rtp_timestamp, to2.packets) == (0x502, 5 << 32, results[7], infos[2]["packets_sent"])
    assert infos[2]["current"] == 1 and infos[2]["packets_sent"] > 0


# ---- routed publisher RTP: forwarded where it is read (recv, or the native reader thread) ---------------------

def _take_all(engine: object, notify: int, want: int, timeout: float = 5.0) -> list:
    """The reader thread's queue until `want` items came (the eventfd says when something is there)."""
    import select

    items: list = []
    deadline = time.monotonic() + timeout
    while len(items) < want and time.monotonic() < deadline:
        select.select([notify], [], [], 0.05)
        items += [item[:5] for item in engine.reader_take()]  # type: ignore[attr-defined]
    return items


def _routed(engine_class: type, mode: str) -> tuple[list, list, dict, dict]:
    """A publisher's camera (routed to its stream) and microphone (not routed) arrive on the engine's socket; one
    subscriber carries the camera. Half-way the camera's route is taken back. Returns what came up to Python (with
    push's flags for pushed packets), the SRTP bytes the subscriber received, and the engine's receive counters."""
    profile, key_len = PROFILES["AEAD_AES_128_GCM"]
    sender = pylibsrtp.Session(pylibsrtp.Policy(key=KEY[:key_len], ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=profile))
    camera = vp8_stream(0x111, 65000, 1000, 60, pid=30000, tl0=250)
    microphone = opus_stream(0x222, 10, 10, 40)
    halves = []
    for n in range(2):
        half = [sender.protect(p) for p in camera[90 * n:90 * n + 90] + microphone[20 * n:20 * n + 20]]
        half.append(sender.protect_rtcp(struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x111, 1, 2, 3, 4, 5)))
        halves.append(half)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    engine = engine_class()
    try:
        for s in (server, source, sink):
            s.bind(("127.0.0.1", 0))
        server.setblocking(False)
        sink.settimeout(0.2)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        publisher = engine.add_transport()
        engine.set_srtp_rx(publisher, profile, KEY[:key_len])
        engine.set_path(publisher, server.fileno(), *source.getsockname())
        sid = engine.add_stream(CODEC_VP8, True, VP8_PT)
        subscriber = engine.add_transport()
        engine.set_srtp(subscriber, profile, KEY[1:key_len + 1])
        engine.set_path(subscriber, server.fileno(), *sink.getsockname())
        slot = engine.add_slot(subscriber, 90000)
        engine.bind_slot(slot, 0xBEEF, 100, None, None)
        engine.attach(slot, [sid], True, False)
        engine.start(slot)
        engine.route(publisher, 0x111, sid)
        # "held": the reader holds a queue of bookkeeping alone up to 20 ms before waking Python (READER_HOLD_US)
        notify = engine.reader_start(20_000 if mode == "held" else 0) if mode != "recv" else None
        if notify is not None:
            engine.reader_add(server.fileno())
        up: list = []
        for n, half in enumerate(halves):
            if n == 1:
                engine.route(publisher, 0x111, -1)  # taken back: Python pushes (here: nobody does)
            for data in half:
                source.sendto(data, server.getsockname())
                time.sleep(0.0002)
            if notify is not None:
                up += _take_all(engine, notify, len(half))
            else:
                time.sleep(0.05)
                while batch := engine.recv(server.fileno()):
                    up += batch
        if notify is not None:
            stats = engine.reader_stats()
            assert stats["running"] and stats["sockets"] == 1 and stats["overflow"] == 0
            # woken once per queue at most: holding folds several pushed packets into one wake-up
            assert 0 < stats["notifies"] <= len(up)
            engine.reader_remove(server.fileno())
            engine.reader_stop()
        forwarded = []
        with pytest.raises(TimeoutError):
            while True:
                forwarded.append(sink.recv(4096))
        return [(t, k, d, e) for t, k, d, e, _ in up], forwarded, engine.rx_stats(), engine.rx_stats(publisher)
    finally:
        for s in (server, source, sink):
            s.close()


def test_routed_rtp_is_forwarded_where_it_is_read() -> None:
    """A routed SSRC's RTP is pushed by the engine's receive path itself (issue 14: no Python object on the media
    path; with the reader thread, no event loop either), then handed up with push's flags for the bookkeeping;
    unrouted RTP and RTCP come up as before. The reference's recv, the native recv and the native reader thread
    hand up the same items and send the subscriber the same SRTP bytes."""
    reference = _routed(PythonEngine, "recv")
    assert _routed(NativeEngine, "recv") == reference
    assert _routed(NativeEngine, "thread") == reference
    assert _routed(NativeEngine, "held") == reference  # nothing lost or reordered by holding bookkeeping back
    up, forwarded, totals, per_transport = reference
    kinds = [(k, e) for t, k, d, e in up if t == 0]
    pushed = [e for k, e in kinds if k == 4]
    assert len(pushed) == 90 and all(e & 4 for e in pushed)  # the first half of the camera: accepted, forwarded
    assert sum(1 for e in pushed if e & F_KEYFRAME) == 3  # the first packets of frames 0, 10 and 20
    assert sum(1 for k, _ in kinds if k == 0) == 90 + 40  # the second half of the camera, the microphone
    assert sum(1 for k, _ in kinds if k == 1) == 2
    assert len(forwarded) == 90 and totals["pushed"] == per_transport["pushed"] == 90


def test_routes_follow_streams() -> None:
    """A removed stream loses its routes (its publisher's packets go back to Python, which drops them); a
    transport holds at most 16 routes; routing to an unknown stream or transport is refused alike."""
    for engine_class in (PythonEngine, NativeEngine):
        engine = engine_class()
        tid = engine.add_transport()
        sids = [engine.add_stream(CODEC_OTHER, False, OPUS_PT) for _ in range(17)]
        for n in range(16):
            engine.route(tid, 0x100 + n, sids[n])
        engine.route(tid, 0x100, sids[1])  # a new stream for a routed SSRC replaces the old one
        with pytest.raises(Exception, match="route"):
            engine.route(tid, 0x200, sids[16])
        with pytest.raises(Exception, match="route"):
            engine.route(tid, 0x300, 999)
        with pytest.raises(Exception, match="route"):
            engine.route(tid + 5, 0x300, sids[0])
        engine.remove_stream(sids[3])
        engine.route(tid, 0x200, sids[16])  # the removed stream's route made room
        engine.route(tid, 0x999, -1)  # taking back a route that is not there is fine
