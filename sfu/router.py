"""A Router is one room's media: its participants, the tracks they publish, and who receives what.

`Sfu` is the boundary the control plane talks to, with plain data only (dicts, strings), so that the SFU can later
run as worker processes behind the same calls. Everyone in a room receives every track but their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from sfu import rtcp
from sfu.engine.bridge import EngineBridge, process_bridge
from sfu.errors import SignalingError
from sfu.ice import IceConfig
from sfu.participant import SfuParticipant
from sfu.pipe import PeerId, Pipe, PipeProducer, PipeSrtp, describe
from sfu.producer import Producer
from sfu.rtcserver import rtc_server_for
from sfu.taps import Tap, track_description

log = logging.getLogger("classcast.sfu.router")
Signal = Callable[[dict[str, Any]], None]
TrackEvent = Callable[[str, dict[str, Any]], None]  # (room sid, {"f": added|removed|muted, ...}) for the pipes
NACK_INTERVAL = 0.02
FEEDBACK_INTERVAL = 0.05
SELECT_INTERVAL = 0.2
REPORT_INTERVAL = 1.0
DYNACAST_GRACE = 3.0
REMB_MIN, REMB_MAX = 300_000, 10_000_000


class Router:
    def __init__(self, room_sid: str, ice: IceConfig, bridge: EngineBridge | None = None) -> None:
        self.room_sid = room_sid
        self.ice = ice
        self.bridge = bridge or process_bridge()
        self.participants: dict[str, SfuParticipant] = {}
        self.producers: dict[str, Producer] = {}
        self.taps: list[Tap] = []
        # peer worker index (or peer node id, control/relay.py) -> the pipe to the room's router there (sfu/pipe.py)
        self.pipes: dict[PeerId, Pipe] = {}
        self.on_track: TrackEvent | None = None  # the worker's: this side's tracks, for the other workers' pipes
        self._task: asyncio.Task[None] | None = None
        # the report loop's sleep (see _sleep): its future, its timer, the first tick it covers, whether it skips
        self._waiter: asyncio.Future[None] | None = None
        self._layers: tuple[tuple[int, bool, bool], ...] = ()  # _layer_epoch: the flowing and active layers
        self._epoch = 0
        self._wake: asyncio.TimerHandle | None = None
        self._first_tick = 0.0
        self._skipping = False

    # ---- membership ---------------------------------------------------------------------------------------

    async def join(self, key: str, info: dict[str, Any], signal: Signal) -> SfuParticipant:
        if key in self.participants:
            await self.leave(key)
        participant = SfuParticipant(self, key, info, signal, self.ice)
        self.participants[key] = participant
        await participant.subscribe_all(list(self.producers.values()))
        if self._task is None:
            self._task = asyncio.create_task(self._reports())
        return participant

    async def leave(self, key: str) -> None:
        participant = self.participants.pop(key, None)
        if participant is None:
            return
        for producer in list(participant.producers.values()):
            await self.remove_producer(producer)
        await participant.close()

    def tracks(self) -> list[dict[str, Any]]:
        return [p.info() for p in self.producers.values()]

    def broadcast(self, message: dict[str, Any], exclude: str | None = None) -> None:
        for key, participant in self.participants.items():
            if key != exclude:
                participant.signal(message)

    # ---- tracks -------------------------------------------------------------------------------------------

    def add_tap(self, tap: Tap) -> None:
        now = time.monotonic()
        self.taps.append(tap)
        for producer in self.producers.values():
            tap.track_added(self.room_sid, track_description(producer.tap_info(), producer.codec.as_dict()))
            producer.replay_sender_reports(tap)
            if (since := getattr(tap, "hear_since", None)) is not None:
                producer.replay_spoken(tap, since)
            if producer.tap_feed is not None:
                producer.tap_feed.restart(now)  # the new sink starts at a keyframe the feed asks for at once
        self._dynacast(now)  # layers paused for want of subscribers resume now, not at the next tick

    def remove_tap(self, tap: Tap) -> None:
        if tap in self.taps:
            self.taps.remove(tap)

    async def add_producer(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.taps = self.taps
        producer.on_missing = self._missing
        for pipe in self.pipes.values():  # a track published here crosses every pipe of the room once
            if _crosses(producer, pipe):
                pipe.attach(producer)
        self._track_event(producer, {"f": "added", "track": describe(producer, self.role_of(producer))})
        for tap in self.taps:
            tap.track_added(self.room_sid, track_description(producer.tap_info(), producer.codec.as_dict()))
        self.broadcast({"type": "track_published", "track": producer.info()}, exclude=producer.owner)
        for participant in list(self.participants.values()):
            await participant.subscribe(producer)

    async def remove_producer(self, producer: Producer) -> None:
        if self.producers.pop(producer.id, None) is None:
            return
        owner = self.participants.get(producer.owner)
        if owner is not None:
            owner.forget_producer(producer)
        producer.close()
        if not isinstance(producer, PipeProducer):  # a pipe's copy is counted where the track was published
            self.bridge.counts.update(packets_in=producer.packets_in, nacks_sent=producer.nacks_sent,
                                      plis_sent=producer.keyframes.requested)
        for pipe in self.pipes.values():
            pipe.detach(producer)
        self._track_event(producer, {"f": "removed", "track": producer.id})
        for tap in self.taps:
            tap.track_removed(self.room_sid, producer.id)
        self.broadcast({"type": "track_unpublished", "track": producer.info()})
        for participant in list(self.participants.values()):
            try:
                await participant.unsubscribe(producer)
            except Exception:  # one subscriber's failure must not keep the track with the others (nor the leave)
                log.exception("%s: unsubscribing from %s failed", participant.key, producer.id)

    async def set_track_muted(self, producer: Producer, muted: bool) -> None:
        producer.muted = muted
        self._track_event(producer, {"f": "muted", "track": producer.id, "muted": muted})
        self.broadcast({"type": "track_muted", "track": producer.info()})
        for tap in self.taps:
            notify = getattr(tap, "track_muted", None)  # optional in the Tap protocol
            if notify is not None:
                notify(self.room_sid, producer.id, muted)

    async def set_blocked(self, uid: str, blocked: bool) -> None:
        """A moderator's mute: the participant's microphone is not forwarded until unmuted."""
        for producer in self.producers.values():
            if producer.uid == uid and producer.kind == "audio":
                producer.blocked = blocked
                self.broadcast({"type": "track_muted", "track": producer.info()})

    # ---- pipes to the room on other workers (control/workers.py decides, sfu/pipe.py carries) ----------------

    def _track_event(self, producer: Producer, event: dict[str, Any]) -> None:
        """A track that crosses some pipe here appeared, went or muted: for the control plane to tell the far ends
        (`scope`: only the other workers, or only the other nodes, for a track that came by the other kind)."""
        if self.on_track is None:
            return
        scope = _scope(producer)
        if any(scope is None or (scope == "nodes") == pipe.node for pipe in self.pipes.values()):
            self.on_track(self.room_sid, event if scope is None else event | {"scope": scope})

    def open_pipe(self, peer: PeerId, loss: float = 0.0, host: str = "127.0.0.1",
                  srtp: PipeSrtp | None = None) -> Pipe:
        pipe = self.pipes.get(peer)
        if pipe is None:
            pipe = self.pipes[peer] = Pipe(self, peer, loss, host=host, srtp=srtp)
            for producer in self.forwarded(pipe):
                pipe.attach(producer)
        return pipe

    def forwarded(self, pipe: Pipe) -> list[Producer]:
        """The tracks that cross `pipe` (see _crosses)."""
        return [p for p in self.producers.values() if not p.closed and _crosses(p, pipe)]

    def role_of(self, producer: Producer) -> str:
        """The publisher's role: its participant's here, or as its worker described it (a pipe's track)."""
        owner = self.participants.get(producer.owner)
        return owner.role if owner is not None else str(getattr(producer, "role", ""))

    def local_producers(self) -> list[Producer]:
        return [p for p in self.producers.values() if not isinstance(p, PipeProducer) and not p.closed]

    async def close_pipe(self, peer: PeerId) -> None:
        pipe = self.pipes.pop(peer, None)
        if pipe is not None:
            await pipe.close()

    # ---- periodic RTCP ------------------------------------------------------------------------------------

    async def _reports(self) -> None:
        last_report = last_feedback = last_select = time.monotonic()
        while True:
            await self._sleep(self._ticks_idle(time.monotonic(), last_feedback, last_select, last_report))
            now = time.monotonic()
            try:
                for producer in list(self.producers.values()):
                    await producer.tick(now)
                if now - last_feedback >= FEEDBACK_INTERVAL:
                    last_feedback = now
                    await self._send_feedback()
                if now - last_select >= SELECT_INTERVAL:
                    last_select = now
                    epoch = self._layer_epoch(now)
                    for participant in list(self.participants.values()):
                        await participant.reselect(now, epoch)
                if now - last_report >= REPORT_INTERVAL:
                    last_report = now
                    await self._send_reports(now)
                    self._dynacast(now)
                    for participant in list(self.participants.values()):
                        for consumer in list(participant.consumers.values()):
                            await consumer.ask_again(now)
            except Exception:
                log.exception("report loop failed in room %s", self.room_sid)

    def _layer_epoch(self, now: float) -> int:
        """A number that changes whenever a layer of the room starts or stops flowing, or is paused or resumed:
        every subscriber's layer choice is due again then (SfuParticipant.reselect)."""
        layers = tuple((s.sid, s.flowing(now), s.active) for p in self.producers.values() for s in p.streams)
        if layers != self._layers:
            self._layers = layers
            self._epoch += 1
        return self._epoch

    def _ticks_idle(self, now: float, last_feedback: float, last_select: float, last_report: float) -> int:
        """How many NACK_INTERVAL ticks the loop may sleep: one while a publisher's packets are missing, else up
        to the first tick at which the feedback, the layer choice or the reports are due (the ticks in between
        would find nothing to do: 50 loop wake-ups a second per room became ~17)."""
        if any(producer.missing() for producer in self.producers.values()):
            return 1
        due = min(last_feedback + FEEDBACK_INTERVAL, last_select + SELECT_INTERVAL, last_report + REPORT_INTERVAL)
        return max(1, math.ceil((due - now) / NACK_INTERVAL - 1e-6))

    async def _sleep(self, ticks: int) -> None:
        """Sleeps `ticks` ticks; a packet found missing meanwhile (`_missing`) cuts it short at the first tick,
        as if every tick had been kept."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._first_tick = time.monotonic() + NACK_INTERVAL
        self._wake = loop.call_later(ticks * NACK_INTERVAL, _resolve, waiter)
        self._skipping = ticks > 1
        try:
            await waiter
        finally:
            self._wake.cancel()
            self._skipping = False
            self._waiter = self._wake = None

    def _missing(self) -> None:
        """A publisher's packet is missing (called per packet while any is): NACK it at the next tick."""
        if not self._skipping or self._wake is None or self._waiter is None:
            return
        self._skipping = False
        self._wake.cancel()
        self._wake = asyncio.get_running_loop().call_later(max(0.0, self._first_tick - time.monotonic()),
                                                           _resolve, self._waiter)

    async def _send_feedback(self) -> None:
        """Transport-wide congestion control feedback to every publisher that negotiated it."""
        for participant in list(self.participants.values()):
            if participant.twcc is None or not participant.producers:
                continue
            producer = next(iter(participant.producers.values()))
            media_ssrc = next((s.ssrc for s in producer.streams if s.ssrc is not None), 0)
            packet = participant.twcc.build(producer.local_ssrc, media_ssrc)
            if packet is not None:
                await participant.peer.send_rtcp(packet)

    async def _send_reports(self, now: float) -> None:
        for participant in list(self.participants.values()):
            blocks: dict[int, list[rtcp.ReportBlock]] = {}
            incoming = 0
            ssrcs: list[int] = []
            for producer in participant.producers.values():
                for block in producer.report_blocks(now):
                    blocks.setdefault(producer.local_ssrc, []).append(block)
                for stream in producer.streams:
                    incoming += stream.bitrate(now)
                    if stream.ssrc is not None:
                        ssrcs.append(stream.ssrc)
            for local_ssrc, bs in blocks.items():
                await participant.peer.send_rtcp(rtcp.build_rr(local_ssrc, bs))
            if ssrcs and participant.twcc is None and participant.remb is None:
                # A publisher with neither TWCC nor abs-send-time: room to grow above what arrives now.
                remb = min(REMB_MAX, max(REMB_MIN, int(incoming * 1.5)))
                await participant.peer.send_rtcp(rtcp.build_remb(next(iter(blocks), 0), remb, ssrcs))
        # The publishers' sender reports translated for every subscriber: one engine call per stream (each slot
        # that carries it gets the same NTP time in its own RTP timeline, sent in one sendmmsg)
        for producer in list(self.producers.values()):
            if producer.closed:
                continue
            for stream in producer.streams:
                if stream.last_sr is not None:
                    producer.bridge.engine.sender_reports(stream.sid, stream.last_sr.ntp,
                                                          stream.last_sr.rtp_timestamp)

    def resume_layers(self, now: float) -> None:
        """Another worker's subscribers need a layer (its pipe said so): resumed now, not at the next tick."""
        self._dynacast(now)

    def _dynacast(self, now: float) -> None:
        """Pause simulcast layers nobody needs (after a grace), resume them at once when someone does."""
        for producer in self.producers.values():
            if not producer.simulcast:
                continue
            needed = {0}  # the lowest layer always flows: a new subscriber starts on it at once
            for pipe in producer.pipes:  # what the other workers' subscribers need of it
                needed.update(pipe.layers_needed(producer))
            if any(getattr(tap, "wants_video", True) for tap in producer.taps):
                # A recording follows the best layer the publisher sends (TapFeed), and which one that is depends
                # on its camera (a 640x480 camera never sends the top of a three-layer ladder): pause nothing.
                needed.update(s.index for s in producer.streams)
            for consumer in producer.consumers:
                if consumer.paused:
                    continue
                needed.add(consumer.wanted_index)
                for stream in (consumer.target, consumer.current):
                    if stream is not None:
                        needed.add(stream.index)
            changed = False
            for stream in producer.streams:
                if stream.index in needed:
                    stream.unneeded_since = None
                    if not stream.active:
                        stream.active = changed = True
                elif stream.active:
                    if stream.unneeded_since is None:
                        stream.unneeded_since = now
                    elif now - stream.unneeded_since >= DYNACAST_GRACE:
                        stream.active = False
                        changed = True
            if isinstance(producer, PipeProducer):
                producer.needed(needed)  # told to the publishing worker, whose dynacast pauses and resumes
                continue
            if changed:
                owner = self.participants.get(producer.owner)
                if owner is not None:
                    owner.signal({"type": "layers", "trackId": producer.id,
                                  "layers": {s.rid: s.active for s in producer.streams}})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for key in list(self.participants):
            await self.leave(key)
        for peer in list(self.pipes):
            await self.close_pipe(peer)

    @property
    def idle(self) -> bool:
        """Nobody here, no sink, no pipe: the room's router can go (a piped room waits for the control plane)."""
        return not self.participants and not self.taps and not self.pipes


class Sfu:
    """The SFU's whole surface toward the control plane: rooms by sid, participants by connection key."""

    def __init__(self, ice: IceConfig | None = None, bridge: EngineBridge | None = None) -> None:
        self.ice = ice or IceConfig()
        self.bridge = bridge or process_bridge()
        self.routers: dict[str, Router] = {}
        self.on_track: TrackEvent | None = None  # a worker's: its rooms' own tracks, relayed to the other workers
        self._closing: set[asyncio.Task[None]] = set()

    def _router(self, room_sid: str) -> Router:
        router = self.routers.get(room_sid)
        if router is None:
            router = self.routers[room_sid] = Router(room_sid, self.ice, self.bridge)
            router.on_track = self.on_track
        return router

    # ---- one room over several workers (sfu/pipe.py; the control plane decides, control/workers.py) --------

    def open_pipe(self, room_sid: str, peer: PeerId, loss: float = 0.0, host: str = "127.0.0.1",
                  keys: tuple[bytes, bytes] | None = None) -> int:
        """This end of the room's pipe to worker `peer` (or node `peer`, bound to `host`, SRTP with `keys` = (this
        end's sending key, its receiving key)): returns its UDP port. A pipe to another node is never plain RTP."""
        if isinstance(peer, str) and keys is None:
            raise SignalingError("BAD_MESSAGE", "a pipe to another node needs its SRTP keys")
        return self._router(room_sid).open_pipe(peer, loss, host, PipeSrtp(*keys) if keys is not None else None).port

    def connect_pipe(self, room_sid: str, peer: PeerId, port: int, host: str | None = None) -> list[dict[str, Any]]:
        """Points this end at the other's port; returns the tracks published here, for the other side."""
        router = self.routers.get(room_sid)
        pipe = router.pipes.get(peer) if router is not None else None
        if router is None or pipe is None:
            raise SignalingError("NO_PIPE", f"no pipe to worker {peer} in room {room_sid}")
        if not 0 < port < 65536:
            raise SignalingError("BAD_MESSAGE", f"pipe port {port} out of range")
        pipe.connect(port, host)
        return [describe(p, router.role_of(p)) for p in router.forwarded(pipe)]

    def pipe_track(self, room_sid: str, peer: PeerId, event: dict[str, Any]) -> None:
        """A track published, unpublished or muted on worker `peer` (its `on_track`, relayed by the control plane)."""
        router = self.routers.get(room_sid)
        pipe = router.pipes.get(peer) if router is not None else None
        if pipe is None:
            return
        f = event.get("f")
        if f == "added":
            pipe.add_remote(event["track"])
        elif f == "removed":
            pipe.remove_remote(str(event["track"]))
        elif f == "muted":
            pipe.mute_remote(str(event["track"]), bool(event.get("muted")))

    def close_pipe(self, room_sid: str, peer: PeerId) -> None:
        """Ends the room's pipe to worker `peer` at once (a pipe opened again right after is a new one); the far
        side's tracks leave this router in a task, and a router kept only by its pipes closes."""
        router = self.routers.get(room_sid)
        pipe = router.pipes.pop(peer, None) if router is not None else None
        if router is None or pipe is None:
            return

        async def close() -> None:
            await pipe.close()
            if router.idle and self.routers.get(room_sid) is router:
                self.routers.pop(room_sid, None)
                await router.close()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def join(self, room_sid: str, key: str, info: dict[str, Any], signal: Signal) -> list[dict[str, Any]]:
        """Adds a participant; returns the room's current tracks. Offers follow through `signal`."""
        router = self._router(room_sid)
        await router.join(key, info, signal)
        return router.tracks()

    async def handle(self, room_sid: str, key: str, message: dict[str, Any]) -> None:
        router = self.routers.get(room_sid)
        participant = router.participants.get(key) if router else None
        if participant is None:
            raise SignalingError("NOT_JOINED", "join the room first")
        await participant.handle(message)

    async def open_one_way(self, room_sid: str, key: str, info: dict[str, Any], signal: Signal, kind: str,
                           offer: str, tracks: list[dict[str, str]], quality: str) -> str:
        """A WHIP publisher (`kind` "whip": publishes `tracks`, the offer's m-sections as sources) or a WHEP viewer
        ("whep": plays the room's teacher at `quality`) negotiated in one call with the client's offer; returns the
        answer SDP. Plain data in and out, so control/workers.py relays it to a worker as one request. On failure the
        participant has left again and a SignalingError says why (NOTHING_PUBLISHED, BAD_SDP, ...)."""
        from sfu.oneway import PublishOnlyParticipant, ViewOnlyParticipant, join_one_way

        if kind == "whep":
            producers = self.playback_tracks(room_sid)
            if not producers:
                raise SignalingError("NOTHING_PUBLISHED", "Nothing to play: no teacher is publishing in this class yet")
        said: list[dict[str, Any]] = []

        def collect(message: dict[str, Any]) -> None:
            said.append(message)
            signal(message)

        participant_class = PublishOnlyParticipant if kind == "whip" else ViewOnlyParticipant
        participant = await join_one_way(self, room_sid, key, info, collect, participant_class)
        try:
            if isinstance(participant, ViewOnlyParticipant):
                participant.quality = (quality, None, None)
                return await participant.play(offer, producers)
            await participant.handle({"type": "publish", "tracks": [{"source": t["source"]} for t in tracks]})
            await participant.handle({"type": "offer", "sdp": offer, "tracks": tracks})
            answer = next((m["sdp"] for m in said if m.get("type") == "answer"), None)
            published = next((m["tracks"] for m in said if m.get("type") == "published"), [])
            if answer is None or not published:
                problem = next((m["message"] for m in said if m.get("type") == "error"), "nothing could be published")
                raise SignalingError("BAD_SDP", f"The offer was not accepted: {problem}")
            return str(answer)
        except BaseException:
            await self.leave(room_sid, key)
            raise

    def playback_tracks(self, room_sid: str) -> list[Producer]:
        """What a WHEP viewer plays: the teacher's camera (else screen) and microphone; a moderator's or admin's
        when no teacher publishes."""
        router = self.routers.get(room_sid)
        if router is None:
            return []
        rank = {"TEACHER": 0, "ADMIN": 1, "MODERATOR": 2}

        def best(sources: tuple[str, ...]) -> Producer | None:
            fitting = [p for p in router.producers.values() if p.source in sources and not p.closed]
            fitting.sort(key=lambda p: (rank.get(router.role_of(p), 9), sources.index(p.source)))
            return fitting[0] if fitting else None

        return [p for p in (best(("camera", "screen")), best(("microphone",))) if p is not None]

    async def leave(self, room_sid: str, key: str) -> None:
        router = self.routers.get(room_sid)
        if router is None:
            return
        await router.leave(key)
        if router.idle:
            await router.close()
            self.routers.pop(room_sid, None)

    def add_tap(self, room_sid: str, tap: Tap) -> None:
        """Start feeding a sink (recorder, transcriber) with the room's tracks; existing ones are announced."""
        self._router(room_sid).add_tap(tap)

    def remove_tap(self, room_sid: str, tap: Tap) -> None:
        """Stop feeding the sink; a room kept only for the tap (everybody left) is closed."""
        router = self.routers.get(room_sid)
        if router is not None:
            router.remove_tap(tap)
            if router.idle:
                self.routers.pop(room_sid, None)
                task = asyncio.get_running_loop().create_task(router.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def request_keyframe(self, room_sid: str, track_id: str) -> bool:
        """A sink (the recorder) needs a keyframe of a track to start or to recover from loss; throttled."""
        router = self.routers.get(room_sid)
        producer = router.producers.get(track_id) if router else None
        return await producer.request_keyframe(time.monotonic()) if producer is not None else False

    async def set_blocked(self, room_sid: str, uid: str, blocked: bool) -> None:
        router = self.routers.get(room_sid)
        if router is not None:
            await router.set_blocked(uid, blocked)

    async def close_room(self, room_sid: str) -> None:
        router = self.routers.pop(room_sid, None)
        if router is not None:
            await router.close()

    async def close(self) -> None:
        for sid in list(self.routers):
            await self.close_room(sid)

    def metrics(self) -> dict[str, Any]:
        """Process-wide figures for /metrics, cumulative since the engine was made (plain data)."""
        totals = self.bridge.engine.totals()
        server = rtc_server_for(self.ice, self.bridge.engine, create=False)
        # by reason, as docs/architecture.md lists them: the engine's and the one-port server's (stun_*, ...), summed
        # where both count one (send_error: a copy the engine sent, a STUN or DTLS datagram the server sent)
        drops = dict(totals["drops"])
        counts = self.bridge.counts
        # publishers' tracks of this process: a pipe's copy of another worker's track is not counted again
        live = [p for router in self.routers.values() for p in router.local_producers()]
        for reason, count in (server.all_drops() if server is not None else {}).items():
            drops[reason] = drops.get(reason, 0) + count
        return {
            "engine": self.bridge.kind,
            "forwarded_packets": totals["packets_out"],  # RTP datagrams that left (copies and retransmissions)
            "forwarded_bytes": totals["bytes_out"],  # their size on the wire (SRTP)
            "drops": drops,
            "retransmitted": totals["retransmitted"],
            "layer_switches": totals["switches"],
            # the slow path's: the tracks that closed (bridge.counts) plus the live ones
            "packets_in": counts["packets_in"] + sum(p.packets_in for p in live),
            "nacks_sent": counts["nacks_sent"] + sum(p.nacks_sent for p in live),
            "plis_sent": counts["plis_sent"] + sum(p.keyframes.requested for p in live),
            "nacks_received": counts["nacks_received"],  # NACK packets from subscribers
            "estimated_bitrates_bps": [int(p.estimate.estimate) for router in self.routers.values()
                                       for p in router.participants.values() if p.consumers],
            # the one-port server: datagrams dropped before any connection saw them, by reason (issue 14 req 7)
            "rtc": server.stats() if server is not None else None,
        }

    def stats(self, room_sid: str) -> dict[str, Any]:
        router = self.routers.get(room_sid)
        if router is None:
            return {"participants": 0, "tracks": []}
        return {
            "participants": len(router.participants),
            "engine": router.bridge.kind,
            "pipes": [pipe.stats() for pipe in router.pipes.values()],
            "tracks": [
                {**p.info(), "packetsIn": p.packets_in, "keyframeRequests": p.keyframes.requested,
                 "layerPackets": [s.packets_in for s in p.streams], "layersActive": [s.active for s in p.streams],
                 "keyframeRequestsSuppressed": p.keyframes.suppressed, "nacksSent": p.nacks_sent,
                 "consumers": len(p.consumers), "drops": _with_wrong_codec(p.drops(), p.wrong_codec)}
                for p in router.producers.values()
            ],
            # per subscription: what the engine sent and what it did not, by reason (issue 21 req 8)
            "consumers": [
                {"uid": participant.uid, "trackId": c.producer.id, "packetsSent": info["packets_sent"],
                 "nacksReceived": c.nacks_received, "retransmitted": info["retransmitted"],
                 "nacksRefused": info["nacks_refused"], "switches": info["switches"], "drops": info["drops"]}
                for participant in router.participants.values() for c in participant.consumers.values()
                if not c.slot.removed and (info := c.slot.info())
            ],
            "transports": [
                {"uid": participant.uid, "unknownSsrc": participant.rtp_dropped,
                 **router.bridge.engine.transport_stats(participant.transport)}
                for participant in router.participants.values() if not participant.closed
            ],
        }


def _crosses(producer: Producer, pipe: Pipe) -> bool:
    """Whether a track goes out on a pipe. Published here: on every pipe. Come from another worker of this node: on
    the pipes to other nodes (only the room's origin worker holds those: it is the node's gateway). Come from another
    node: on the pipes to this node's other workers. So a track reaches each worker and each node once, never back."""
    if not isinstance(producer, PipeProducer):
        return True
    return producer.pipe.node != pipe.node


def _scope(producer: Producer) -> str | None:
    """Whose pipes a track's changes concern: everybody's (published here), or only the kind it did not come by."""
    if not isinstance(producer, PipeProducer):
        return None
    return "workers" if producer.pipe.node else "nodes"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _with_wrong_codec(drops: dict[str, int], wrong_codec: int) -> dict[str, int]:
    """The engine counts packets of another payload type too; the producer's own count is the same drops."""
    if wrong_codec:
        drops["wrong_payload_type"] = max(drops.get("wrong_payload_type", 0), wrong_codec)
    return drops
