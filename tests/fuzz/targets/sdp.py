"""SDP offers as the SFU reads a publisher's: `SfuParticipant._description` (size, candidates filtered) and
`_parse_offer` (our simulcast/extension reader and aiortc's own parser, wrapped), then our answer munged with what
the offer declared. Text arrives as a JSON string, so any code point may be in it (invalid UTF-8 bytes become lone
surrogates here). Only SignalingError may come out (the signaling hub sends its code: BAD_MESSAGE or BAD_SDP)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

INSTRUMENT = ("sfu.simulcast", "sfu.ice", "sfu.participant", "aiortc.sdp")
BOUND_MS = 150.0
STATELESS = True

participant: Any = None
simulcast: Any = None
SignalingError: Any = None
_self: Any = None
ANSWER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:0\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
    "a=fmtp:97 apt=96\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n"
)


def setup() -> None:
    global participant, simulcast, SignalingError, _self
    from sfu import participant as p
    from sfu import simulcast as s
    from sfu.errors import SignalingError as error
    from sfu.ice import IceConfig

    participant, simulcast, SignalingError = p, s, error
    _self = SimpleNamespace(ice=IceConfig(), slots={}, remote_candidates=0, sdp_candidates=set())


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    if not text.startswith("v=0"):
        text = "v=0\r\n" + text
    if "\na=fingerprint:" not in text:  # refused before any parser without them: give most inputs the lines
        text = text.replace("v=0", "v=0\r\na=fingerprint:sha-256 00\r\na=setup:actpass", 1)
    _self.sdp_candidates = set()  # stateless: each input is a connection's first SDP
    cls = participant.SfuParticipant
    try:
        offer = cls._description(_self, {"sdp": text}, "offer")
        offered, parsed = cls._parse_offer(_self, offer.sdp)
    except SignalingError as exc:
        assert exc.code in ("BAD_MESSAGE", "BAD_SDP"), exc.code
        return
    simulcast_mids = {mid for mid, media in offered.items() if media.simulcast}
    answer = simulcast.munge_answer(ANSWER, offered, simulcast_mids)
    assert answer.startswith("v=0")
    for media in parsed.media:
        assert isinstance(media.rtp.muxId, str)
