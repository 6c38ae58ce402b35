"""Tests for sfu.rtp.

aiortc (pinned in pyproject) serves as an independent oracle: packets are built with
its serializers and our parse / rewrite results are checked against its parsers.
"""

from __future__ import annotations

import random
import struct
from itertools import pairwise

import pytest
from aiortc.codecs.h264 import H264Encoder, H264PayloadDescriptor
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    unpack_header_extensions,
)

from sfu.rtp import (
    RtpHeader,
    SequenceRewriter,
    TimestampRewriter,
    Vp8Descriptor,
    Vp8PictureIdRewriter,
    find_extension,
    get_extension,
    h264_is_keyframe,
    h264_starts_frame,
    is_rtcp,
    parse_rtp,
    parse_vp8_descriptor,
    rewrite_header,
    rewrite_vp8_descriptor_in_place,
    set_extension_in_place,
)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
RRID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def extensions_map(**ids: int) -> HeaderExtensionsMap:
    uris = {"mid": MID_URI, "rid": RID_URI, "rrid": RRID_URI, "abs": ABS_SEND_TIME_URI, "twcc": TWCC_URI}
    params = RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=uris[name]) for name, i in ids.items()]
    )
    xmap = HeaderExtensionsMap()
    xmap.configure(params)
    return xmap


# Ids as Chrome typically negotiates them.
XMAP = extensions_map(mid=4, rid=10, rrid=11, abs=2, twcc=3)


def make_packet(
    payload: bytes = b"\x01\x02\x03",
    *,
    seq: int = 1000,
    ts: int = 90000,
    ssrc: int = 0x01020304,
    pt: int = 96,
    marker: int = 0,
    csrc: tuple[int, ...] = (),
    padding: int = 0,
    mid: str | None = None,
    rid: str | None = None,
    abs_send_time: int | None = None,
    twcc: int | None = None,
    xmap: HeaderExtensionsMap = XMAP,
) -> bytes:
    p = RtpPacket(payload_type=pt, marker=marker, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload)
    p.csrc = list(csrc)
    p.padding_size = padding
    p.extensions.mid = mid
    p.extensions.rtp_stream_id = rid
    p.extensions.abs_send_time = abs_send_time
    p.extensions.transport_sequence_number = twcc
    return p.serialize(xmap)


def assert_header_matches_aiortc(data: bytes, h: RtpHeader) -> None:
    ref = RtpPacket.parse(data)
    assert h.marker == bool(ref.marker)
    assert h.payload_type == ref.payload_type
    assert h.sequence_number == ref.sequence_number
    assert h.timestamp == ref.timestamp
    assert h.ssrc == ref.ssrc
    assert h.csrc_count == len(ref.csrc)
    assert data[h.payload_offset : h.payload_end] == ref.payload


# --- parse_rtp ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"marker": 1, "pt": 111, "seq": 65535, "ts": 0xFFFFFFFF, "ssrc": 0xFFFFFFFF},
        {"csrc": (1, 2, 3)},
        {"padding": 7},
        {"padding": 1, "mid": "0", "twcc": 5},
        {"mid": "1", "rid": "hi", "abs_send_time": 0xABCDEF, "twcc": 65535, "csrc": (9,), "padding": 4},
        {"payload": b""},
    ],
)
def test_parse_matches_aiortc(kwargs: dict) -> None:
    data = make_packet(**kwargs)
    h = parse_rtp(data)
    assert_header_matches_aiortc(data, h)
    assert h.has_extension == any(k in kwargs for k in ("mid", "rid", "abs_send_time", "twcc"))


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = make_packet(mid="0", padding=3)
    ref = parse_rtp(data)
    for view in (bytearray(data), memoryview(data)):
        h = parse_rtp(view)
        assert (h.sequence_number, h.payload_offset, h.payload_end) == (
            ref.sequence_number,
            ref.payload_offset,
            ref.payload_end,
        )


def fixed_header(b0: int = 0x80, b1: int = 96) -> bytes:
    return struct.pack("!BBHII", b0, b1, 1, 2, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (fixed_header()[:11], "too short"),
        (fixed_header(b0=0x40) + b"payload", "version is 1"),
        (fixed_header(b0=0x00) + b"payload", "version is 0"),
        (fixed_header(b0=0x82) + b"\x00" * 7, "CSRC"),
        (fixed_header(b0=0x90) + b"\xbe\xde", "extension block header"),
        (fixed_header(b0=0x90) + b"\xbe\xde\x00\x02" + b"\x00" * 7, "extension block of 8 bytes"),
        (fixed_header(b0=0xA0) + b"ab\x00", "padding length 0"),
        (fixed_header(b0=0xA0) + b"ab\x04", "padding length 4"),
        # padding may not eat into the extension block
        (fixed_header(b0=0xB0) + b"\xbe\xde\x00\x01\x10\x00\x00\x02", "padding length 2"),
    ],
)
def test_parse_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rtp(data)
    with pytest.raises(ValueError):  # the oracle agrees these are not RTP
        RtpPacket.parse(data)


def test_padding_may_consume_whole_payload() -> None:
    # Padding-only packets are what senders use as bandwidth probes.
    data = fixed_header(b0=0xA0) + b"\x00\x00\x03"
    h = parse_rtp(data)
    assert h.payload_offset == h.payload_end == 12


def _fuzz_inputs(rng: random.Random) -> list[bytes]:
    inputs = [rng.randbytes(rng.randrange(0, 40)) for _ in range(3000)]
    # Mostly-valid packets give the deeper checks something to chew on.
    inputs += [bytes([0x80 | rng.randrange(0x40)]) + rng.randbytes(rng.randrange(11, 60)) for _ in range(3000)]
    for _ in range(60):
        valid = make_packet(
            rng.randbytes(rng.randrange(0, 30)),
            csrc=tuple(range(rng.randrange(3))),
            padding=rng.randrange(3),
            mid=rng.choice([None, "0", "a" * 20]),
            twcc=rng.choice([None, rng.randrange(65536)]),
            abs_send_time=rng.choice([None, 123]),
        )
        inputs += [valid[:n] for n in range(len(valid))]
        for _ in range(20):
            corrupt = bytearray(valid)
            corrupt[rng.randrange(min(len(valid), 24))] ^= 1 << rng.randrange(8)
            inputs.append(bytes(corrupt))
    return inputs


def test_garbage_only_ever_raises_value_error_and_agrees_with_aiortc() -> None:
    parsed = 0
    for data in _fuzz_inputs(random.Random(1234)):
        try:
            ref = RtpPacket.parse(data)
        except ValueError:
            ref = None
        try:
            h = parse_rtp(data)
        except ValueError:
            # aiortc additionally validates extension elements, so it may reject more,
            # but it must never accept what we reject.
            assert ref is None, data.hex()
            continue
        parsed += 1
        if ref is not None:
            assert_header_matches_aiortc(data, h)
        assert 12 <= h.extension_offset <= h.extension_end == h.payload_offset <= h.payload_end <= len(data)
        for ext_id in range(16):
            value = get_extension(data, h, ext_id)  # must not raise on garbage blocks
            assert value is None or len(value) <= h.extension_end - h.extension_offset
    assert parsed > 1000  # the fuzz reached the deeper code paths


# --- header extensions -------------------------------------------------------------


def test_get_extension_one_byte_form_matches_aiortc() -> None:
    data = make_packet(mid="1", rid="f", abs_send_time=0x123456, twcc=0xBEEF)
    h = parse_rtp(data)
    assert h.extension_profile == 0xBEDE
    ext = RtpPacket.parse(data, XMAP).extensions
    assert get_extension(data, h, 4) == ext.mid.encode()
    assert get_extension(data, h, 10) == ext.rtp_stream_id.encode()
    assert get_extension(data, h, 2) == struct.pack("!I", ext.abs_send_time)[1:]
    assert get_extension(data, h, 3) == struct.pack("!H", ext.transport_sequence_number)
    assert get_extension(data, h, 11) is None  # repaired RID not sent
    assert get_extension(make_packet(), parse_rtp(make_packet()), 4) is None  # no extension block


def test_get_extension_two_byte_form_matches_aiortc() -> None:
    # A 20-byte MID and an id above 14 force aiortc to the two-byte form.
    xmap = extensions_map(mid=1, twcc=200)
    mid = "m" * 20
    data = make_packet(mid=mid, twcc=4242, xmap=xmap)
    h = parse_rtp(data)
    assert h.extension_profile == 0x1000
    assert get_extension(data, h, 1) == mid.encode()
    assert get_extension(data, h, 200) == struct.pack("!H", 4242)
    assert RtpPacket.parse(data, xmap).extensions.transport_sequence_number == 4242


def packet_with_extension_block(profile: int, block: bytes) -> bytes:
    assert len(block) % 4 == 0
    return fixed_header(b0=0x90) + struct.pack("!HH", profile, len(block) // 4) + block + b"payload"


def test_two_byte_form_accepts_appbits_and_zero_length_values() -> None:
    # RFC 8285 4.3: profile 0x100X, low nibble is application bits; lengths may be 0.
    block = b"\x05\x00" + b"\x00" + b"\x07\x02ab" + b"\x00" * 5
    data = packet_with_extension_block(0x100A, block)
    h = parse_rtp(data)
    assert get_extension(data, h, 5) == b""
    assert get_extension(data, h, 7) == b"ab"
    assert data[h.payload_offset : h.payload_end] == b"payload"


def test_one_byte_form_skips_padding_between_elements() -> None:
    block = b"\x10A" + b"\x00\x00" + b"\x21BC" + b"\x00"
    data = packet_with_extension_block(0xBEDE, block)
    h = parse_rtp(data)
    assert get_extension(data, h, 1) == b"A"
    assert get_extension(data, h, 2) == b"BC"
    # aiortc's own walker agrees on the elements
    assert unpack_header_extensions(0xBEDE, block) == [(1, b"A"), (2, b"BC")]


def test_one_byte_id_15_stops_the_walk() -> None:
    # RFC 8285: ID 15 ends processing of the block; what follows is not an element.
    block = b"\x10A" + b"\xf0X" + b"\x20B" + b"\x00\x00"
    data = packet_with_extension_block(0xBEDE, block)
    h = parse_rtp(data)
    assert get_extension(data, h, 1) == b"A"
    assert get_extension(data, h, 2) is None


def test_one_byte_id_0_with_length_stops_the_walk() -> None:
    # ID 0 is reserved for padding, which is a whole zero byte; libwebrtc stops parsing here.
    block = b"\x10A" + b"\x00" + b"\x01XY" + b"\x20B"
    data = packet_with_extension_block(0xBEDE, block)
    h = parse_rtp(data)
    assert get_extension(data, h, 1) == b"A"
    assert get_extension(data, h, 2) is None


def test_truncated_element_is_not_returned() -> None:
    block = b"\x10A\x00" + b"\x00" + b"\x23BCD"  # element 2 claims 4 bytes, only 3 left in the block
    data = packet_with_extension_block(0xBEDE, block)
    h = parse_rtp(data)
    assert get_extension(data, h, 1) == b"A"
    assert get_extension(data, h, 2) is None


def test_unknown_profile_has_no_rfc8285_extensions() -> None:
    data = packet_with_extension_block(0x1234, b"\x10A\x00\x00")
    assert get_extension(data, parse_rtp(data), 1) is None


def test_set_extension_in_place_rewrites_twcc_only() -> None:
    data = make_packet(b"payload", mid="0", abs_send_time=77, twcc=100)
    h = parse_rtp(data)
    buf = bytearray(data)
    assert set_extension_in_place(buf, h, 3, struct.pack("!H", 65000))
    ext = RtpPacket.parse(bytes(buf), XMAP).extensions
    assert ext.transport_sequence_number == 65000
    assert (ext.mid, ext.abs_send_time) == ("0", 77)
    changed = [i for i in range(len(data)) if buf[i] != data[i]]
    assert changed and all(h.extension_offset <= i < h.extension_end for i in changed)


def test_find_extension_span_is_reusable_across_copies() -> None:
    data = make_packet(b"payload", mid="0", twcc=100)
    h = parse_rtp(data)
    span = find_extension(data, h, 3)
    assert span is not None and span[1] - span[0] == 2
    assert find_extension(data, h, 5) is None
    for n in (1, 2):
        out = rewrite_header(data, h, 9, 97, n, n)
        struct.pack_into("!H", out, span[0], 500 + n)
        assert RtpPacket.parse(bytes(out), XMAP).extensions.transport_sequence_number == 500 + n


def test_set_extension_in_place_absent_or_wrong_length() -> None:
    data = make_packet(mid="0")
    h = parse_rtp(data)
    buf = bytearray(data)
    assert not set_extension_in_place(buf, h, 3, b"\x00\x01")
    assert buf == data
    with pytest.raises(ValueError, match="has 1 bytes"):
        set_extension_in_place(buf, h, 4, b"\x00\x01")
    assert buf == data


# --- rewrite_header ----------------------------------------------------------------


def test_rewrite_header_changes_only_the_rewritten_fields() -> None:
    data = make_packet(bytes(range(200)), marker=1, csrc=(11, 12), padding=5, mid="3", abs_send_time=99, twcc=7)
    h = parse_rtp(data)
    out = rewrite_header(data, h, ssrc=0xCAFEBABE, payload_type=100, sequence_number=65535, timestamp=0)
    assert isinstance(out, bytearray) and len(out) == len(data)
    ref, new = RtpPacket.parse(data, XMAP), RtpPacket.parse(bytes(out), XMAP)
    assert (new.ssrc, new.payload_type, new.sequence_number, new.timestamp) == (0xCAFEBABE, 100, 65535, 0)
    assert new.marker == 1  # kept from the source
    assert new.csrc == ref.csrc and new.extensions == ref.extensions and new.payload == ref.payload
    assert out[0] == data[0] and out[12:] == data[12:]  # padding bytes included


@pytest.mark.parametrize(
    ("source_marker", "marker", "expected"), [(1, None, 1), (0, None, 0), (1, False, 0), (0, True, 1)]
)
def test_rewrite_header_marker(source_marker: int, marker: bool | None, expected: int) -> None:
    data = make_packet(marker=source_marker, pt=127)
    out = rewrite_header(data, parse_rtp(data), 1, 127, 2, 3, marker=marker)
    new = RtpPacket.parse(bytes(out))
    assert (new.marker, new.payload_type) == (expected, 127)


def test_rewrite_header_rejects_out_of_range_payload_type() -> None:
    data = make_packet()
    with pytest.raises(ValueError, match="payload type"):
        rewrite_header(data, parse_rtp(data), 1, 128, 2, 3)


def test_rewritten_packet_keeps_offsets_valid() -> None:
    data = make_packet(b"xyz", twcc=1, mid="0")
    h = parse_rtp(data)
    out = rewrite_header(data, h, 5, 97, 6, 7)
    assert set_extension_in_place(out, h, 3, b"\x12\x34")
    assert RtpPacket.parse(bytes(out), XMAP).extensions.transport_sequence_number == 0x1234
    assert get_extension(out, h, 4) == b"0"


# --- is_rtcp -----------------------------------------------------------------------


def test_is_rtcp_on_real_rtcp_packets() -> None:
    info = RtcpReceiverInfo(ssrc=1, fraction_lost=0, packets_lost=0, highest_sequence=5, jitter=0, lsr=0, dlsr=0)
    packets = [
        RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(1, 2, 3, 4)),
        RtcpRrPacket(ssrc=1, reports=[info]),
        RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=2),  # PLI
        RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=[5, 6]),  # NACK
    ]
    for packet in packets:
        assert is_rtcp(bytes(packet))


def test_is_rtcp_rfc5761_range() -> None:
    assert [b for b in range(256) if is_rtcp(bytes([0x80, b]))] == list(range(192, 224))
    assert not is_rtcp(make_packet(pt=96, marker=1))  # byte 1 == 224
    assert not is_rtcp(make_packet(pt=63, marker=1))  # byte 1 == 191
    assert not is_rtcp(b"\x80")


# --- VP8 ---------------------------------------------------------------------------
# Descriptor layout, RFC 7741 section 4.2:
#   |X|R|N|S|R| PID |   then, if X: |I|L|T|K| RSV |, if I: |M| PictureID (7 or 15 bits)|,
#   if L: |TL0PICIDX|, if T or K: |TID|Y| KEYIDX|
# The first byte of the VP8 payload header has the inverse key frame flag P in bit 0.

VP8_KEY_HEADER = b"\x50\x01\x00"  # P=0 (key frame), show_frame=1
VP8_INTER_HEADER = b"\x51\x01\x00"  # P=1


def test_vp8_minimal_descriptor_key_frame() -> None:
    # X=0, S=1, PID=0: the smallest descriptor, first packet of a key frame.
    d = parse_vp8_descriptor(b"\x10" + VP8_KEY_HEADER)
    assert (d.extended, d.start_of_partition, d.partition_id, d.size) == (False, True, 0, 1)
    assert d.picture_id is d.tl0picidx is d.tid is d.keyidx is None
    assert d.is_keyframe


def test_vp8_7bit_picture_id() -> None:
    d = parse_vp8_descriptor(bytes([0x90, 0x80, 0x11]) + VP8_INTER_HEADER)
    assert (d.picture_id, d.long_picture_id, d.size, d.is_keyframe) == (17, False, 3, False)


def test_vp8_all_fields_15bit_picture_id() -> None:
    # X=1 N=1 S=1 PID=0 | I L T K | M=1 PictureID 0x1234 | TL0PICIDX 5 | TID=2 Y=1 KEYIDX=10
    data = bytes([0xB0, 0xF0, 0x80 | 0x12, 0x34, 0x05, (2 << 6) | (1 << 5) | 10]) + VP8_INTER_HEADER
    d = parse_vp8_descriptor(data)
    assert (d.extended, d.non_reference, d.start_of_partition, d.partition_id) == (True, True, True, 0)
    assert (d.picture_id, d.long_picture_id, d.tl0picidx) == (0x1234, True, 5)
    assert (d.tid, d.layer_sync, d.keyidx, d.size) == (2, True, 10, 6)


def test_vp8_keyidx_without_tid() -> None:
    # K=1, T=0: the shared byte carries KEYIDX only; TID/Y must be ignored.
    d = parse_vp8_descriptor(bytes([0x90, 0x10, 0xFF]) + VP8_KEY_HEADER)
    assert (d.tid, d.layer_sync, d.keyidx, d.size) == (None, False, 31, 3)


@pytest.mark.parametrize(
    ("descriptor", "vp8_header", "keyframe"),
    [
        (b"\x10", VP8_KEY_HEADER, True),
        (b"\x10", VP8_INTER_HEADER, False),
        (b"\x00", VP8_KEY_HEADER, False),  # S=0: continuation, P bit is just data here
        (b"\x11", VP8_KEY_HEADER, False),  # PID=1: not the first partition
        (b"\x90\x80\x05", VP8_KEY_HEADER, True),
        (b"\x98\x80\x05", VP8_KEY_HEADER, True),  # reserved bit is not part of PID
    ],
)
def test_vp8_is_keyframe(descriptor: bytes, vp8_header: bytes, keyframe: bool) -> None:
    assert parse_vp8_descriptor(descriptor + vp8_header).is_keyframe is keyframe


def test_vp8_partition_id_is_three_bits() -> None:
    # RFC 7741 narrowed PID to 3 bits; the bit above it is reserved (aiortc still reads 4 bits).
    d = parse_vp8_descriptor(b"\x1d" + VP8_INTER_HEADER)
    assert (d.start_of_partition, d.partition_id) == (True, 5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x90", "extension byte"),
        (b"\x90\x80", "PictureID"),
        (b"\x90\x80\x81", "15-bit"),
        (b"\x90\x40", "TL0PICIDX"),
        (b"\x90\x20", "TID/KEYIDX"),
        (b"\x90\xf0\x81\x02\x03\x04", "no payload"),
        (b"\x10", "no payload"),
    ],
)
def test_vp8_truncated(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_vp8_descriptor(data)


def test_vp8_end_beyond_buffer_is_clamped() -> None:
    with pytest.raises(ValueError, match="PictureID"):
        parse_vp8_descriptor(b"\x90\x80", 0, 100)


def test_vp8_parse_respects_offsets() -> None:
    data = make_packet(bytes([0x90, 0x80, 0x7F]) + VP8_KEY_HEADER, padding=4, twcc=1)
    h = parse_rtp(data)
    d = parse_vp8_descriptor(data, h.payload_offset, h.payload_end)
    assert (d.picture_id, d.size, d.is_keyframe) == (127, 3, True)
    # the payload ends before the padding: a descriptor-only payload is rejected
    short = make_packet(bytes([0x90, 0x80, 0x7F]), padding=4)
    hs = parse_rtp(short)
    with pytest.raises(ValueError, match="no payload"):
        parse_vp8_descriptor(short, hs.payload_offset, hs.payload_end)


def random_vp8_descriptor(rng: random.Random) -> bytes:
    first = rng.choice([0, 0x80]) | rng.choice([0, 0x20]) | rng.choice([0, 0x10]) | rng.randrange(8)
    out = [first]
    if first & 0x80:
        ext = rng.randrange(16) << 4
        out.append(ext)
        if ext & 0x80:
            if rng.random() < 0.5:
                pid = rng.randrange(0x8000)
                out += [0x80 | pid >> 8, pid & 0xFF]
            else:
                out.append(rng.randrange(0x80))
        if ext & 0x40:
            out.append(rng.randrange(256))
        if ext & 0x30:
            out.append(rng.randrange(256))
    return bytes(out)


def test_vp8_parse_matches_aiortc() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = random_vp8_descriptor(rng) + rng.randbytes(rng.randrange(1, 5))
        d = parse_vp8_descriptor(data)
        ref, rest = VpxPayloadDescriptor.parse(data)
        assert (d.start_of_partition, d.partition_id) == (bool(ref.partition_start), ref.partition_id)
        assert (d.picture_id, d.tl0picidx, d.keyidx) == (ref.picture_id, ref.tl0picidx, ref.keyidx)
        assert (d.tid, d.layer_sync) == (ref.tid if ref.tid is None else ref.tid[0], bool(ref.tid and ref.tid[1]))
        assert data[d.size :] == rest


def test_vp8_garbage_only_raises_value_error() -> None:
    rng = random.Random(99)
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 8))
        try:
            d = parse_vp8_descriptor(data)
        except ValueError:
            continue
        assert 0 < d.size < len(data), "a descriptor that parses leaves a payload after it"


def test_vp8_rewrite_keeps_7bit_width() -> None:
    data = bytes([0x90, 0xC0, 0x7E, 0x09]) + VP8_KEY_HEADER
    d = parse_vp8_descriptor(data)
    buf = bytearray(data)
    rewrite_vp8_descriptor_in_place(buf, 0, d, picture_id=130, tl0picidx=256 + 4)
    assert len(buf) == len(data)
    ref, rest = VpxPayloadDescriptor.parse(bytes(buf))
    assert (ref.picture_id, ref.tl0picidx) == (130 % 128, 4)
    assert rest == VP8_KEY_HEADER
    assert buf[:2] == data[:2]


def test_vp8_rewrite_15bit_and_unchanged_fields() -> None:
    data = bytes([0x90, 0xE0, 0x80, 0x01, 0x09, 0x40]) + VP8_INTER_HEADER
    d = parse_vp8_descriptor(data)
    buf = bytearray(data)
    rewrite_vp8_descriptor_in_place(buf, 0, d, picture_id=0x7FFF, tl0picidx=None)
    ref, _ = VpxPayloadDescriptor.parse(bytes(buf))
    assert (ref.picture_id, ref.tl0picidx, ref.tid) == (0x7FFF, 9, (1, 0))
    rewrite_vp8_descriptor_in_place(buf, 0, d, picture_id=0x8000 + 3, tl0picidx=200)
    ref, _ = VpxPayloadDescriptor.parse(bytes(buf))
    assert (ref.picture_id, ref.tl0picidx) == (3, 200)
    assert buf[5:] == data[5:]


def test_vp8_rewrite_without_picture_id_field_changes_nothing() -> None:
    data = bytes([0x90, 0x40, 0x09]) + VP8_INTER_HEADER  # only TL0PICIDX present
    d = parse_vp8_descriptor(data)
    buf = bytearray(data)
    rewrite_vp8_descriptor_in_place(buf, 0, d, picture_id=55, tl0picidx=None)
    assert buf == data
    rewrite_vp8_descriptor_in_place(buf, 0, d, picture_id=55, tl0picidx=10)
    assert buf == bytes([0x90, 0x40, 10]) + VP8_INTER_HEADER


# --- H.264 -------------------------------------------------------------------------

SPS = b"\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8"
PPS = b"\x68\xce\x3c\x80"
SEI = b"\x06\x05\x01\x00\x80"
AUD = b"\x09\xf0"
# Slice header starts with first_mb_in_slice as ue(v): bit "1" is 0, "010" is 1.
IDR_FIRST_SLICE = b"\x65\x88" + bytes(range(50))
IDR_SECOND_SLICE = b"\x65\x40" + bytes(range(50))
P_SLICE = b"\x41\x9a" + bytes(range(50))


def packetize(*nalus: bytes) -> list[bytes]:
    # aiortc's packetizer: STAP-A for small NALUs, FU-A for NALUs above 1300 bytes.
    return H264Encoder._packetize(list(nalus))


def test_h264_stap_a_with_sps_pps_idr() -> None:
    (packet,) = packetize(SPS, PPS, IDR_FIRST_SLICE)
    assert packet[0] & 0x1F == 24
    assert h264_is_keyframe(packet) and h264_starts_frame(packet)


def test_h264_stap_a_keyframe_nalu_not_first() -> None:
    # the walk must look past the SEI/AUD to find the IDR slice
    (packet,) = packetize(AUD, SEI, IDR_FIRST_SLICE)
    assert h264_is_keyframe(packet)
    (packet,) = packetize(AUD, SEI, P_SLICE)
    assert not h264_is_keyframe(packet) and h264_starts_frame(packet)


def test_h264_stap_a_starting_mid_picture() -> None:
    # STAP-A of two later slices of an IDR picture: a keyframe, but not its start.
    (packet,) = packetize(IDR_SECOND_SLICE, IDR_SECOND_SLICE)
    assert packet[0] & 0x1F == 24
    assert h264_is_keyframe(packet) and not h264_starts_frame(packet)
    (packet,) = packetize(P_SLICE, P_SLICE)
    assert not h264_is_keyframe(packet) and h264_starts_frame(packet)


def test_h264_fu_a_only_first_fragment_is_keyframe() -> None:
    big_idr = b"\x65\x88" + bytes(4000)
    packets = packetize(big_idr)
    assert len(packets) == 4 and all(p[0] & 0x1F == 28 for p in packets)
    assert [h264_is_keyframe(p) for p in packets] == [True, False, False, False]
    assert [h264_starts_frame(p) for p in packets] == [True, False, False, False]
    # the oracle agrees which fragment is first
    assert [H264PayloadDescriptor.parse(p)[0].first_fragment for p in packets] == [True, False, False, False]


def test_h264_fu_a_non_idr() -> None:
    packets = packetize(b"\x41\x9a" + bytes(3000))
    assert not any(h264_is_keyframe(p) for p in packets)
    assert [h264_starts_frame(p) for p in packets] == [True, False, False]


@pytest.mark.parametrize(
    ("nalu", "keyframe", "starts"),
    [
        (IDR_FIRST_SLICE, True, True),
        (IDR_SECOND_SLICE, True, False),  # later slice of a multi-slice IDR picture
        (SPS, True, True),
        (PPS, False, True),
        (P_SLICE, False, True),
        (b"\x41\x40\x00", False, False),
        (b"\x0c\xff\xff", False, False),  # filler data
    ],
)
def test_h264_single_nal(nalu: bytes, keyframe: bool, starts: bool) -> None:
    (packet,) = packetize(nalu)
    assert packet == nalu  # sent as a single NAL unit packet
    assert h264_is_keyframe(packet) is keyframe
    assert h264_starts_frame(packet) is starts


def test_h264_second_idr_slice_in_fu_a() -> None:
    first, *_ = packetize(b"\x65\x40" + bytes(3000))
    assert h264_is_keyframe(first) and not h264_starts_frame(first)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x18",  # STAP-A with nothing in it
        b"\x18\x00\x09" + SPS[:5],  # STAP-A length overruns the payload
        b"\x18\x00\x09" + SPS + b"\x00",  # truncated second length field
        b"\x1c",  # FU-A without FU header
        b"\x1c\x05",  # FU-A first fragment with S bit clear
    ],
)
def test_h264_malformed_is_not_keyframe(payload: bytes) -> None:
    assert not h264_is_keyframe(payload)


def test_h264_stap_a_zero_length_first_nalu_does_not_start_frame() -> None:
    # The byte after an empty NALU's length field is the next length field, not a NAL
    # header; here it is 0x07, which must not be mistaken for an SPS.
    sps = b"\x67" + bytes(0x708)
    payload = b"\x18" + b"\x00\x00" + struct.pack("!H", len(sps)) + sps
    assert not h264_starts_frame(payload)
    assert h264_is_keyframe(payload)  # the empty NALU is skipped, the SPS after it counts


def test_h264_garbage_never_raises() -> None:
    rng = random.Random(5)
    for _ in range(5000):
        data = bytes([rng.choice([24, 28, 5, 7, 1])]) + rng.randbytes(rng.randrange(0, 12))
        assert h264_is_keyframe(data) in (True, False)
        assert h264_starts_frame(data) in (True, False)


def test_h264_offsets_within_rtp_packet() -> None:
    (stap,) = packetize(SPS, PPS)
    data = make_packet(stap, padding=3, twcc=9)
    h = parse_rtp(data)
    assert h264_is_keyframe(data, h.payload_offset, h.payload_end)
    assert h264_is_keyframe(memoryview(data)[h.payload_offset : h.payload_end])
    # lengths are checked against payload_end, not the padded packet end
    data = make_packet(b"\x18\x00\x0b" + SPS, padding=2)
    h = parse_rtp(data)
    assert not h264_is_keyframe(data, h.payload_offset, h.payload_end)


# --- SequenceRewriter --------------------------------------------------------------


def test_sequence_first_source_passes_through_with_fixed_offset() -> None:
    rw = SequenceRewriter()
    assert [rw.rewrite(s) for s in (100, 101, 103, 102, 101, 104)] == [100, 101, 103, 102, 101, 104]


def test_sequence_first_output_chosen() -> None:
    rw = SequenceRewriter(first_output=65534)
    assert [rw.rewrite(s) for s in (10, 11, 12, 13)] == [65534, 65535, 0, 1]  # output wrap


def test_sequence_input_wraparound() -> None:
    rw = SequenceRewriter(first_output=500)
    assert [rw.rewrite(s) for s in (65533, 65535, 0, 65534, 1)] == [500, 502, 503, 501, 504]


def test_sequence_switch_is_continuous_and_drops_older() -> None:
    rw = SequenceRewriter()
    for s in range(1000, 1010):
        assert rw.rewrite(s) == s
    # switch to a source at 40000; its first forwarded packet follows 1009
    assert rw.rewrite(40000, switch=True) == 1010
    assert rw.rewrite(40001) == 1011
    assert rw.rewrite(39999) is None  # reordered packet from before the switch point
    assert rw.rewrite(39000) is None
    assert rw.rewrite(40003) == 1013  # gap stays a gap (receiver will NACK 1012)
    assert rw.rewrite(40002) == 1012  # late packet fills it
    assert rw.rewrite(40001) == 1011  # retransmission maps to its first copy
    assert rw.rewrite(40000) == 1010  # including the switch packet itself


def test_sequence_switch_continues_from_highest_not_last() -> None:
    rw = SequenceRewriter()
    for s in (10, 11, 12, 11):  # last packet seen is a late one
        rw.rewrite(s)
    assert rw.rewrite(5000, switch=True) == 13


def test_sequence_switch_across_both_wraps() -> None:
    rw = SequenceRewriter(first_output=65530)
    for s in range(100, 106):
        rw.rewrite(s)  # outputs 65530..65535
    assert rw.rewrite(65534, switch=True) == 0  # output wraps on the switch
    assert [rw.rewrite(s) for s in (65535, 0, 1, 65533)] == [1, 2, 3, None]  # input wraps


def test_sequence_long_source_does_not_look_old() -> None:
    # A source running for more than half the sequence space must keep being accepted.
    rw = SequenceRewriter()
    rw.rewrite(7)
    rw.rewrite(20000, switch=True)
    for i in range(1, 70000, 3):
        assert rw.rewrite((20000 + i) & 0xFFFF) == (8 + i) & 0xFFFF


def test_sequence_random_switches_produce_gapless_unique_output() -> None:
    """Simulated forwarding: several sources, local reordering, duplicates, switches.

    Whatever reaches the subscriber must use each output number for exactly one
    source packet, and the numbers used must be contiguous.
    """
    rng = random.Random(2024)
    rw = SequenceRewriter(first_output=rng.randrange(65536))
    seen: dict[int, tuple[int, int]] = {}  # unwrapped output -> (source, seq)
    last_unwrapped = None
    for source in range(12):
        start = rng.randrange(65536)
        count = rng.randrange(1, 300)
        # Packets before the switch point arrive late, reordered, duplicated.
        arrivals = [(start + i) & 0xFFFF for i in range(count)]
        for i in range(1, count):
            j = min(count - 1, i + rng.randrange(4))
            arrivals[i], arrivals[j] = arrivals[j], arrivals[i]
        arrivals += rng.sample(arrivals, k=count // 5)  # retransmissions
        arrivals[1:1] = [(start - k) & 0xFFFF for k in range(1, 4)]  # pre-switch stragglers
        for n, seq in enumerate(arrivals):
            out = rw.rewrite(seq, switch=(n == 0))
            if out is None:
                assert (seq - start) & 0x8000, "only packets older than the switch point may be dropped"
                continue
            if last_unwrapped is not None:
                out = last_unwrapped + ((out - last_unwrapped + 0x8000) & 0xFFFF) - 0x8000
            last_unwrapped = out
            assert seen.setdefault(out, (source, seq)) == (source, seq)
    used = sorted(seen)
    assert used == list(range(used[0], used[0] + len(used)))


# --- TimestampRewriter -------------------------------------------------------------


def test_timestamp_first_source_passes_through() -> None:
    rw = TimestampRewriter(90000)
    assert [rw.rewrite(t, now) for t, now in ((1000, 0.0), (4000, 0.033), (1000, 0.04))] == [1000, 4000, 1000]


def test_timestamp_switch_uses_wallclock_gap() -> None:
    rw = TimestampRewriter(90000, first_output=0)
    rw.rewrite(555, 10.0)
    rw.rewrite(555 + 3000, 10.033)  # newest frame seen at 10.033
    rw.rewrite(555 + 3000, 10.040)  # more packets of that frame do not move the reference
    rw.rewrite(555, 10.045)  # nor does a retransmitted older frame
    out = rw.rewrite(123456789, 10.1, switch=True)
    assert out == 3000 + int((10.1 - 10.033) * 90000)
    assert rw.rewrite(123456789 + 3000, 10.133) == out + 3000
    assert rw.rewrite(123456789 - 3000, 10.14) == out - 3000  # same fixed offset for old frames


@pytest.mark.parametrize("now", [5.0, 4.0])  # no elapsed time, or a clock step backwards
def test_timestamp_switch_always_advances(now: float) -> None:
    rw = TimestampRewriter(48000)
    rw.rewrite(7000, 5.0)
    assert rw.rewrite(1, now, switch=True) == 7001


def test_timestamp_32bit_wraparound() -> None:
    rw = TimestampRewriter(90000, first_output=0xFFFFFFF0)
    assert rw.rewrite(0xFFFFFF00, 0.0) == 0xFFFFFFF0
    # input wraps (0x50 is 0x150 after 0xFFFFFF00) and so does the output
    assert rw.rewrite(0x00000050, 0.1) == 0x140
    assert rw.rewrite(0xFFFFFF00, 0.15) == 0xFFFFFFF0  # an old frame keeps its mapping
    # the newest output (0x140, first seen at 0.1) is the switch reference
    assert rw.rewrite(42, 0.2, switch=True) == 0x140 + int((0.2 - 0.1) * 90000)


def test_timestamp_wrapped_output_is_the_newest() -> None:
    rw = TimestampRewriter(1000, first_output=0xFFFFFFF0)
    rw.rewrite(0, 0.0)
    rw.rewrite(0x20, 1.0)  # output 0x10, after the wrap: newer than 0xFFFFFFF0
    rw.rewrite(0x10, 2.0)  # output 0x00: older, must not become the reference
    assert rw.rewrite(5, 3.0, switch=True) == 0x10 + 2000


# --- Vp8PictureIdRewriter ----------------------------------------------------------


def vp8(picture_id: int | None, tl0: int | None = None, long: bool = True) -> Vp8Descriptor:
    out = [0x90, (0x80 if picture_id is not None else 0) | (0x40 if tl0 is not None else 0)]
    if picture_id is not None:
        out += [0x80 | picture_id >> 8, picture_id & 0xFF] if long else [picture_id]
    if tl0 is not None:
        out.append(tl0)
    return parse_vp8_descriptor(bytes(out) + VP8_INTER_HEADER)


def test_vp8_rewriter_switch_continues_picture_id_and_tl0() -> None:
    rw = Vp8PictureIdRewriter()
    assert rw.rewrite(vp8(100, 7)) == (100, 7)
    assert rw.rewrite(vp8(101, 7)) == (101, 7)
    assert rw.rewrite(vp8(102, 8)) == (102, 8)
    assert rw.rewrite(vp8(9000, 200), switch=True) == (103, 9)
    assert rw.rewrite(vp8(9001, 200)) == (104, 9)
    assert rw.rewrite(vp8(9000, 200)) == (103, 9)  # retransmission
    assert rw.rewrite(vp8(9002, 201)) == (105, 10)


def test_vp8_rewriter_switch_continues_from_highest_after_reordering() -> None:
    rw = Vp8PictureIdRewriter()
    for pid, tl0 in ((10, 50), (12, 52), (11, 51)):  # the last packet is a late one
        rw.rewrite(vp8(pid, tl0))
    assert rw.rewrite(vp8(700, 3), switch=True) == (13, 53)


def test_vp8_rewriter_15bit_and_tl0_wrap() -> None:
    rw = Vp8PictureIdRewriter()
    rw.rewrite(vp8(0x7FFE, 254))
    assert rw.rewrite(vp8(0x7FFF, 255)) == (0x7FFF, 255)
    assert rw.rewrite(vp8(0, 0)) == (0, 0)
    assert rw.rewrite(vp8(5, 3), switch=True) == (1, 1)


def test_vp8_rewriter_7bit_source_wraps_then_switches() -> None:
    rw = Vp8PictureIdRewriter()
    outs = [rw.rewrite(vp8(p, long=False))[0] for p in (126, 127, 0, 1)]
    assert [o & 0x7F for o in outs] == [126, 127, 0, 1]
    # after the 7-bit wrap the highest picture is 1 (i.e. 129), so the switch gives 130
    new, _ = rw.rewrite(vp8(40, long=False), switch=True)
    assert new & 0x7F == 2
    buf = bytearray(b"\x90\x80\x28" + VP8_INTER_HEADER)
    rewrite_vp8_descriptor_in_place(buf, 0, parse_vp8_descriptor(buf), new, None)
    assert VpxPayloadDescriptor.parse(bytes(buf))[0].picture_id == 2


def test_vp8_rewriter_switch_to_source_without_tl0() -> None:
    rw = Vp8PictureIdRewriter()
    rw.rewrite(vp8(10, 50))
    assert rw.rewrite(vp8(3000), switch=True) == (11, None)
    assert rw.rewrite(vp8(3001, 9)) == (12, 51)  # TL0 re-based when it first appears
    assert rw.rewrite(vp8(3002, 10)) == (13, 52)
    assert rw.rewrite(vp8(None, None)) == (None, None)


# --- whole forwarding path ---------------------------------------------------------


def test_simulcast_switch_end_to_end() -> None:
    """Two VP8 simulcast layers, one subscriber switched from low to high on a key frame."""
    twcc_id = 3
    layers = {
        "low": {"ssrc": 111, "seq": 65500, "ts": 4_000_000_000, "pid": 32760, "tl0": 250},
        "high": {"ssrc": 222, "seq": 10, "ts": 77, "pid": 5, "tl0": 0},
    }

    def publish(layer: str, frame: int, keyframe: bool) -> bytes:
        src = layers[layer]
        pid = (src["pid"] + frame) & 0x7FFF
        desc = bytes([0x90, 0xE0, 0x80 | pid >> 8, pid & 0xFF, (src["tl0"] + frame) & 0xFF, 0x00])
        return make_packet(
            desc + (VP8_KEY_HEADER if keyframe else VP8_INTER_HEADER) + bytes(1000),
            seq=(src["seq"] + frame) & 0xFFFF,
            ts=(src["ts"] + 3000 * frame) & 0xFFFFFFFF,
            ssrc=src["ssrc"],
            twcc=frame,
            mid="0",
            rid=layer,
        )

    seq_rw, ts_rw, pid_rw = SequenceRewriter(), TimestampRewriter(90000), Vp8PictureIdRewriter()
    twcc_out = 0
    received = []
    forwarding = "low"
    for frame in range(60):
        now = frame / 30
        for layer in ("low", "high"):
            data = publish(layer, frame, keyframe=(frame == 40))
            h = parse_rtp(data)
            assert get_extension(data, h, 10) == layer.encode()  # routing by RID
            desc = parse_vp8_descriptor(data, h.payload_offset, h.payload_end)
            switch = layer == "high" and forwarding == "low" and frame >= 30 and desc.is_keyframe
            if switch:
                forwarding = "high"
            if layer != forwarding:
                continue
            seq = seq_rw.rewrite(h.sequence_number, switch)
            assert seq is not None
            ts = ts_rw.rewrite(h.timestamp, now, switch)
            pid, tl0 = pid_rw.rewrite(desc, switch)
            out = rewrite_header(data, h, 0xABCDEF01, 100, seq, ts)
            rewrite_vp8_descriptor_in_place(out, h.payload_offset, desc, pid, tl0)
            assert set_extension_in_place(out, h, twcc_id, struct.pack("!H", twcc_out))
            twcc_out += 1
            received.append((bytes(out), data))

    assert forwarding == "high"
    assert len(received) == 41 + 20  # low frames 0-40 (the switch happens at high's frame 40), high 40-59
    packets = [RtpPacket.parse(out, XMAP) for out, _ in received]
    assert {p.ssrc for p in packets} == {0xABCDEF01}
    assert [p.extensions.transport_sequence_number for p in packets] == list(range(61))
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in pairwise(seqs))
    tss = [p.timestamp for p in packets]
    assert all(0 < (b - a) & 0xFFFFFFFF < 1 << 31 for a, b in pairwise(tss))
    descs = [VpxPayloadDescriptor.parse(p.payload)[0] for p in packets]
    pids = [d.picture_id for d in descs]
    tl0s = [d.tl0picidx for d in descs]
    assert all((b - a) & 0x7FFF == 1 for a, b in pairwise(pids))
    assert all((b - a) & 0xFF == 1 for a, b in pairwise(tl0s))
    # the media itself is untouched
    for out, src in received:
        assert (
            VpxPayloadDescriptor.parse(RtpPacket.parse(out).payload)[1]
            == VpxPayloadDescriptor.parse(RtpPacket.parse(src).payload)[1]
        )
