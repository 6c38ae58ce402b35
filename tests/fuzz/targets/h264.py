"""H.264 payload headers (RFC 6184: single NAL, STAP-A, FU-A) and the SPS picture size, as the producer and the
layer switch read them from a publisher's packet: none of these may raise."""

from __future__ import annotations

from typing import Any

INSTRUMENT = ("sfu.rtp", "sfu.frames")
BOUND_MS = 5.0
STATELESS = True

rtp: Any = None
frames: Any = None


def setup() -> None:
    global rtp, frames
    from sfu import frames as f
    from sfu import rtp as r

    rtp, frames = r, f


def one_input(data: bytes) -> None:
    end = len(data)
    rtp.h264_is_keyframe(data, 0, end)
    rtp.h264_starts_frame(data, 0, end)
    span = frames.h264_sps(data, 0, end)
    if span is not None:
        assert 0 <= span[0] < span[1] <= end
    size = frames.h264_size(data, 0, end)
    if size is not None:
        assert size[0] > 0 and size[1] > 0
