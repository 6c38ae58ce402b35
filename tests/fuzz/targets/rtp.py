"""RTP header and header extensions as `SfuParticipant.on_rtp` reads them: parse once, look up the extensions
(MID, RID, transport-wide sequence, abs-send-time), rewrite a copy per subscriber. `parse_rtp` may raise only
ValueError (on_rtp drops the packet); extension lookups never raise."""

from __future__ import annotations

from typing import Any

INSTRUMENT = ("sfu.rtp",)
BOUND_MS = 5.0
STATELESS = True

rtp: Any = None


def setup() -> None:
    global rtp
    from sfu import rtp as module

    rtp = module


def one_input(data: bytes) -> None:
    try:
        header = rtp.parse_rtp(data)
    except ValueError:
        return
    assert 12 <= header.payload_offset <= header.payload_end <= len(data)
    assert header.extension_offset <= header.extension_end == header.payload_offset
    for ext_id in range(1, 15):
        span = rtp.find_extension(data, header, ext_id)
        if span is not None:
            start, end = span
            assert header.extension_offset <= start <= end <= header.extension_end
            value = rtp.get_extension(data, header, ext_id)
            assert value == data[start:end]
            copy = bytearray(data)
            assert rtp.set_extension_in_place(copy, header, ext_id, value)
            assert copy == data
    out = rtp.rewrite_header(data, header, 0x12345678, 96, 7, 9000)
    assert len(out) == len(data) and out[12:] == data[12:]
    again = rtp.parse_rtp(out)
    assert (again.ssrc, again.payload_type, again.sequence_number, again.timestamp) == (0x12345678, 96, 7, 9000)
