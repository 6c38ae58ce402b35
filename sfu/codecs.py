"""Which codecs the SFU negotiates, in which order, and how a subscriber's codec is matched to a publisher's.

The SFU forwards without transcoding, so a subscriber's m-section must carry exactly the publisher's codec.
Publishers are asked for H.264 (constrained baseline, packetization-mode 1) first when they offer it, because
recordings can then be MP4 without transcoding; VP8 is the fallback. Audio is Opus only.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.codecs import get_capabilities
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

OPUS, VP8, H264 = "audio/opus", "video/VP8", "video/H264"
SUPPORTED = (OPUS, VP8, H264)


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """A negotiated media codec, as plain data (it crosses the control/SFU boundary)."""

    mime_type: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    fmtp: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.mime_type.split("/", 1)[1].upper()

    def as_dict(self) -> dict[str, object]:
        return {"mimeType": self.mime_type, "clockRate": self.clock_rate, "payloadType": self.payload_type,
                "channels": self.channels, "fmtp": dict(self.fmtp)}


def _h264_rank(codec: RTCRtpCodecCapability) -> int:
    # Constrained baseline (42e0xx) before baseline (4200xx): what browsers encode in hardware and MP4 takes.
    return 0 if str(codec.parameters.get("profile-level-id", "")).lower().startswith("42e0") else 1


def publisher_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """Order applied to every transceiver a publisher's offer creates: H.264 pm=1, VP8, RTX; Opus."""
    caps = get_capabilities(kind).codecs  # aiortc accepts exactly these objects as preferences
    if kind == "audio":
        return [c for c in caps if c.mimeType.lower() == OPUS]
    h264 = sorted((c for c in caps if c.mimeType == H264 and str(c.parameters.get("packetization-mode")) == "1"),
                  key=_h264_rank)
    vp8 = [c for c in caps if c.mimeType == VP8]
    rtx = [c for c in caps if c.mimeType == "video/rtx"]
    return h264 + vp8 + rtx


def forwards_any(kind: str, offered: list[RTCRtpCodecParameters]) -> bool:
    """Whether a publisher's m-section offers a codec the SFU takes, matched as aiortc will match it (H.264's
    profile and packetization mode included), so that a refusal comes before aiortc's own, unclear one."""
    ours = [c for c in publisher_preferences(kind) if c.mimeType != "video/rtx"]
    return any(is_codec_compatible(mine, theirs) for mine in ours for theirs in offered)


def subscriber_preferences(kind: str, codec: CodecInfo) -> list[RTCRtpCodecCapability]:
    """Only the publisher's codec (and RTX for video): a subscriber gets it or nothing."""
    prefs = [p for p in publisher_preferences(kind) if p.mimeType.lower() == codec.mime_type.lower()]
    if codec.mime_type == H264:
        wanted = dict(codec.fmtp).get("profile-level-id", "").lower()[:4]
        exact = [p for p in prefs if str(p.parameters.get("profile-level-id", "")).lower()[:4] == wanted]
        prefs = exact or prefs
    if kind == "video":
        prefs += [c for c in get_capabilities(kind).codecs if c.mimeType == "video/rtx"]
    return prefs


def same_codec(a: CodecInfo, b_mime: str, b_fmtp: dict[str, str]) -> bool:
    """Can packets of codec `a` be forwarded unchanged to an m-section negotiated as `b`?"""
    if a.mime_type.lower() != b_mime.lower():
        return False
    if a.mime_type == H264:
        fa = dict(a.fmtp)
        same_mode = str(fa.get("packetization-mode", "0")) == str(b_fmtp.get("packetization-mode", "0"))
        profile_a = str(fa.get("profile-level-id", ""))[:4].lower()
        return same_mode and profile_a == str(b_fmtp.get("profile-level-id", ""))[:4].lower()
    return True
