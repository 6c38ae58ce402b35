"""Picture sizes read from keyframes, without decoding: what a simulcast layer carries, so that a subscriber who
asks for a video size gets the layer that fits it.
"""

from __future__ import annotations

from sfu.rtp import BytesLike


def vp8_size(data: BytesLike, start: int, end: int) -> tuple[int, int] | None:
    """RFC 6386 9.1: a keyframe's 3-byte tag, start code 9d 01 2a, then 14-bit width and height."""
    if end - start < 10 or data[start + 3 : start + 6] != b"\x9d\x01\x2a":
        return None
    width = (data[start + 6] | data[start + 7] << 8) & 0x3FFF
    height = (data[start + 8] | data[start + 9] << 8) & 0x3FFF
    return (width, height) if width and height else None


def h264_sps(data: BytesLike, start: int, end: int) -> tuple[int, int] | None:
    """Where the packet's SPS NAL unit lies (single NAL unit or inside a STAP-A), or None.

    A subscriber can only start decoding (or switch layers) at an access unit that brings its SPS: starting at
    a bare IDR fragment would lose the parameter sets whenever their packet arrives late by retransmission.
    """
    if end - start < 2:
        return None
    nal_type = data[start] & 0x1F
    if nal_type == 7:
        return start, end
    if nal_type == 24:  # STAP-A: 16-bit sizes, each followed by a NAL unit
        pos = start + 1
        while pos + 2 <= end:
            size = data[pos] << 8 | data[pos + 1]
            pos += 2
            if size == 0 or pos + size > end:
                return None
            if data[pos] & 0x1F == 7:
                return pos, pos + size
            pos += size
    return None


def h264_size(data: BytesLike, start: int, end: int) -> tuple[int, int] | None:
    """The size an SPS in this packet announces (single NAL unit or STAP-A), or None."""
    span = h264_sps(data, start, end)
    return _sps_size(bytes(data[span[0] : span[1]])) if span is not None else None


MAX_SPS_BYTES = 128  # a real SPS is under 100 bytes; a crafted one must not make the reader walk a whole packet
# (255 let a 699-byte crafted "SPS" cost 5.2 ms under the fuzzer's instrumentation, 0.95 ms without: over the bound)


class _Bits:
    def __init__(self, data: bytes) -> None:
        # Emulation prevention bytes (00 00 03) are not part of the syntax.
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")[:MAX_SPS_BYTES]
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]  # IndexError on truncation (or past MAX_SPS_BYTES): caught by the caller
        value = byte >> (7 - (self.pos & 7)) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


def _skip_scaling_list(b: _Bits, size: int) -> None:
    last = next_ = 8
    for _ in range(size):
        if next_:
            next_ = (last + b.se() + 256) % 256
        last = next_ or last


def _sps_size(nal: bytes) -> tuple[int, int] | None:
    """ITU-T H.264 7.3.2.1.1, as far as the picture size."""
    try:
        b = _Bits(nal[1:])
        profile = b.bits(8)
        b.bits(16)  # constraint flags, level
        b.ue()  # seq_parameter_set_id
        chroma_format = 1
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma_format = b.ue()
            if chroma_format == 3:
                b.bit()
            b.ue()
            b.ue()
            b.bit()
            if b.bit():  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format != 3 else 12):
                    if b.bit():
                        _skip_scaling_list(b, 16 if i < 6 else 64)
        b.ue()  # log2_max_frame_num_minus4
        poc_type = b.ue()
        if poc_type == 0:
            b.ue()
        elif poc_type == 1:
            b.bit()
            b.se()
            b.se()
            for _ in range(b.ue()):
                b.se()
        b.ue()  # max_num_ref_frames
        b.bit()
        width_mbs = b.ue() + 1
        height_units = b.ue() + 1
        frame_mbs_only = b.bit()
        if not frame_mbs_only:
            b.bit()
        b.bit()  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if b.bit():
            crop = (b.ue(), b.ue(), b.ue(), b.ue())
        sub_w, sub_h = (2, 2) if chroma_format == 1 else (2, 1) if chroma_format == 2 else (1, 1)
        crop_x, crop_y = (sub_w, sub_h * (2 - frame_mbs_only)) if chroma_format else (1, 2 - frame_mbs_only)
        width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
        height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
        return (width, height) if width > 0 and height > 0 else None
    except (IndexError, ValueError):
        return None
