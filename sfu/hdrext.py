"""The RTP header extensions the SFU negotiates and reads, named once (RFC 8285 URIs).

An extension's id differs per session (each side's SDP says which); its URI is what the code knows it by. The SDP
munging (`simulcast.py`), aiortc's side of a peer (`peer.py`), the demultiplexer (`participant.py`) and the bench's
browser-like subscribers all name these, so they live here and nowhere else.
"""

from __future__ import annotations

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"  # RFC 9143: which m-section (BUNDLE) a packet belongs to
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"  # RFC 8852: which simulcast layer
URI_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"  # RFC 8852: the layer an RTX packet repairs
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"  # transport-wide sequence
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"  # REMB's send time
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"  # RFC 6464
