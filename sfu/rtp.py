"""Per-packet RTP work for the forwarder: parse once, rewrite cheaply per subscriber.

An SFU never decodes media, so the only per-packet work is reading a few header
fields and, for every subscriber, writing a copy with that subscriber's SSRC,
payload type, sequence number and timestamp.  Building full packet objects (as
``aiortc.rtp.RtpPacket`` does) costs several times more than the forwarding
itself, so this module splits the work:

* ``parse_rtp`` runs once per incoming packet and records field values and byte
  offsets in a small slotted ``RtpHeader``; header extensions and codec payload
  descriptors are only looked at when the caller asks.
* ``rewrite_header`` runs once per subscriber: ``bytearray`` copy plus one
  ``struct.pack_into``; the extensions and payload are never re-serialized.
* The ``*Rewriter`` classes keep each subscriber's outgoing numbering continuous
  when the forwarded source changes (simulcast layer switch, publisher restart).

Only the standard library is used so the hot path has no hidden costs.  Every
function is importable without side effects, so it can be timed directly, e.g.
``python -m timeit -s "from sfu.rtp import parse_rtp; p = ..." "parse_rtp(p)"``.
"""

from __future__ import annotations

import struct

__all__ = [
    "H264_NAL_FU_A",
    "H264_NAL_STAP_A",
    "BytesLike",
    "RtpHeader",
    "SequenceRewriter",
    "TimestampRewriter",
    "Vp8Descriptor",
    "Vp8PictureIdRewriter",
    "find_extension",
    "get_extension",
    "h264_is_keyframe",
    "h264_starts_frame",
    "is_rtcp",
    "parse_rtp",
    "parse_vp8_descriptor",
    "rewrite_header",
    "rewrite_vp8_descriptor_in_place",
    "set_extension_in_place",
]

# Incoming packets arrive as bytes, rewritten copies are bytearrays, callers may slice
# with memoryview: everything here only indexes and unpacks, so all three work.
BytesLike = bytes | bytearray | memoryview

RTP_HEADER_SIZE = 12
# RFC 8285: one-byte header form and the two-byte form (low 4 bits are "appbits").
EXTENSION_PROFILE_ONE_BYTE = 0xBEDE
EXTENSION_PROFILE_TWO_BYTE = 0x1000

H264_NAL_STAP_A = 24
H264_NAL_FU_A = 28

# Bound methods of precompiled structs: attribute lookups are a measurable share of
# a ~1 µs operation.
_unpack_fixed = struct.Struct("!BBHII").unpack_from
_unpack_ext_header = struct.Struct("!HH").unpack_from
# Byte 0 (version, padding, extension, CSRC count) is left untouched, so the rewrite
# starts at byte 1: marker|payload type, sequence number, timestamp, SSRC.
_pack_rewrite = struct.Struct("!BHII").pack_into

_TS_MASK = 0xFFFFFFFF
_TS_HALF = 1 << 31


class RtpHeader:
    """Field values and byte offsets of one parsed RTP packet.

    Offsets rather than slices are stored so that nothing is copied at parse time and
    so that the same offsets stay valid in a rewritten copy of the packet (the
    rewrite never changes the packet layout).
    """

    __slots__ = (
        "csrc_count",
        "extension_end",
        "extension_offset",
        "extension_profile",
        "has_extension",
        "marker",
        "payload_end",
        "payload_offset",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        marker: bool,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        csrc_count: int,
        has_extension: bool,
        extension_profile: int,
        extension_offset: int,
        extension_end: int,
        payload_offset: int,
        payload_end: int,
    ) -> None:
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrc_count = csrc_count
        self.has_extension = has_extension
        # Profile word of the extension block (0 when absent), and where the
        # extension elements start / end (after the 4-byte block header).
        self.extension_profile = extension_profile
        self.extension_offset = extension_offset
        self.extension_end = extension_end
        self.payload_offset = payload_offset
        # Excludes RTP padding, so payload == data[payload_offset:payload_end].
        self.payload_end = payload_end

    def __repr__(self) -> str:
        return (
            f"RtpHeader(pt={self.payload_type}, seq={self.sequence_number}, ts={self.timestamp}, "
            f"ssrc={self.ssrc:#010x}, marker={self.marker}, "
            f"payload=[{self.payload_offset}:{self.payload_end}])"
        )


def parse_rtp(data: BytesLike) -> RtpHeader:
    """Parse the RTP fixed header, CSRCs, extension block bounds and padding.

    Raises ``ValueError`` (and nothing else) for anything that is not a well-formed
    RTP packet, because the input comes straight off the network.  Individual
    header-extension elements are not validated here: that would cost every packet a
    walk over the block, and ``get_extension`` tolerates malformed blocks anyway.
    """
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise ValueError(f"RTP packet too short: {size} bytes, the fixed header needs 12")
    b0, b1, seq, ts, ssrc = _unpack_fixed(data)
    if b0 >> 6 != 2:
        raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
    csrc_count = b0 & 0x0F
    pos = RTP_HEADER_SIZE + 4 * csrc_count
    if pos > size:
        raise ValueError(f"RTP packet of {size} bytes too short for its {csrc_count} CSRCs")

    if b0 & 0x10:
        if pos + 4 > size:
            raise ValueError("RTP header extension block header overruns the packet")
        profile, words = _unpack_ext_header(data, pos)
        ext_offset = pos + 4
        pos = ext_offset + 4 * words
        if pos > size:
            raise ValueError(f"RTP header extension block of {4 * words} bytes overruns the {size}-byte packet")
        has_extension = True
    else:
        profile = 0
        ext_offset = pos
        has_extension = False

    end = size
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or padding > size - pos:
            raise ValueError(f"RTP padding length {padding} is invalid for the {size - pos} bytes left")
        end = size - padding

    return RtpHeader(
        b1 >= 0x80, b1 & 0x7F, seq, ts, ssrc, csrc_count, has_extension, profile, ext_offset, pos, pos, end
    )


def is_rtcp(data: BytesLike) -> bool:
    """RFC 5761 demultiplexing of RTP and RTCP sharing one transport.

    RTCP packet types 192-223 sit where RTP's marker bit plus payload types 64-95
    would be, which is why those payload types must not be used for RTP.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def find_extension(data: BytesLike, header: RtpHeader, ext_id: int) -> tuple[int, int] | None:
    """Byte span ``(start, end)`` of an extension element's value, or None.

    Exposed for the fan-out loop: locate e.g. the transport-wide sequence number
    once per incoming packet, then write each subscriber's value at the same span
    of its copy (``struct.pack_into``) instead of walking the block per subscriber.
    Walks like libwebrtc: a malformed element ends the walk instead of raising,
    because extensions are optional metadata and the packet must still be forwarded.
    """
    pos = header.extension_offset
    end = header.extension_end
    profile = header.extension_profile
    if profile == EXTENSION_PROFILE_ONE_BYTE:
        while pos < end:
            b = data[pos]
            if b == 0:  # padding byte
                pos += 1
                continue
            element_id = b >> 4
            if element_id == 15 or element_id == 0:
                # ID 15 means "stop parsing" (RFC 8285 4.2); ID 0 with a length is invalid.
                return None
            start = pos + 1
            pos = start + (b & 0x0F) + 1
            if pos > end:
                return None
            if element_id == ext_id:
                return start, pos
    elif profile & 0xFFF0 == EXTENSION_PROFILE_TWO_BYTE:
        while pos < end:
            element_id = data[pos]
            if element_id == 0:  # padding byte
                pos += 1
                continue
            if pos + 2 > end:
                return None
            start = pos + 2
            pos = start + data[pos + 1]
            if pos > end:
                return None
            if element_id == ext_id:
                return start, pos
    return None


def get_extension(data: BytesLike, header: RtpHeader, ext_id: int) -> bytes | None:
    """Value of the RFC 8285 header extension with this negotiated id, or None.

    Done on demand because most forwarded packets only need one or two extensions
    (MID/RID for routing, transport-wide sequence number for congestion control).
    """
    span = find_extension(data, header, ext_id)
    if span is None:
        return None
    return bytes(data[span[0] : span[1]])


def set_extension_in_place(buf: bytearray, header: RtpHeader, ext_id: int, value: bytes) -> bool:
    """Overwrite an existing extension value without changing the packet length.

    Used for per-subscriber values such as the transport-wide sequence number.
    Returns False when the packet does not carry the extension.  A present extension
    of a different length raises ``ValueError``: silently leaving the publisher's
    value in place would corrupt the subscriber's congestion control feedback.
    """
    span = find_extension(buf, header, ext_id)
    if span is None:
        return False
    start, end = span
    if end - start != len(value):
        raise ValueError(f"extension {ext_id} has {end - start} bytes, cannot overwrite with {len(value)} bytes")
    buf[start:end] = value
    return True


def rewrite_header(
    data: BytesLike,
    header: RtpHeader,
    ssrc: int,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    marker: bool | None = None,
) -> bytearray:
    """Copy the packet with a subscriber's SSRC, payload type, sequence and timestamp.

    Everything after byte 11 (CSRCs, extensions, payload, padding) stays
    byte-identical, so offsets in ``header`` remain valid for the copy.  ``marker``
    None keeps the source packet's marker bit.
    """
    if not 0 <= payload_type <= 127:
        # Checked explicitly because it would otherwise silently flip the marker bit.
        raise ValueError(f"payload type {payload_type} outside 0-127")
    if marker is None:
        marker = header.marker
    buf = bytearray(data)
    _pack_rewrite(buf, 1, (0x80 | payload_type) if marker else payload_type, sequence_number, timestamp, ssrc)
    return buf


# --- VP8 (RFC 7741) ----------------------------------------------------------------


class Vp8Descriptor:
    """Parsed VP8 payload descriptor.

    ``picture_id``, ``tl0picidx``, ``tid`` and ``keyidx`` are None when the
    corresponding I, L, T or K bit is clear.  ``size`` is the descriptor length, i.e.
    the offset of the VP8 payload header from the start of the RTP payload.
    """

    __slots__ = (
        "extended",
        "is_keyframe",
        "keyidx",
        "layer_sync",
        "long_picture_id",
        "non_reference",
        "partition_id",
        "picture_id",
        "size",
        "start_of_partition",
        "tid",
        "tl0picidx",
    )

    def __init__(
        self,
        extended: bool,
        non_reference: bool,
        start_of_partition: bool,
        partition_id: int,
        picture_id: int | None,
        long_picture_id: bool,
        tl0picidx: int | None,
        tid: int | None,
        layer_sync: bool,
        keyidx: int | None,
        size: int,
        is_keyframe: bool,
    ) -> None:
        self.extended = extended
        self.non_reference = non_reference
        self.start_of_partition = start_of_partition
        self.partition_id = partition_id
        self.picture_id = picture_id
        # M bit: the picture id field is 15 bits wide (two bytes) rather than 7.
        self.long_picture_id = long_picture_id
        self.tl0picidx = tl0picidx
        self.tid = tid
        self.layer_sync = layer_sync
        self.keyidx = keyidx
        self.size = size
        # Only the first packet of a key frame says so: S=1, PID=0 and P=0 in the
        # VP8 payload header.  This is the packet a layer switch can start at.
        self.is_keyframe = is_keyframe

    def __repr__(self) -> str:
        return (
            f"Vp8Descriptor(S={int(self.start_of_partition)}, PID={self.partition_id}, "
            f"picture_id={self.picture_id}, tl0picidx={self.tl0picidx}, tid={self.tid}, "
            f"keyframe={self.is_keyframe}, size={self.size})"
        )


def parse_vp8_descriptor(data: BytesLike, start: int = 0, end: int | None = None) -> Vp8Descriptor:
    """Parse the VP8 payload descriptor found at ``data[start:end]``.

    Takes offsets rather than a slice so the RTP payload is not copied; pass
    ``header.payload_offset`` and ``header.payload_end``.  Raises ``ValueError`` when
    the descriptor is truncated or no VP8 payload byte follows it (such a packet is
    useless to a decoder and libwebrtc rejects it too).
    """
    size = len(data)
    if end is None or end > size:
        end = size
    if start >= end:
        raise ValueError("VP8 payload is empty")
    b = data[start]
    pos = start + 1
    picture_id = tl0picidx = tid = keyidx = None
    long_picture_id = layer_sync = False
    if b & 0x80:
        if pos >= end:
            raise ValueError("VP8 descriptor truncated before its extension byte")
        x = data[pos]
        pos += 1
        if x & 0x80:
            if pos >= end:
                raise ValueError("VP8 descriptor truncated before its PictureID")
            p = data[pos]
            if p & 0x80:
                if pos + 2 > end:
                    raise ValueError("VP8 descriptor truncated inside its 15-bit PictureID")
                picture_id = ((p & 0x7F) << 8) | data[pos + 1]
                long_picture_id = True
                pos += 2
            else:
                picture_id = p
                pos += 1
        if x & 0x40:
            if pos >= end:
                raise ValueError("VP8 descriptor truncated before its TL0PICIDX")
            tl0picidx = data[pos]
            pos += 1
        if x & 0x30:
            if pos >= end:
                raise ValueError("VP8 descriptor truncated before its TID/KEYIDX byte")
            tk = data[pos]
            pos += 1
            if x & 0x20:
                tid = tk >> 6
                layer_sync = bool(tk & 0x20)
            if x & 0x10:
                keyidx = tk & 0x1F
    if pos >= end:
        raise ValueError("VP8 packet has no payload after its descriptor")
    return Vp8Descriptor(
        bool(b & 0x80),
        bool(b & 0x20),
        bool(b & 0x10),
        b & 0x07,
        picture_id,
        long_picture_id,
        tl0picidx,
        tid,
        layer_sync,
        keyidx,
        pos - start,
        (b & 0x17) == 0x10 and not data[pos] & 0x01,
    )


def rewrite_vp8_descriptor_in_place(
    buf: bytearray, offset: int, desc: Vp8Descriptor, picture_id: int | None, tl0picidx: int | None
) -> None:
    """Write a new PictureID / TL0PICIDX into the descriptor at ``buf[offset:]``.

    The field keeps the width the sender chose (a 7-bit PictureID is written modulo
    128), so the packet length and every offset after it stay unchanged.  None, or a
    field the packet does not carry, leaves that field as it is: adding a field would
    mean moving the payload.
    """
    pos = offset + 2  # descriptor byte + extension byte
    if desc.picture_id is not None:
        if desc.long_picture_id:
            if picture_id is not None:
                buf[pos] = 0x80 | ((picture_id >> 8) & 0x7F)
                buf[pos + 1] = picture_id & 0xFF
            pos += 2
        else:
            if picture_id is not None:
                buf[pos] = picture_id & 0x7F
            pos += 1
    if tl0picidx is not None and desc.tl0picidx is not None:
        buf[pos] = tl0picidx & 0xFF


# --- H.264 (RFC 6184) --------------------------------------------------------------

_H264_KEY_NALS = (5, 7)  # IDR slice, SPS
# NAL types that, when present, come before the first slice of an access unit
# (H.264 7.4.1.2.3): SEI, SPS, PPS, access unit delimiter, 14-18.
_H264_AU_START_NALS = frozenset((6, 7, 8, 9, 14, 15, 16, 17, 18))
_H264_SLICE_NALS = (1, 2, 5)


def h264_is_keyframe(payload: BytesLike, start: int = 0, end: int | None = None) -> bool:
    """True if the RTP payload carries an IDR slice or an SPS.

    Looks at a single NAL unit, every NAL unit of a STAP-A, or the first fragment of
    an FU-A (later fragments cannot be decoded on their own, so switching there is
    useless).  A multi-slice IDR picture answers True for each slice's first
    packet; combine with ``h264_starts_frame`` to find where the picture begins.
    A STAP-A whose lengths overrun the payload answers False: receivers discard it.
    Never raises; malformed input answers False.
    """
    size = len(payload)
    if end is None or end > size:
        end = size
    if start >= end:
        return False
    nal_type = payload[start] & 0x1F
    if nal_type == H264_NAL_STAP_A:
        pos = start + 1
        found = False
        while pos < end:
            if pos + 2 > end:
                return False
            nalu_size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if pos + nalu_size > end:
                return False
            if nalu_size and (payload[pos] & 0x1F) in _H264_KEY_NALS:
                found = True
            pos += nalu_size
        return found
    if nal_type == H264_NAL_FU_A:
        if start + 1 >= end:
            return False
        fu_header = payload[start + 1]
        return bool(fu_header & 0x80) and (fu_header & 0x1F) in _H264_KEY_NALS
    return nal_type in _H264_KEY_NALS


def h264_starts_frame(payload: BytesLike, start: int = 0, end: int | None = None) -> bool:
    """True if the RTP payload begins a new picture (access unit).

    That is the case when the first NAL unit is one that precedes slices (SPS, PPS,
    SEI, AUD, ...) or is a slice with first_mb_in_slice == 0, which is the top bit
    of the byte after the NAL header (its Exp-Golomb code "1").  A layer switch must
    start at such a packet, not merely at any packet that ``h264_is_keyframe``.
    Never raises; malformed input answers False.
    """
    size = len(payload)
    if end is None or end > size:
        end = size
    if start >= end:
        return False
    nal_type = payload[start] & 0x1F
    if nal_type == H264_NAL_STAP_A:
        if start + 3 >= end:
            return False
        nalu_size = (payload[start + 1] << 8) | payload[start + 2]
        if nalu_size == 0:
            return False
        nal_type = payload[start + 3] & 0x1F
        body = start + 4 if nalu_size >= 2 else end  # slice header byte, if inside this NALU
    elif nal_type == H264_NAL_FU_A:
        if start + 1 >= end or not payload[start + 1] & 0x80:
            return False
        nal_type = payload[start + 1] & 0x1F
        body = start + 2
    else:
        body = start + 1
    if nal_type in _H264_AU_START_NALS:
        return True
    return nal_type in _H264_SLICE_NALS and body < end and bool(payload[body] & 0x80)


# --- Continuity across source switches ---------------------------------------------


class SequenceRewriter:
    """Maps the forwarded source's sequence numbers onto one continuous output stream.

    Within one source the mapping is a fixed offset, so reordered packets and
    retransmissions get the same output number as the original would have.  On a
    switch the new source's switch packet follows the highest number sent so far,
    and any packet of the new source older than the switch packet is dropped
    because its number would collide with ones already used.  Input numbers are
    unwrapped into an unbounded counter so that "older" stays correct however long
    a source runs.
    """

    __slots__ = ("_first_output", "_floor", "_highest", "_offset")

    def __init__(self, first_output: int | None = None) -> None:
        # None: the first source is forwarded with its own numbers, which keeps
        # publisher and subscriber logs easy to correlate.
        self._first_output = first_output
        self._highest: int | None = None  # unwrapped highest input of current source
        self._floor = 0  # unwrapped input of the switch packet
        self._offset = 0  # output = input + offset (unwrapped), taken mod 2**16

    def rewrite(self, seq: int, switch: bool = False) -> int | None:
        """Output sequence number for ``seq``, or None if the packet must be dropped.

        Pass ``switch=True`` with the first packet of a new source (typically its
        key frame); the very first packet ever starts a source implicitly.
        """
        highest = self._highest
        if switch or highest is None:
            return self._start(seq)
        ext = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
        if ext > highest:
            self._highest = ext
        elif ext < self._floor:
            return None
        return (ext + self._offset) & 0xFFFF

    def _start(self, seq: int) -> int:
        if self._highest is None:
            out = seq if self._first_output is None else self._first_output
        else:
            out = self._highest + self._offset + 1
        self._highest = self._floor = seq
        self._offset = out - seq
        return out & 0xFFFF


class TimestampRewriter:
    """Maps the forwarded source's RTP timestamps onto one monotonic output clock.

    Sources have unrelated random timestamp bases, so on a switch the new source is
    re-based to continue from the newest timestamp sent plus the wall-clock time
    since that timestamp was first seen, keeping the receiver's jitter buffer and
    A/V sync sane.  Within one source the mapping is a fixed offset.  ``now`` is
    passed in (seconds, any monotonic clock) so the class is deterministic.
    Call it only for packets that ``SequenceRewriter`` did not drop.
    """

    __slots__ = ("_clock_rate", "_first_output", "_highest", "_highest_time", "_offset")

    def __init__(self, clock_rate: int, first_output: int | None = None) -> None:
        self._clock_rate = clock_rate
        self._first_output = first_output
        self._highest: int | None = None  # newest output timestamp sent
        self._highest_time = 0.0  # when it was first sent
        self._offset = 0

    def rewrite(self, timestamp: int, now: float, switch: bool = False) -> int:
        """Output timestamp for ``timestamp``; ``switch=True`` re-bases a new source."""
        highest = self._highest
        if switch or highest is None:
            return self._start(timestamp, now)
        out = (timestamp + self._offset) & _TS_MASK
        if 0 < ((out - highest) & _TS_MASK) < _TS_HALF:
            self._highest = out
            self._highest_time = now
        return out

    def peek(self, timestamp: int) -> int | None:
        """Where `timestamp` of the current source maps, without changing state (sender-report translation)."""
        if self._highest is None:
            return None
        return (timestamp + self._offset) & _TS_MASK

    def rebase(self, timestamp: int, out: int, now: float) -> None:
        """Re-bases a new source so that ``timestamp`` maps to ``out``: for a switch whose exact place on the
        output clock is known (two simulcast layers' sender reports share the publisher's NTP clock)."""
        out &= _TS_MASK
        self._offset = out - timestamp
        if self._highest is None or 0 < ((out - self._highest) & _TS_MASK) < _TS_HALF:
            self._highest, self._highest_time = out, now

    def _start(self, timestamp: int, now: float) -> int:
        if self._highest is None:
            out = timestamp if self._first_output is None else self._first_output & _TS_MASK
        else:
            elapsed = int((now - self._highest_time) * self._clock_rate)
            out = (self._highest + max(1, elapsed)) & _TS_MASK
        self._offset = out - timestamp
        self._highest = out
        self._highest_time = now
        return out


class Vp8PictureIdRewriter:
    """Keeps VP8 PictureID and TL0PICIDX continuous for a subscriber across switches.

    Receivers use PictureID gaps to detect lost frames and TL0PICIDX to check
    temporal-layer dependencies, so a jump on a layer switch makes them wait for
    frames that never come.  Both fields are mapped by a fixed offset per source;
    on a switch the new source continues at highest-sent + 1.  PictureIDs are
    unwrapped in the width the packet uses (7 or 15 bits); outputs are 15-bit and
    ``rewrite_vp8_descriptor_in_place`` narrows them to the packet's width.
    """

    __slots__ = ("_pid_highest", "_pid_offset", "_pid_pending", "_tl0_highest", "_tl0_offset", "_tl0_pending")

    def __init__(self) -> None:
        self._pid_highest: int | None = None  # unwrapped highest input PictureID
        self._pid_offset = 0
        self._pid_pending = False
        self._tl0_highest: int | None = None
        self._tl0_offset = 0
        self._tl0_pending = False

    def rewrite(self, desc: Vp8Descriptor, switch: bool = False) -> tuple[int | None, int | None]:
        """Output (PictureID, TL0PICIDX) for this packet; None for absent fields.

        ``switch=True`` marks the first packet of a new source; a field that this
        packet lacks is re-based on the first later packet that carries it.
        """
        if switch:
            self._pid_pending = self._tl0_pending = True
        picture_id = desc.picture_id
        if picture_id is not None:
            half = 0x4000 if desc.long_picture_id else 0x40
            highest = self._pid_highest
            if highest is None or self._pid_pending:
                out = picture_id if highest is None else highest + self._pid_offset + 1
                self._pid_highest = picture_id
                self._pid_offset = out - picture_id
                self._pid_pending = False
            else:
                mask = 2 * half - 1
                ext = highest + ((picture_id - highest + half) & mask) - half
                if ext > highest:
                    self._pid_highest = ext
                out = ext + self._pid_offset
            picture_id = out & 0x7FFF
        tl0 = desc.tl0picidx
        if tl0 is not None:
            highest = self._tl0_highest
            if highest is None or self._tl0_pending:
                out = tl0 if highest is None else highest + self._tl0_offset + 1
                self._tl0_highest = tl0
                self._tl0_offset = out - tl0
                self._tl0_pending = False
            else:
                ext = highest + ((tl0 - highest + 0x80) & 0xFF) - 0x80
                if ext > highest:
                    self._tl0_highest = ext
                out = ext + self._tl0_offset
            tl0 = out & 0xFF
        return picture_id, tl0
