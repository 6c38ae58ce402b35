"""Picture sizes from keyframes, checked against real encoders' output (PyAV's libx264 and libvpx)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from sfu.frames import h264_size, h264_sps, vp8_size


def _encode(codec: str, width: int, height: int, **options: str) -> bytes:
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = av.Rational(1, 30) if hasattr(av, "Rational") else __import__("fractions").Fraction(1, 30)
    ctx.options = options
    frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
    packets = list(ctx.encode(frame.reformat(format="yuv420p"))) + list(ctx.encode(None))
    return bytes(packets[0])


def _nal_units(annex_b: bytes) -> list[bytes]:
    return [n.lstrip(b"\x00") for n in annex_b.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
            if n.strip(b"\x00")]


@pytest.mark.parametrize(("width", "height", "profile"), [(352, 288, "baseline"), (1280, 720, "baseline"),
                                                         (1920, 1080, "high"), (640, 360, "main")])
def test_h264_sps_sizes(width: int, height: int, profile: str) -> None:
    units = _nal_units(_encode("libx264", width, height, profile=profile))
    sps = next(u for u in units if u[0] & 0x1F == 7)
    assert h264_sps(sps, 0, len(sps)) == (0, len(sps))
    assert h264_size(sps, 0, len(sps)) == (width, height)
    pps = next(u for u in units if u[0] & 0x1F == 8)
    stap = bytes([0x78]) + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert h264_size(stap, 0, len(stap)) == (width, height)
    idr = next(u for u in units if u[0] & 0x1F == 5)
    assert h264_sps(idr, 0, len(idr)) is None, "a bare IDR is no place to start decoding"


@pytest.mark.parametrize(("width", "height"), [(320, 180), (1280, 720)])
def test_vp8_keyframe_size(width: int, height: int) -> None:
    frame = _encode("libvpx", width, height)
    assert vp8_size(frame, 0, len(frame)) == (width, height)
    assert vp8_size(frame[:5], 0, 5) is None


def test_truncated_input_is_no_size_and_garbage_never_raises() -> None:
    for data in (b"", b"\x67", b"\x67\x42", b"\x78\x00\xff\x67", b"\x78\x00\x00"):
        assert h264_size(data, 0, len(data)) is None, data
        assert vp8_size(data, 0, len(data)) is None, data
    rng = np.random.default_rng(1)
    for _ in range(3000):  # must return a value or None, never raise, on whatever a publisher sends
        data = bytes([0x67]) + rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        h264_size(data, 0, len(data))
