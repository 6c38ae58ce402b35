"""One participant's media: a single RTCPeerConnection carrying what they publish and what they receive.

Negotiation is sequenced here so that the two offerers never collide (aiortc cannot roll back an offer):
the server offers whenever tracks appear or disappear, and a publisher first asks (`publish`), is told
`publish_ready` once no server offer is outstanding, and only then sends its own offer. Anything the client
sends that was not declared and permitted is answered `inactive`: nothing of it is received or forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiortc import RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.rate import RemoteBitrateEstimator
from aiortc.sdp import SessionDescription, candidate_from_sdp

from sfu import rtcp
from sfu.bwe import SubscriberEstimate, TwccFeedback, TwccSender
from sfu.codecs import CodecInfo, forwards_any, publisher_preferences, same_codec, subscriber_preferences
from sfu.consumer import Consumer, OutSlot
from sfu.engine import ENGINE_ERRORS
from sfu.engine.bridge import EngineBridge
from sfu.errors import SignalingError
from sfu.hdrext import URI_ABS_SEND_TIME, URI_MID, URI_RID, URI_RRID, URI_TWCC
from sfu.ice import IceConfig, candidate_address, filter_sdp_candidates
from sfu.ids import new_track_id
from sfu.peer import Peer
from sfu.producer import SOURCES, Producer, Stream
from sfu.rtcserver import rtc_server_for
from sfu.rtp import get_extension, parse_rtp
from sfu.simulcast import OfferedMedia, munge_answer, munge_offer, parse_offer

log = logging.getLogger("classcast.sfu.participant")
Signal = Callable[[dict[str, Any]], None]
SOURCE_PERMISSION = {"camera": "publish", "microphone": "publish", "screen": "screen_share"}
MAX_SDP = 64 * 1024
MAX_REMOTE_CANDIDATES = 64  # trickled candidates per connection: aioice pairs and checks every one
MAX_NEW_SECTIONS = 8  # m-sections a client may add to an offer beyond the slots we offered it
RESELECT_S = 1.0  # a subscriber whose inputs did not change gets its layers chosen again this often (reselect)
ESTIMATE_MOVED = 0.05  # ... and at once when its estimate moved by more than this fraction


class Room(Protocol):
    """What a participant asks of its room (sfu/router.py's Router): a listener interface, so that this module
    does not import the router that imports it."""

    bridge: EngineBridge

    async def add_producer(self, producer: Producer) -> None: ...

    async def remove_producer(self, producer: Producer) -> None: ...

    async def set_track_muted(self, producer: Producer, muted: bool) -> None: ...


class SfuParticipant:
    negotiate_twcc = True  # tests turn it off to exercise the REMB fallback

    def __init__(self, router: Room, key: str, info: dict[str, Any], signal: Signal, ice: IceConfig) -> None:
        self.router = router
        self.key = key
        self.uid = str(info["uid"])
        self.name = str(info.get("name", ""))
        self.role = str(info.get("role", ""))
        self.permissions = frozenset(info.get("permissions", ()))
        self.signal = signal
        self.ice = ice
        self.bridge = router.bridge
        self.transport = -1  # this subscriber's transport in the engine (per connection; _new_peer sets it)
        self.producers: dict[str, Producer] = {}
        self._by_ssrc: dict[int, Stream] = {}
        self._by_rtx: dict[int, Stream] = {}
        self._by_mid: dict[str, Producer] = {}
        self._ext: dict[str, int] = {}  # header extension ids the publisher uses (from its offer)
        self.twcc: TwccFeedback | None = None  # set when the publisher negotiated transport-wide-cc
        self.remote_candidates = 0
        self.sdp_candidates: set[str] = set()  # the distinct candidate lines of its offers and answers
        self.rtp_dropped = 0  # RTP packets received and not forwarded: unparsable or of no stream we receive
        self.ssrcs_learned = 0  # SSRC bindings made from packets (simulcast layers, a publisher's new SSRC)
        self.ssrcs_unrouted = 0  # SSRCs the engine had no room to route (Python pushes their packets)
        self.remb: RemoteBitrateEstimator | None = None  # the fallback: delay-based, from abs-send-time
        self.estimate = SubscriberEstimate()
        # what the last layer choice saw (reselect): when, the room's layer epoch, the estimate, the consumers
        self._selected: tuple[float, int, float, tuple[Any, ...]] | None = None
        self.twcc_out: TwccSender | None = None  # set when this subscriber answered transport-wide-cc
        self.twcc_decreases = 0  # estimate cuts that the subscriber's TWCC feedback caused
        self.slots: dict[str, OutSlot] = {}
        self._slot_by_ssrc: dict[int, OutSlot] = {}
        self._pending_slots: list[tuple[RTCRtpTransceiver, OutSlot]] = []
        self.consumers: dict[str, Consumer] = {}  # producer id -> consumer
        self._server_offer_out = False
        self._client_may_offer = False
        self._publish_waiting = False
        self._dirty = False
        self._lock = asyncio.Lock()
        self.video_off = False
        self.quality: tuple[str, int | None, int | None] = ("auto", None, None)
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.peer = self._new_peer()

    def _new_peer(self) -> Peer:
        self.transport = self.bridge.engine.add_transport()
        self.bridge.engine.set_feedback(self.transport, True)  # RTCP with nothing for on_rtcp stays in the engine
        peer = Peer(on_rtp=self.on_rtp, on_rtcp=self.on_rtcp, ice=self.ice, name=f"sfu:{self.uid}",
                    on_transceiver=self._on_transceiver, engine=self.bridge.engine, transport=self.transport,
                    rtc=rtc_server_for(self.ice, self.bridge.engine))
        peer.on_loss_window = self.on_loss_window

        async def on_state() -> None:
            state = peer.pc.connectionState
            if state == "connected":
                await self._start_consumers()
            self.signal({"type": "connection_state", "state": state})

        peer.pc.on("connectionstatechange", on_state)
        return peer

    @staticmethod
    def _on_transceiver(transceiver: RTCRtpTransceiver) -> None:
        transceiver.setCodecPreferences(publisher_preferences(transceiver.kind))

    # ---- incoming media and feedback: the per-packet path ------------------------------------------------

    def on_rtp(self, data: bytes, arrival: float, pushed: int | None = None) -> None:
        """A packet from the publisher. `pushed`: the engine already forwarded it (its SSRC is routed to its
        stream: `_route`) and these are push's flags; what is left is the bookkeeping (TWCC, statistics, NACKs,
        keyframe sizes, taps)."""
        try:
            header = parse_rtp(data)
        except ValueError:
            self.rtp_dropped += 1
            return
        if header.has_extension and self.twcc is not None:
            value = get_extension(data, header, self._ext[URI_TWCC])
            if value is not None and len(value) == 2:
                self.twcc.record(value[0] << 8 | value[1], arrival)
        rtx = False
        stream = self._by_ssrc.get(header.ssrc)
        if stream is None:
            stream = self._by_rtx.get(header.ssrc)
            rtx = stream is not None
        if stream is None:
            stream, rtx = self._learn_ssrc(data, header)
            if stream is None:
                self.rtp_dropped += 1  # nothing we receive: unannounced SSRC, receive-only m-section, garbage
                return
        if header.has_extension and self.twcc is None and self.remb is not None:
            self._remb(data, header, arrival)  # only for our streams: the estimator keeps a table by SSRC
        if rtx:
            stream.producer.on_rtx(stream, data, header, arrival)
        else:
            stream.producer.on_rtp(stream, data, header, arrival, pushed)

    def _remb(self, data: bytes, header: Any, arrival: float) -> None:
        value = get_extension(data, header, self._ext[URI_ABS_SEND_TIME])
        if value is None or len(value) != 3:
            return
        result = self.remb.add(arrival_time_ms=int(arrival * 1000),  # type: ignore[union-attr]
                               abs_send_time=value[0] << 16 | value[1] << 8 | value[2],
                               payload_size=header.payload_end - header.payload_offset, ssrc=header.ssrc)
        if result is not None:
            bitrate, ssrcs = result
            sender = next((p.local_ssrc for p in self.producers.values()), 0)
            task = asyncio.get_running_loop().create_task(self.peer.send_rtcp(rtcp.build_remb(sender, bitrate, ssrcs)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _learn_ssrc(self, data: bytes, header: Any) -> tuple[Stream | None, bool]:
        """An SSRC the SDP did not announce (simulcast never does): bind it through the MID and RID (or
        repaired-RID, for RTX) header extensions, or by payload type for a single-stream producer."""
        if not header.has_extension or URI_MID not in self._ext:
            return None, False
        mid = get_extension(data, header, self._ext[URI_MID])
        producer = self._by_mid.get(mid.decode(errors="replace")) if mid else None
        if producer is None:
            return None, False
        for uri, rtx in ((URI_RID, False), (URI_RRID, True)):
            rid = get_extension(data, header, self._ext[uri]) if uri in self._ext else None
            if rid is None:
                continue
            stream = producer.stream(rid.decode(errors="replace"))
            if stream is None:
                return None, False
            self._bind_ssrc(stream, header.ssrc, rtx)
            return stream, rtx
        if producer.simulcast:
            return None, False
        stream = producer.streams[0]
        if header.payload_type == producer.codec.payload_type and stream.ssrc is None:
            self._bind_ssrc(stream, header.ssrc, False)
            return stream, False
        if header.payload_type == producer.rtx_payload_type and stream.rtx_ssrc is None:
            self._bind_ssrc(stream, header.ssrc, True)
            return stream, True
        return None, False

    def _bind_ssrc(self, stream: Stream, ssrc: int, rtx: bool) -> None:
        """A stream has one SSRC (and one RTX SSRC) at a time: a new one replaces the old binding, so the tables
        hold at most two entries per stream however many SSRCs a publisher sends with the same MID and RID."""
        table = self._by_rtx if rtx else self._by_ssrc
        old = stream.rtx_ssrc if rtx else stream.ssrc
        if old is not None and table.get(old) is stream:
            del table[old]
            if not rtx:
                self._route(old, -1)
        if rtx:
            stream.rtx_ssrc = ssrc
        else:
            stream.ssrc = ssrc
            self._route(ssrc, stream.sid)
        table[ssrc] = stream
        self.ssrcs_learned += 1

    def _route(self, ssrc: int, sid: int) -> None:
        """The engine pushes this SSRC's packets to its stream where it reads them (sid -1: no longer), before
        Python sees them: forwarding waits for neither the event loop nor the GIL. RTX stays with Python (it is
        rebuilt into the original packet first); a stream the engine removes loses its route there."""
        try:
            self.bridge.engine.route(self.transport, ssrc, sid)
        except ENGINE_ERRORS:  # more SSRCs than routes (a publisher cycling SSRCs): Python pushes the rest
            self.ssrcs_unrouted += 1

    @staticmethod
    async def _requests(requests: list[tuple[Consumer, list[int] | None]], now: float) -> None:
        for consumer, lost in requests:
            if lost is not None:
                await consumer.on_nack(lost)
            else:
                await consumer.on_keyframe_request(now)

    def on_rtcp(self, data: bytes) -> Awaitable[None] | None:
        """Reports, REMB and transport-wide-cc feedback are applied at once; only NACK, PLI and FIR need the
        consumer's coroutines, so only a compound packet carrying one of them costs a task (returned for the
        caller to run): at browser rates most RTCP is feedback and reports, a thousand packets a second at 100."""
        now = time.monotonic()
        requests: list[tuple[Consumer, list[int] | None]] = []  # (consumer, lost sequence numbers or None: a key)
        for packet in rtcp.parse_rtcp(data):
            if isinstance(packet, rtcp.SenderReport):
                stream = self._by_ssrc.get(packet.ssrc)
                if stream is not None:
                    stream.producer.on_sender_report(stream, packet, now)
                self._on_blocks(packet.reports)
            elif isinstance(packet, rtcp.ReceiverReport):
                self._on_blocks(packet.reports)
            elif isinstance(packet, rtcp.Nack):
                consumer = self._consumer_for(packet.media_ssrc)
                if consumer is not None:
                    requests.append((consumer, packet.lost))
            elif isinstance(packet, rtcp.Pli):
                consumer = self._consumer_for(packet.media_ssrc)
                if consumer is not None:
                    requests.append((consumer, None))
            elif isinstance(packet, rtcp.Remb):
                self.estimate.on_remb(packet.bitrate)
            elif isinstance(packet, rtcp.TransportCC) and self.twcc_out is not None:
                window = self.twcc_out.on_feedback(packet.fci)
                if window is not None:
                    self.on_loss_window(*window, now)
            elif isinstance(packet, rtcp.Fir):
                for ssrc, _seq in packet.entries:
                    consumer = self._consumer_for(ssrc)
                    if consumer is not None:
                        requests.append((consumer, None))
        return self._requests(requests, now) if requests else None

    def on_loss_window(self, lost: int, reported: int, now: float | None = None) -> None:
        """A transport-cc loss window: from on_rtcp, or read by the engine (native feedback), which hands up only
        the windows whose loss the estimate acts on."""
        now = time.monotonic() if now is None else now
        sent = sum(c.sent_bitrate(now) for c in self.consumers.values())
        before = self.estimate.decreases
        self.estimate.on_loss(lost * 256 // reported, sent, now)
        self.twcc_decreases += self.estimate.decreases - before

    def _consumer_for(self, ssrc: int) -> Consumer | None:
        slot = self._slot_by_ssrc.get(ssrc)
        return slot.consumer if slot is not None else None

    def _on_blocks(self, blocks: list[rtcp.ReportBlock]) -> None:
        now = time.monotonic()
        worst = -1
        for block in blocks:
            consumer = self._consumer_for(block.ssrc)
            if consumer is not None:
                consumer.on_report(block)
                if consumer.producer.kind == "video":
                    worst = max(worst, block.fraction_lost)
        if worst >= 0:
            sent = sum(c.sent_bitrate(now) for c in self.consumers.values())
            self.estimate.on_loss(worst, sent, now)

    # ---- signaling --------------------------------------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        async with self._lock:
            if self.closed:
                return
            if kind == "publish":
                await self._on_publish_request(message)
            elif kind == "offer":
                await self._on_offer(message)
            elif kind == "answer":
                await self._on_answer(message)
            elif kind == "candidate":
                await self._on_candidate(message)
            elif kind == "unpublish":
                await self.router.remove_producer(self._find_own(message))
            elif kind == "mute":
                muted = message.get("muted")
                if not isinstance(muted, bool):
                    raise SignalingError("BAD_MESSAGE", "mute needs a boolean 'muted'")
                await self.router.set_track_muted(self._find_own(message), muted)
            elif kind == "set_quality":
                await self._on_quality(message)
            elif kind == "restart":
                await self._restart()
            else:
                raise SignalingError("UNKNOWN_TYPE", f"unknown message type {kind!r}")

    def _find_own(self, message: dict[str, Any]) -> Producer:
        track_id, source = message.get("trackId"), message.get("source")
        for producer in self.producers.values():
            if producer.id == track_id or (track_id is None and producer.source == source):
                return producer
        raise SignalingError("TRACK_NOT_FOUND", "no such published track")

    def _check_sources(self, tracks: Any) -> list[dict[str, str]]:
        if not isinstance(tracks, list) or not tracks or len(tracks) > 3:
            raise SignalingError("BAD_MESSAGE", "tracks must be a list of 1 to 3 {source} objects")
        seen = set()
        out = []
        for track in tracks:
            source = track.get("source") if isinstance(track, dict) else None
            if not isinstance(source, str) or source not in SOURCE_PERMISSION:  # a dict is not even hashable
                raise SignalingError("BAD_MESSAGE", "source must be camera, microphone or screen")
            if SOURCE_PERMISSION[source] not in self.permissions:
                raise SignalingError("FORBIDDEN", f"your role may not publish {source}")
            if source in seen:
                raise SignalingError("BAD_MESSAGE", f"{source} listed twice")
            seen.add(source)
            out.append({"source": source, "mid": str(track.get("mid", ""))})
        return out

    async def _on_publish_request(self, message: dict[str, Any]) -> None:
        self._check_sources(message.get("tracks"))
        if self._server_offer_out:
            self._publish_waiting = True  # publish_ready follows the answer to our offer
            return
        self._grant_publish()

    def _grant_publish(self) -> None:
        self._publish_waiting = False
        self._client_may_offer = True
        self.signal({"type": "publish_ready"})

    def _description(self, message: dict[str, Any], kind: str) -> RTCSessionDescription:
        sdp = message.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP:
            raise SignalingError("BAD_MESSAGE", f"{kind} needs an SDP string")
        sdp, dropped = filter_sdp_candidates(sdp, self.ice)
        if dropped:
            log.info("ignored %d remote candidates outside the allowed networks", dropped)
        if "\nm=" in sdp:
            # aiortc would take a media description without these and then fail in a task of its own: the
            # connection would hang in `connecting`, the client told nothing
            for attribute, why in (("a=fingerprint:", "DTLS needs the certificate's fingerprint"),
                                   ("a=setup:", "DTLS needs to know which side starts")):
                if f"\n{attribute}" not in sdp:
                    raise SignalingError("BAD_SDP", f"the {kind} has no {attribute.rstrip(':')} line: {why}")
        # candidates in the SDP count toward the same bound as trickled ones: aioice checks every one
        candidates = self.sdp_candidates | {line for line in sdp.splitlines() if line.startswith("a=candidate:")}
        if len(candidates) + self.remote_candidates > MAX_REMOTE_CANDIDATES:
            raise SignalingError("BAD_SDP", f"at most {MAX_REMOTE_CANDIDATES} candidates per connection")
        self.sdp_candidates = candidates
        return RTCSessionDescription(sdp=sdp, type=kind)

    def _parse_offer(self, sdp: str) -> tuple[dict[str, OfferedMedia], SessionDescription]:
        """Both readings of a publisher's offer (ours for simulcast and extensions, aiortc's for the m-sections),
        or BAD_SDP: aiortc's parser raises assertion, index and value errors on malformed lines.

        An offer may hold the slots we offered plus `MAX_NEW_SECTIONS` of its own: each m-section becomes a
        transceiver, and a 64 KiB offer could otherwise ask for hundreds."""
        try:
            offered = parse_offer(sdp)
            parsed = SessionDescription.parse(sdp)
        except Exception as exc:  # a parser of untrusted text: any failure is the offer's fault
            raise SignalingError("BAD_SDP", f"cannot parse offer: {type(exc).__name__}") from None
        if len(parsed.media) > len(self.slots) + MAX_NEW_SECTIONS:
            raise SignalingError("BAD_SDP", f"offer has {len(parsed.media)} m-sections, at most "
                                            f"{len(self.slots) + MAX_NEW_SECTIONS} are accepted")
        if any(not isinstance(m.rtp.muxId, str) or not m.rtp.muxId for m in parsed.media):
            raise SignalingError("BAD_SDP", "every m-section needs an a=mid")
        return offered, parsed

    async def _on_offer(self, message: dict[str, Any]) -> None:
        if not self._client_may_offer:
            raise SignalingError("NEGOTIATION", "send publish and wait for publish_ready before an offer")
        declared = {t["mid"]: t["source"] for t in self._check_sources(message.get("tracks"))}
        offer = self._description(message, "offer")
        offered, parsed = self._parse_offer(offer.sdp)
        directions: dict[str, str] = {mid: "sendonly" if slot.consumer else "inactive"
                                      for mid, slot in self.slots.items()}
        for media in parsed.media:
            mid = media.rtp.muxId
            if mid in directions:
                continue
            sends = media.direction in ("sendonly", "sendrecv")
            if mid in declared and sends and SOURCES[declared[mid]] == media.kind:
                directions[mid] = "recvonly"
            elif mid in self._by_mid and sends:
                directions[mid] = "recvonly"  # an already published track, offered again
            else:
                directions[mid] = "inactive"  # undeclared or not permitted: receive nothing
        for mid in declared:
            if directions.get(mid) != "recvonly":
                raise SignalingError("BAD_MESSAGE", f"mid {mid!r} is not a sending m-section of the right kind")
        for media in parsed.media:
            if directions.get(media.rtp.muxId) == "recvonly" and not forwards_any(media.kind, media.rtp.codecs):
                names = ", ".join(sorted({c.mimeType for c in media.rtp.codecs})) or "no codec"
                raise SignalingError("UNSUPPORTED_CODEC", f"m-section {media.rtp.muxId!r} offers {names}: the server "
                                     "forwards Opus, VP8 and H.264 (baseline, packetization-mode 1)")
        try:
            answer = await self.peer.accept_offer(offer, directions)
        except Exception as exc:  # aiortc raises ValueError/OperationError/… on SDP it cannot take
            raise SignalingError("BAD_SDP", f"cannot accept offer: {exc}") from exc
        self._client_may_offer = False
        for media in offered.values():
            self._ext.update(media.extensions)
        if not self.negotiate_twcc:
            for media in offered.values():
                media.extensions.pop(URI_TWCC, None)
            self._ext.pop(URI_TWCC, None)
        if URI_TWCC in self._ext and self.twcc is None:
            self.twcc = TwccFeedback()
        elif self.twcc is None and self.remb is None and URI_ABS_SEND_TIME in self._ext:
            self.remb = RemoteBitrateEstimator()
        # Camera simulcast is received as offered; a screen share is received as one layer (no simulcast lines
        # in the answer make the browser send only its first encoding). A camera already published is offered
        # again with every later publish (the screen share): its answer must keep the simulcast and RID lines, or
        # the browser falls back to one layer without RIDs, which left students on 320x180 once a screen was on.
        simulcast = {mid for mid, source in declared.items()
                     if source == "camera" and mid in offered and offered[mid].simulcast}
        simulcast |= {mid for mid, producer in self._by_mid.items()
                      if producer.simulcast and mid in offered and offered[mid].simulcast}
        self._send_description("answer", munge_answer(answer.sdp, offered, simulcast))
        new = []
        for mid, source in declared.items():
            if mid in self._by_mid:
                continue
            producer = self._make_producer(mid, source, offered[mid].rids if mid in simulcast else None)
            if producer is not None:
                new.append(producer)
        for mid, producer in list(self._by_mid.items()):
            if directions.get(mid) != "recvonly":
                await self.router.remove_producer(producer)  # the client stopped sending it
        self.signal({"type": "published", "tracks": [p.info() | {"mid": p.mid} for p in new]})
        for producer in new:
            await self.router.add_producer(producer)
        await self._after_negotiation()

    def _make_producer(self, mid: str, source: str, rids: list[str] | None) -> Producer | None:
        section = self.peer.section(mid)
        media_codec = section.primary_codec
        if media_codec is None:
            self.signal({"type": "error", "code": "UNSUPPORTED_CODEC", "message": f"no usable codec for {source}"})
            return None
        codec = CodecInfo(mime_type=media_codec.mime_type, clock_rate=media_codec.clock_rate,
                          payload_type=media_codec.payload_type, channels=media_codec.channels,
                          fmtp=tuple(sorted((k, str(v)) for k, v in media_codec.fmtp.items())))
        ssrc = section.remote_ssrcs[0] if section.remote_ssrcs else None
        rtx_ssrc = section.remote_rtx.get(ssrc) if ssrc is not None else None
        producer = Producer(
            track_id=new_track_id(), owner=self.key, uid=self.uid, source=source, mid=mid, codec=codec,
            ssrc=ssrc, rtx_ssrc=rtx_ssrc, rtx_payload_type=section.rtx_payload_type(codec.payload_type),
            local_ssrc=section.local_ssrc or 0, send_rtcp=self.peer.send_rtcp, rids=rids, bridge=self.bridge,
        )
        self.producers[producer.id] = producer
        self._by_mid[mid] = producer
        stream = producer.streams[0]
        if stream.ssrc is not None:
            self._by_ssrc[stream.ssrc] = stream
            self._route(stream.ssrc, stream.sid)
        if stream.rtx_ssrc is not None:
            self._by_rtx[stream.rtx_ssrc] = stream
        return producer

    def forget_producer(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)
        self._by_mid.pop(producer.mid, None)
        for table in (self._by_ssrc, self._by_rtx):
            for ssrc in [s for s, stream in table.items() if stream.producer is producer]:
                del table[ssrc]

    async def _on_answer(self, message: dict[str, Any]) -> None:
        if not self._server_offer_out:
            raise SignalingError("NEGOTIATION", "no offer is waiting for an answer")
        answer = self._description(message, "answer")
        try:
            await self.peer.accept_answer(answer)
        except Exception as exc:
            raise SignalingError("BAD_SDP", f"cannot accept answer: {exc}") from exc
        self._server_offer_out = False
        self._bind_slots()
        await self._start_consumers()
        await self._after_negotiation()

    async def _after_negotiation(self) -> None:
        if self._publish_waiting:
            self._grant_publish()
        elif self._dirty:
            await self._offer()

    async def _on_candidate(self, message: dict[str, Any]) -> None:
        candidate = message.get("candidate")
        if candidate is None:
            return  # end of candidates
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            raise SignalingError("BAD_MESSAGE", "candidate must be {candidate, sdpMid, sdpMLineIndex} or null")
        line = candidate["candidate"]
        if not line:
            return
        address = candidate_address(line)
        if address is None or not self.ice.allows(address):
            return  # outside the allowed networks: never contacted
        if self.remote_candidates + len(self.sdp_candidates) >= MAX_REMOTE_CANDIDATES:
            raise SignalingError("BAD_MESSAGE", f"at most {MAX_REMOTE_CANDIDATES} candidates per connection")
        self.remote_candidates += 1
        try:
            ice = candidate_from_sdp(line.removeprefix("a=").removeprefix("candidate:"))
            ice.sdpMid = candidate.get("sdpMid")
            ice.sdpMLineIndex = candidate.get("sdpMLineIndex")
            await self.peer.pc.addIceCandidate(ice)
        except Exception as exc:
            raise SignalingError("BAD_MESSAGE", f"bad candidate: {exc}") from exc

    async def _on_quality(self, message: dict[str, Any]) -> None:
        """A maximum by name (low, medium, high, auto), by video size (maxWidth/maxHeight), or off (audio only);
        for one track (trackId) or every video track."""
        quality = message.get("quality", "auto")
        if quality not in ("auto", "low", "medium", "high", "off"):
            raise SignalingError("BAD_MESSAGE", "quality must be auto, low, medium, high or off")
        width, height = message.get("maxWidth"), message.get("maxHeight")
        for value in (width, height):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise SignalingError("BAD_MESSAGE", "maxWidth and maxHeight must be positive integers")
        track_id = message.get("trackId")
        consumers = [c for c in self.consumers.values() if c.producer.kind == "video"
                     and (track_id is None or c.producer.id == track_id)]
        if track_id is not None and not consumers:
            raise SignalingError("TRACK_NOT_FOUND", "no such video track")
        if track_id is None:
            self.video_off = quality == "off"
            self.quality = (quality, width, height)  # also for tracks that appear later
        for consumer in consumers:
            _apply_quality(consumer, quality, width, height)
            was_paused = consumer.paused
            consumer.paused = quality == "off"
            if was_paused and not consumer.paused:
                consumer.started = False
                await consumer.start()
        self.signal({"type": "quality_changed", "quality": quality, **({"trackId": track_id} if track_id else {})})
        await self.select_layers(time.monotonic())

    def _selection_inputs(self) -> tuple[tuple[Any, ...], bool]:
        """The consumers' settings a layer choice depends on, and whether a switch is still under way (the choice
        keeps asking for the target's keyframe until the engine switched)."""
        state = []
        switching = False
        for c in self.consumers.values():
            state.append((c.producer.id, c.paused, c.max_index, c.max_size, c.slot.bound))
            if c.producer.simulcast and not c.paused and c._target is not None and c._target is not c.current:
                switching = True
        return tuple(state), switching

    async def reselect(self, now: float, epoch: int) -> None:
        """The router's periodic layer choice, run only when it could choose differently: the room's layers
        started or stopped flowing (`epoch`), this subscriber's estimate moved, its consumers or their settings
        changed, a switch is under way, or RESELECT_S passed (layer rates drift). At 100 subscribers choosing
        every one's layers every SELECT_INTERVAL was about 4% of the server's CPU for choices that were the same
        nearly every time."""
        estimate = self.estimate.tick(now)
        last = self._selected
        if last is not None and now - last[0] < RESELECT_S and epoch == last[1] \
                and abs(estimate - last[2]) <= ESTIMATE_MOVED * last[2]:
            state, switching = self._selection_inputs()
            if not switching and state == last[3]:
                return
        await self.select_layers(now, epoch)

    async def select_layers(self, now: float, epoch: int = -1) -> None:
        """Every subscriber's layers within min(estimate, requested maximum): by the router (reselect), and at
        once when the subscriber asks for another quality or subscribes."""
        estimate = self.estimate.tick(now)
        self._selected = (now, epoch, estimate, self._selection_inputs()[0])
        simulcast = [c for c in self.consumers.values() if c.producer.simulcast and not c.paused and c.slot.bound]
        if not simulcast:
            return
        # The other tracks at the rate they arrive, not at what was sent them over the last second: a new
        # screen share's first second holds the cached pictures it was started with, and counted as its rate that
        # burst moved a student off the camera's top layer for a moment just after it reached it.
        fixed = sum(c.producer.streams[0].expected_bitrate(now) for c in self.consumers.values()
                    if not c.producer.simulcast and not c.paused and c.producer.streams[0].flowing(now))
        share = max(0.0, estimate - fixed) / len(simulcast)
        for consumer in simulcast:
            if consumer.max_size is not None:  # layer sizes become known as their keyframes arrive
                consumer.max_index = _fitting_layer(consumer.producer.streams, *consumer.max_size)
            consumer.wanted_index = consumer.wanted(share, now)
            await consumer.retarget(consumer.choose(share, now, estimate, self.estimate.last_decrease), now)

    # ---- subscriptions (server-initiated offers) ----------------------------------------------------------

    async def subscribe(self, producer: Producer) -> None:
        if self._consume(producer):
            await self.renegotiate()

    async def subscribe_all(self, producers: list[Producer]) -> None:
        """A joiner's subscriptions to the room's tracks in one offer: one round trip and one SDP exchange, not
        one per track (the second track's offer had to wait for the first one's answer)."""
        if [producer for producer in producers if self._consume(producer)]:
            await self.renegotiate()

    def _consume(self, producer: Producer) -> bool:
        """A consumer of the producer on a free slot; False when there is nothing to add."""
        if producer.id in self.consumers or producer.owner == self.key:
            return False
        slot = self._free_slot(producer)
        consumer = Consumer(producer, slot, self.peer.send_rtcp, self.signal)
        consumer.paused = self.video_off and producer.kind == "video"
        if producer.kind == "video":
            _apply_quality(consumer, *self.quality)
        self.consumers[producer.id] = consumer
        producer.consumers.append(consumer)
        slot.bound = False  # (re)bound to this producer's codec after the answer
        return True

    def _free_slot(self, producer: Producer) -> OutSlot:
        free = [s for s in list(self.slots.values()) + [s for _, s in self._pending_slots]
                if s.consumer is None and s.kind == producer.kind]
        key = (producer.uid, producer.source)
        for slot in free:
            if slot.last_key == key:
                return slot
        if free:
            return free[0]
        transceiver = self.peer.add_send_transceiver(producer.kind, stream_id=producer.uid)
        slot = OutSlot(mid="", kind=producer.kind, clock_rate=producer.codec.clock_rate, transport=self.transport,
                       bridge=self.bridge)
        self._pending_slots.append((transceiver, slot))
        return slot

    async def unsubscribe(self, producer: Producer) -> None:
        consumer = self.consumers.pop(producer.id, None)
        if consumer is not None:
            consumer.close()
            await self.renegotiate()

    async def renegotiate(self) -> None:
        """Offer the current subscriptions, now or as soon as the negotiation in progress is over."""
        if self._server_offer_out or self._client_may_offer or self.closed:
            self._dirty = True
            return
        await self._offer()

    async def _offer(self) -> None:
        self._dirty = False
        transceivers = {t.mid: t for t in self.peer.pc.getTransceivers() if t.mid is not None}
        for mid, slot in self.slots.items():
            t = transceivers.get(mid)
            if t is None:
                continue
            t.direction = "sendonly" if slot.consumer is not None else "inactive"
            if slot.consumer is not None:
                t.setCodecPreferences(subscriber_preferences(slot.kind, slot.consumer.producer.codec))
        for t, slot in self._pending_slots:
            if slot.consumer is not None:
                t.setCodecPreferences(subscriber_preferences(slot.kind, slot.consumer.producer.codec))
            else:
                t.direction = "inactive"
        if not self.peer.pc.getTransceivers():
            return
        peer = self.peer
        try:
            offer = await peer.create_offer()
        except InvalidStateError:
            if self.closed or peer is not self.peer:
                # It left (or restarted: the new connection is offered afresh) while this offer waited for its
                # turn, as when a teacher and a student leave at once: nobody is there to answer it.
                return
            raise
        for slot in [*self.slots.values(), *(s for _, s in self._pending_slots)]:
            slot.offered = slot.consumer  # what this offer carries: bound only when its answer comes
        for t, slot in self._pending_slots:
            slot.mid = t.mid or ""
            self.slots[slot.mid] = slot
        self._pending_slots = []
        self._server_offer_out = True
        tracks = {mid: slot.consumer.producer.info() for mid, slot in self.slots.items() if slot.consumer}
        receiving = {p.mid: [s.rid for s in p.streams if s.rid] for p in self.producers.values() if p.simulcast}
        self._send_description("offer", munge_offer(offer.sdp, self._ext, receiving), tracks=tracks)

    def _send_description(self, kind: str, sdp: str, **extra: Any) -> None:
        """The SDP, then its candidates trickled one by one and an end-of-candidates.

        aiortc gathers before it writes the SDP, so the candidates are in it as well; the SDP leaves out
        `a=end-of-candidates` so that a client may also add the trickled ones, which is what browsers expect.
        """
        lines = sdp.splitlines()
        self.signal({"type": kind, "sdp": "\r\n".join(x for x in lines if x != "a=end-of-candidates") + "\r\n",
                     **extra})
        mid, index = None, -1
        for line in lines:
            if line.startswith("m="):
                index += 1
            elif line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:") and index == 0:  # bundled: the first m-section's suffice
                self.signal({"type": "candidate", "candidate": {"candidate": line[2:], "sdpMid": mid,
                                                                "sdpMLineIndex": 0}})
        self.signal({"type": "candidate", "candidate": None})

    def _subscriber_twcc(self) -> TwccSender | None:
        """The subscriber answered transport-wide-cc (with feedback) to our offer: number what we send it."""
        _, remote = self.peer.descriptions()
        if remote is None or remote.type != "answer" or not any(
                f.type == "transport-cc" for media in remote.media for c in media.rtp.codecs for f in c.rtcpFeedback):
            return self.twcc_out
        for media in remote.media:
            ext_id = next((e.id for e in media.rtp.headerExtensions if e.uri == URI_TWCC), None)
            if ext_id is not None:
                if self.twcc_out is None or self.twcc_out.ext_id != ext_id:
                    self.twcc_out = TwccSender(ext_id, self.bridge.engine, self.transport)
                return self.twcc_out
        return self.twcc_out

    def _bind_slots(self) -> None:
        sections = {s.mid: s for s in self.peer.media_sections()}
        twcc = self._subscriber_twcc()
        self.bridge.engine.set_twcc(self.transport, twcc.ext_id if twcc is not None else 0)  # the engine stamps
        self._slot_by_ssrc = {}
        for mid, slot in self.slots.items():
            section = sections.get(mid)
            if section is None or section.local_ssrc is None:
                continue
            self._slot_by_ssrc[section.local_ssrc] = slot
            consumer = slot.consumer
            if consumer is None or slot.offered is not consumer:
                continue  # subscribed after the offer went out: the next offer carries it
            codec = consumer.producer.codec
            match = next((c for c in section.media_codecs if same_codec(codec, c.mime_type, c.fmtp)), None)
            if section.direction not in ("sendonly", "sendrecv"):  # the answer's m-section does not receive
                slot.bound = False
                self.signal({"type": "error", "code": "NEGOTIATION", "message": f"the answer's m-section {mid!r} "
                             f"does not receive (negotiated {section.direction} on the server's side): track "
                             f"{consumer.producer.id} is not sent"})
                continue
            if match is None:
                slot.bound = False
                self.signal({"type": "error", "code": "UNSUPPORTED_CODEC",
                             "message": f"cannot receive {codec.mime_type} for track {consumer.producer.id}"})
                continue
            slot.bind(section.local_ssrc, match.payload_type, section.local_rtx_ssrc,
                      section.rtx_payload_type(match.payload_type))

    async def _start_consumers(self) -> None:
        if not self.peer.connected:
            return
        if any(c.producer.simulcast and not c.started for c in self.consumers.values()):
            await self.select_layers(time.monotonic())  # start on the layer the budget allows, not the lowest
        for consumer in list(self.consumers.values()):
            if consumer.slot.bound and not consumer.started:
                await consumer.start()

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def _restart(self) -> None:
        """A fresh transport: aiortc cannot restart ICE in place, so the connection is replaced."""
        for producer in list(self.producers.values()):
            await self.router.remove_producer(producer)
        producers = [c.producer for c in self.consumers.values()]
        for consumer in self.consumers.values():
            consumer.close()
        old, old_slots, old_transport = self.peer, self._all_slots(), self.transport
        self.peer = self._new_peer()
        await old.close()
        self._drop_engine_state(old_slots, old_transport)
        self.slots, self._slot_by_ssrc, self._pending_slots = {}, {}, []
        self.twcc_out = None  # numbered per transport
        self._server_offer_out = self._client_may_offer = self._publish_waiting = False
        self.consumers = {}
        self.remote_candidates = 0
        self.sdp_candidates = set()
        self.signal({"type": "restarted"})
        for producer in producers:
            if not producer.closed:
                await self.subscribe(producer)

    async def close(self) -> None:
        self.closed = True
        for consumer in self.consumers.values():
            consumer.close()
        self.consumers = {}
        await self.peer.close()
        self._drop_engine_state(self._all_slots(), self.transport)

    def _all_slots(self) -> list[OutSlot]:
        return [*self.slots.values(), *(s for _, s in self._pending_slots)]

    def _drop_engine_state(self, slots: list[OutSlot], transport: int) -> None:
        """The connection is gone: its slots and transport (SRTP context, socket) leave the engine."""
        for slot in slots:
            slot.remove()
        self.bridge.engine.remove_transport(transport)


def _apply_quality(consumer: Consumer, quality: str, width: int | None, height: int | None) -> None:
    top = len(consumer.producer.streams) - 1
    consumer.max_index = {"low": 0, "medium": min(1, top)}.get(quality, top)
    consumer.max_size = (width, height) if width is not None or height is not None else None
    if consumer.max_size is not None:
        consumer.max_index = _fitting_layer(consumer.producer.streams, width, height)


def _fitting_layer(streams: list[Stream], width: int | None, height: int | None) -> int:
    """The highest layer whose picture fits the requested size; layers not yet measured are assumed to halve
    in each dimension below the top one (the usual 1, 1/2, 1/4 simulcast ladder)."""
    top = streams[-1]
    best = 0
    for stream in streams:
        w, h = stream.width, stream.height
        if (w is None or h is None) and top.width and top.height:
            scale = 2 ** (len(streams) - 1 - stream.index)
            w, h = top.width // scale, top.height // scale
        if w is None or h is None:
            continue
        if (width is None or w <= width) and (height is None or h <= height):
            best = stream.index
    return best
