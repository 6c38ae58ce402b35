"""One-way participants for the HTTP media protocols: a WHIP publisher and a WHEP viewer.

Both negotiate exactly once, with the client's offer: WHIP (RFC 9725) and WHEP have no renegotiation, so neither
may take the server's offers that a WebSocket participant answers whenever tracks come and go. A publisher therefore
subscribes to nothing; a viewer answers its client's receive-only m-sections with the tracks chosen at that moment
and later carries a replacement of the same kind (the teacher reconnected) on the same m-section when the codec
negotiated there fits. Everything else (publishing, simulcast, layer selection, dynacast, recording taps) is the
ordinary SfuParticipant's.

New file beside sfu/participant.py (owned by the transport work of issue 14) so that file stays untouched: it uses
the router's `_router` and reports task the way Router.join does; if Router grows a way to add a participant of
another class, `join_one_way` should call it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from aiortc import RTCRtpTransceiver

from sfu.codecs import publisher_preferences, subscriber_preferences
from sfu.consumer import Consumer, OutSlot
from sfu.errors import SignalingError
from sfu.participant import SfuParticipant, Signal, _apply_quality
from sfu.producer import Producer
from sfu.router import Sfu

log = logging.getLogger("classcast.sfu.oneway")


class PublishOnlyParticipant(SfuParticipant):
    """A WHIP publisher: its one offer publishes; it receives nothing, so it never needs a server offer."""

    async def subscribe(self, producer: Producer) -> None:
        return None

    async def subscribe_all(self, producers: list[Producer]) -> None:
        return None

    async def renegotiate(self) -> None:
        return None


class ViewOnlyParticipant(SfuParticipant):
    """A WHEP viewer: answers the client's receive-only offer with the chosen tracks, never offers."""

    # kind -> producer while the answer is made: the codec preferences of the transceivers aiortc creates for it
    _plan: Mapping[str, Producer] = MappingProxyType({})
    answered = False

    def _on_transceiver(self, transceiver: RTCRtpTransceiver) -> None:  # type: ignore[override]
        producer = self._plan.get(transceiver.kind)
        if producer is not None:
            transceiver.setCodecPreferences(subscriber_preferences(transceiver.kind, producer.codec))
        else:
            transceiver.setCodecPreferences(publisher_preferences(transceiver.kind))

    async def play(self, sdp: str, producers: list[Producer]) -> str:
        """Answer `sdp` (the client's offer): one track of `producers` per receiving m-section of its kind."""
        async with self._lock:
            if self.answered:
                raise SignalingError("NEGOTIATION", "a WHEP session negotiates once")
            offer = self._description({"sdp": sdp}, "offer")
            _, parsed = self._parse_offer(offer.sdp)
            if not any(m.kind in ("audio", "video") and m.direction in ("recvonly", "sendrecv") for m in parsed.media):
                # nothing to play, and nothing to connect: the session would never end
                raise SignalingError("BAD_SDP", "the offer has no audio or video m-section that receives")
            left = list(producers)
            chosen: dict[str, Producer] = {}
            directions: dict[str, str] = {}
            for media in parsed.media:
                mid = media.rtp.muxId
                producer = next((p for p in left if p.kind == media.kind), None)
                if producer is not None and media.direction in ("recvonly", "sendrecv"):
                    left.remove(producer)
                    chosen[mid] = producer
                    directions[mid] = "sendonly"
                else:
                    directions[mid] = "inactive"
            self._plan = {p.kind: p for p in chosen.values()}
            try:
                answer = await self.peer.accept_offer(offer, directions)
            except Exception as exc:  # aiortc raises ValueError/OperationError/... on SDP it cannot take
                raise SignalingError("BAD_SDP", f"cannot accept offer: {exc}") from exc
            self.answered = True
            for mid, producer in chosen.items():
                slot = OutSlot(mid=mid, kind=producer.kind, clock_rate=producer.codec.clock_rate,
                               transport=self.transport, bridge=self.bridge)
                self.slots[mid] = slot
                self._attach(slot, producer)
            self._bind_slots()
            await self._start_consumers()
            return answer.sdp

    def _attach(self, slot: OutSlot, producer: Producer) -> None:
        consumer = Consumer(producer, slot, self.peer.send_rtcp, self.signal)
        if producer.kind == "video":
            _apply_quality(consumer, *self.quality)
        self.consumers[producer.id] = consumer
        producer.consumers.append(consumer)
        slot.offered = consumer

    async def subscribe(self, producer: Producer) -> None:
        """A track published after the answer fills an idle m-section of its kind (same codec: _bind_slots says)."""
        if not self.answered or producer.id in self.consumers or producer.owner == self.key:
            return
        wanted = ("camera", "screen") if producer.kind == "video" else ("microphone",)
        if producer.source not in wanted:
            return
        async with self._lock:
            slot = next((s for s in self.slots.values() if s.consumer is None and s.kind == producer.kind), None)
            if slot is None:
                return
            self._attach(slot, producer)
            self._bind_slots()
            await self._start_consumers()

    async def subscribe_all(self, producers: list[Producer]) -> None:
        for producer in producers:
            await self.subscribe(producer)

    async def renegotiate(self) -> None:
        return None  # the m-section stays, idle, until a track of its kind takes it (subscribe)


async def join_one_way(sfu: Sfu, room_sid: str, key: str, info: dict[str, Any], signal: Signal,
                       kind: type[SfuParticipant]) -> SfuParticipant:
    """Router.join for a participant class of this module (no subscriptions at join)."""
    router = sfu._router(room_sid)
    if key in router.participants:
        await router.leave(key)
    participant = kind(router, key, info, signal, router.ice)
    router.participants[key] = participant
    if router._task is None:
        router._task = asyncio.create_task(router._reports())
    return participant

