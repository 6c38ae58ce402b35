"""The VP8 payload descriptor (RFC 7741) and keyframe header as the producer reads them from a publisher's packet,
and the per-subscriber PictureID/TL0PICIDX rewrite. Only ValueError may come out of `parse_vp8_descriptor` (the
producer drops the packet); the size reader and the rewrite never raise."""

from __future__ import annotations

from typing import Any

INSTRUMENT = ("sfu.rtp", "sfu.frames")
BOUND_MS = 5.0
STATELESS = True

rtp: Any = None
frames: Any = None
_rewriter: Any = None


def setup() -> None:
    global rtp, frames, _rewriter
    from sfu import frames as f
    from sfu import rtp as r

    rtp, frames = r, f
    _rewriter = r.Vp8PictureIdRewriter()


def one_input(data: bytes) -> None:
    end = len(data)
    try:
        desc = rtp.parse_vp8_descriptor(data, 0, end)
    except ValueError:
        return
    assert 1 <= desc.size < end, "a descriptor parsed is at least its first byte and leaves a payload byte"
    frames.vp8_size(data, desc.size, end)
    picture_id, tl0 = _rewriter.rewrite(desc, switch=data[0] & 1 == 1)
    buf = bytearray(data)
    rtp.rewrite_vp8_descriptor_in_place(buf, 0, desc, picture_id, tl0)
    assert len(buf) == end
    again = rtp.parse_vp8_descriptor(buf, 0, end)
    assert again.size == desc.size and (again.picture_id is None) == (desc.picture_id is None)
