"""Simulcast SDP handling against an offer as Chromium 150 writes it (trimmed to what matters)."""

from __future__ import annotations

from sfu.hdrext import URI_RID, URI_RRID, URI_TWCC
from sfu.simulcast import munge_answer, munge_offer, parse_offer

CHROME_OFFER = "\r\n".join([
    "v=0", "o=- 7095854591573862605 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=mid:0",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    f"a=extmap:4 {URI_TWCC}", "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
    f"a=extmap:10 {URI_RID}", f"a=extmap:11 {URI_RRID}", "a=sendonly", "a=rtpmap:96 VP8/90000",
    "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=rid:q send", "a=rid:h send", "a=rid:f send",
    "a=simulcast:send q;h;f",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:1",
    f"a=extmap:4 {URI_TWCC}", "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid", "a=sendonly",
    "a=rtpmap:111 opus/48000/2", ""])

AIORTC_ANSWER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=recvonly", "a=mid:0",
    "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "a=rtcp-mux",
    "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=recvonly", "a=mid:1",
    "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid", "a=rtpmap:111 opus/48000/2", ""])


def test_parse_offer_reads_layers_and_extension_ids() -> None:
    offered = parse_offer(CHROME_OFFER)
    assert offered["0"].rids == ["q", "h", "f"] and offered["0"].simulcast
    assert offered["0"].extensions[URI_RID] == 10 and offered["0"].extensions[URI_TWCC] == 4
    assert offered["1"].rids == [] and not offered["1"].simulcast


def test_paused_and_alternative_layers() -> None:
    sdp = CHROME_OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,x;f")
    assert parse_offer(sdp)["0"].rids == ["q", "h", "f"]


def test_answer_receives_simulcast_with_the_offerers_ids() -> None:
    answer = munge_answer(AIORTC_ANSWER, parse_offer(CHROME_OFFER), {"0"})
    video, audio = answer.split("m=audio")
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f" in video
    assert f"a=extmap:10 {URI_RID}" in video and f"a=extmap:11 {URI_RRID}" in video
    assert f"a=extmap:4 {URI_TWCC}" in video and f"a=extmap:4 {URI_TWCC}" in audio
    assert "a=rtcp-fb:96 transport-cc" in video and "a=rtcp-fb:111 transport-cc" in audio
    assert "simulcast" not in audio and URI_RID not in audio
    # no simulcast requested for that m-section (a screen share): one layer
    one = munge_answer(AIORTC_ANSWER, parse_offer(CHROME_OFFER), set())
    assert "a=rid:" not in one and "simulcast" not in one and f"a=extmap:4 {URI_TWCC}" in one


def test_our_offers_keep_rid_negotiable_on_the_bundle() -> None:
    offer = AIORTC_ANSWER.replace("a=recvonly", "a=sendonly")
    munged = munge_offer(offer)
    video, audio = munged.split("m=audio")
    for uri in (URI_TWCC, URI_RID, URI_RRID):
        assert uri in video
    assert URI_TWCC in audio and URI_RID not in audio
    ids = [int(line.split(":")[1].split(" ")[0]) for line in video.splitlines() if line.startswith("a=extmap:")]
    assert len(ids) == len(set(ids)), "no id used twice"
    assert munge_offer(munged).count(URI_RID) == 1, "idempotent"


def test_a_re_offer_keeps_the_ids_and_the_simulcast_lines_negotiated_with_a_publisher() -> None:
    """aiortc numbers extensions its own way; a re-offer to a peer that publishes must keep the ids that peer's
    offer chose (and our answer accepted), and the simulcast receive lines of its camera: Chromium's renderer
    crashed on a re-offer that renumbered them (found by i12's second-publisher test)."""
    negotiated = parse_offer(CHROME_OFFER)["0"].extensions
    offer = AIORTC_ANSWER.replace("a=recvonly", "a=sendonly")
    munged = munge_offer(offer, negotiated, {"0": ["q", "h", "f"]})
    extmaps = [line for line in munged.splitlines() if line.startswith("a=extmap:")]
    for uri, ident in negotiated.items():
        assert all(line.startswith(f"a=extmap:{ident} ") or uri not in line for line in extmaps), (uri, extmaps)
    video = munged.split("m=audio")[0]
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f" in video
    for section in munged.split("m=")[1:]:
        ids = [int(line.split(":")[1].split(" ")[0].split("/")[0]) for line in section.splitlines()
               if line.startswith("a=extmap:")]
        assert len(ids) == len(set(ids)), "no id used twice"
    assert munge_offer(munged, negotiated, {"0": ["q", "h", "f"]}) == munged, "idempotent"
