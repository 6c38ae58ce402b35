"""Simulcast in SDP, which aiortc does not know: reading the publisher's layers and extension ids from its offer,
and writing the lines the answer needs (`a=rid:... recv`, `a=simulcast:recv`, the RID, repaired-RID and
transport-wide-cc extensions and their feedback), into the answer string we send.

aiortc keeps its own, unmodified description: it only needs it for ICE and DTLS, and the SFU, not aiortc,
handles every RTP and RTCP packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.hdrext import URI_RID, URI_RRID, URI_TWCC

MAX_LAYERS = 3


@dataclass
class OfferedMedia:
    mid: str
    kind: str
    rids: list[str] = field(default_factory=list)  # send layers in the publisher's order (lowest first)
    extensions: dict[str, int] = field(default_factory=dict)  # uri -> id

    @property
    def simulcast(self) -> bool:
        return len(self.rids) > 1


def _sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def parse_offer(sdp: str) -> dict[str, OfferedMedia]:
    """Per MID: kind, the layers listed in `a=simulcast:send`, and the header extension ids."""
    out: dict[str, OfferedMedia] = {}
    for lines in _sections(sdp)[1:]:
        kind = lines[0][2:].split(" ", 1)[0]
        mid = next((line[6:] for line in lines if line.startswith("a=mid:")), None)
        if mid is None:
            continue
        media = OfferedMedia(mid=mid, kind=kind)
        send_rids = [line[6:].split(" ")[0] for line in lines
                     if line.startswith("a=rid:") and line[6:].split(" ")[1:2] == ["send"]]
        for line in lines:
            if line.startswith("a=extmap:"):
                head, _, rest = line[9:].partition(" ")
                try:
                    media.extensions[rest.split(" ")[0]] = int(head.split("/")[0])
                except ValueError:
                    continue
            elif line.startswith("a=simulcast:send "):
                # "q;h;f", alternatives "q,r;h", paused "~q": one layer per ';', first alternative, not paused.
                listed = [alt.split(",")[0].lstrip("~") for alt in line[17:].split(" ")[0].split(";")]
                media.rids = [r for r in listed if r in send_rids][:MAX_LAYERS]
        out[mid] = media
    return out


def munge_answer(answer: str, offered: dict[str, OfferedMedia], simulcast_mids: set[str]) -> str:
    """Adds simulcast receive lines for `simulcast_mids` and transport-wide-cc wherever the publisher offered it."""
    sections = _sections(answer)
    out = sections[0]
    for lines in sections[1:]:
        mid = next((line[6:] for line in lines if line.startswith("a=mid:")), None)
        media = offered.get(mid or "")
        if media is None or lines[0].split(" ")[1] == "0":  # rejected m-section
            out += lines
            continue
        have = {line.split(" ")[1] for line in lines if line.startswith("a=extmap:")}
        wanted = [URI_TWCC]
        if mid in simulcast_mids:
            wanted += [URI_RID, URI_RRID]
        extra_ext = [f"a=extmap:{media.extensions[uri]} {uri}" for uri in wanted
                     if uri in media.extensions and uri not in have]
        payload_types = lines[0].split(" ")[3:]
        extra_fb = ([f"a=rtcp-fb:{pt} transport-cc" for pt in payload_types]
                    if URI_TWCC in media.extensions else [])
        extra_rid = []
        if mid in simulcast_mids:
            extra_rid = [f"a=rid:{rid} recv" for rid in media.rids] + [f"a=simulcast:recv {';'.join(media.rids)}"]
        out += _insert(lines, extra_ext, extra_fb, extra_rid)
    return "\r\n".join(out) + "\r\n"


def _insert(lines: list[str], ext: list[str], fb: list[str], rid: list[str]) -> list[str]:
    """Extmaps after the last extmap (or the mid), feedback after the rtpmaps, rid/simulcast at the end."""
    result = list(lines)
    anchor = max((i for i, line in enumerate(result) if line.startswith(("a=extmap:", "a=mid:"))), default=0)
    result[anchor + 1 : anchor + 1] = ext
    last_rtp = max((i for i, line in enumerate(result) if line.startswith(("a=rtpmap:", "a=rtcp-fb:", "a=fmtp:"))),
                   default=len(result) - 1)
    result[last_rtp + 1 : last_rtp + 1] = fb
    return result + rid


# Ids we give the extensions in our own offers when free; any free id in 1-14 otherwise (one-byte headers).
OFFER_EXTENSIONS = {"audio": [URI_TWCC], "video": [URI_TWCC, URI_RID, URI_RRID]}
PREFERRED_IDS = {URI_TWCC: 5, URI_RID: 10, URI_RRID: 11}


def munge_offer(offer: str, negotiated: dict[str, int] | None = None,
                receiving: dict[str, list[str]] | None = None) -> str:
    """Adds the transport-wide-cc, RID and repaired-RID extensions to the offers we make (subscriptions).

    A browser keeps the bundle's negotiated extensions for later m-sections: if our first offer to it lacked RID,
    its own offer to publish a simulcast camera afterwards fails ("negotiates simulcast but does not negotiate the
    RID RTP header extension"). Offering them costs nothing: we never have to send them.

    `negotiated` (uri -> id): the ids this peer already uses on the bundle (from its own offer, when it publishes).
    A re-offer must keep them: aiortc numbers extensions its own way, and an offer that renumbers what was
    negotiated crashes Chromium's renderer. `receiving` (mid -> rids): the simulcast m-sections we receive from
    this peer, whose `a=rid:... recv` / `a=simulcast:recv` lines the re-offer must carry as our answer did.
    """
    negotiated = negotiated or {}
    lines_all = offer.splitlines()
    present = {}  # uri -> id as aiortc wrote it
    for line in lines_all:
        if line.startswith("a=extmap:"):
            ident, uri = line[9:].split(" ", 1)
            present[uri.split(" ")[0]] = int(ident.split("/")[0])
    ids: dict[str, int] = {uri: i for uri, i in negotiated.items() if 1 <= i <= 14}
    used = set(ids.values())
    for uri in [*present, URI_TWCC, URI_RID, URI_RRID]:
        if uri in ids:
            continue
        wanted = present.get(uri, PREFERRED_IDS.get(uri, 1))
        ids[uri] = wanted if wanted not in used else next(i for i in range(1, 15) if i not in used)
        used.add(ids[uri])
    sections = _sections(offer)
    out = sections[0]
    for lines in sections[1:]:
        kind = lines[0][2:].split(" ", 1)[0]
        lines = [_renumber(line, ids) for line in lines]
        have = {line.split(" ")[1] for line in lines if line.startswith("a=extmap:")}
        extra = [f"a=extmap:{ids[uri]} {uri}" for uri in OFFER_EXTENSIONS.get(kind, []) if uri not in have]
        # transport-cc feedback asked for every payload type: a browser then reports what arrived when.
        fb = [] if any(line.endswith(" transport-cc") for line in lines) else \
            [f"a=rtcp-fb:{pt} transport-cc" for pt in lines[0].split(" ")[3:]]
        mid = next((line[6:] for line in lines if line.startswith("a=mid:")), "")
        rids = (receiving or {}).get(mid, [])
        rid = [] if not rids or any(line.startswith("a=simulcast:") for line in lines) else \
            [f"a=rid:{r} recv" for r in rids] + [f"a=simulcast:recv {';'.join(rids)}"]
        if rids and URI_RID not in have and not any(URI_RID in line for line in extra):
            extra += [f"a=extmap:{ids[URI_RID]} {URI_RID}"]
        out += _insert(lines, extra, fb, rid)
    return "\r\n".join(out) + "\r\n"


def _renumber(line: str, ids: dict[str, int]) -> str:
    if not line.startswith("a=extmap:"):
        return line
    ident, rest = line[9:].split(" ", 1)
    direction = ident[ident.index("/"):] if "/" in ident else ""
    uri = rest.split(" ")[0]
    return f"a=extmap:{ids[uri]}{direction} {rest}" if uri in ids else line
