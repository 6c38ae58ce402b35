"""Consumers and the out-slots they write to: the slow-path side of the engine's slots.

An `OutSlot` is one sendonly m-section toward a subscriber: its SSRC and payload types, and in the engine (a slot
there) the sequence, timestamp and VP8 picture-id rewriters and the history of what was sent. It outlives the
producers it carries, so a teacher who reconnects (a new producer) continues on the same slot with continuous
numbers, which SRTP and the browser's jitter buffer both need.
A `Consumer` attaches one producer to one slot. The engine forwards: packets of one stream (simulcast layer) at a
time, from a keyframe on, switching layers only at a keyframe of the target, starting with the cached group of
pictures so a student who joins sees the teacher at once. The consumer chooses the target, answers NACKs through
the engine and translates sender reports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sfu import rtcp
from sfu.engine.bridge import EngineBridge, process_bridge
from sfu.producer import Producer, Stream

UP_HOLD_S = 5.0  # after the budget moved a subscriber down, this long before stepping up again (no flapping) ...
UP_GROWTH = 1.15  # ... unless its estimate, not cut since, has grown this much over what it was at the down-step
QUALITY_NAMES = ("low", "medium", "high")

SendBytes = Callable[[bytes], Awaitable[bool]]
Notify = Callable[[dict[str, Any]], None]


class OutSlot:
    def __init__(self, mid: str, kind: str, clock_rate: int, transport: int,
                 bridge: EngineBridge | None = None) -> None:
        self.mid = mid
        self.kind = kind
        self.clock_rate = clock_rate
        self.transport = transport  # the subscriber's engine transport (its SRTP context and socket)
        self.bridge = bridge or process_bridge()
        self.id: int = self.bridge.engine.add_slot(transport, clock_rate)
        self.ssrc = 0
        self.payload_type = 0
        self.rtx_ssrc: int | None = None
        self.rtx_payload_type: int | None = None
        self._bound = False  # negotiated: ssrc and payload types known
        self.consumer: Consumer | None = None
        self.offered: Consumer | None = None  # the consumer the last offer carried on this slot
        self.last_key: tuple[str, str] | None = None  # (uid, source) it last carried: reused for them first
        self.removed = False

    def bind(self, ssrc: int, payload_type: int, rtx_ssrc: int | None, rtx_payload_type: int | None) -> None:
        self.ssrc, self.payload_type = ssrc, payload_type
        self.rtx_ssrc, self.rtx_payload_type = rtx_ssrc, rtx_payload_type
        self.bridge.engine.bind_slot(self.id, ssrc, payload_type, rtx_ssrc, rtx_payload_type)
        self._bound = True

    @property
    def bound(self) -> bool:
        return self._bound

    @bound.setter
    def bound(self, value: bool) -> None:
        if not value:
            self.bridge.engine.unbind_slot(self.id)  # renegotiating: nothing leaves until bound again
            self._bound = False
        elif not self._bound:
            raise ValueError("bind() a slot with its negotiated SSRC and payload types")

    def info(self) -> dict[str, Any]:
        """The engine's view: current/target stream ids, started, counters, drops by reason."""
        return self.bridge.engine.slot_info(self.id)

    @property
    def packets_sent(self) -> int:
        return self.info()["packets_sent"]

    @property
    def octets_sent(self) -> int:
        return self.info()["octets_sent"]

    def remove(self) -> None:
        if not self.removed:
            self.removed = True
            self.bridge.forget(self.id)
            self.bridge.engine.remove_slot(self.id)


class Consumer:
    def __init__(self, producer: Producer, slot: OutSlot, send_rtcp: SendBytes, notify: Notify | None = None) -> None:
        self.producer = producer
        self.slot = slot
        self._engine = slot.bridge.engine
        self._send_rtcp = send_rtcp
        self._notify = notify
        self._paused = False  # the subscriber asked for no video ("off")
        self._target: Stream | None = producer.streams[0]
        self._engine.attach(slot.id, [s.sid for s in producer.streams], producer.kind == "video", False)
        slot.bridge.listen(slot.id, self)
        self.max_index = len(producer.streams) - 1  # the subscriber's requested maximum layer
        self.max_size: tuple[int | None, int | None] | None = None  # a maximum asked as a video size
        self.nacks_received = 0  # NACK packets that reached this consumer (the engine counts what it resent)
        self.nacks_forwarded = 0
        self.keyframes_requested = 0
        self.wanted_index = 0  # the layer the budget allows, flowing or not (dynacast keeps it on)
        self.fraction_lost = 0
        self._sent: deque[tuple[float, int]] = deque(maxlen=64)  # (when, bytes the engine sent) rate samples
        self.last_down = float("-inf")  # when the budget last chose a lower layer than the current one
        self.down_estimate = 0.0  # the subscriber's estimate then
        slot.consumer = self
        slot.last_key = (producer.uid, producer.source)

    # ---- state kept by the engine ----------------------------------------------------------------------------

    def _stream(self, sid: int) -> Stream | None:
        for stream in self.producer.streams:  # one to three: a loop beats a dict and a generator here
            if stream.sid == sid:
                return stream
        return None

    @property
    def current(self) -> Stream | None:
        """The stream (layer) the slot carries now."""
        return self._stream(self._engine.current(self.slot.id))

    @property
    def target(self) -> Stream | None:
        return self._target

    @target.setter
    def target(self, stream: Stream | None) -> None:
        self._target = stream
        self._engine.set_target(self.slot.id, stream.sid if stream is not None else -1)

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value
        self._engine.set_paused(self.slot.id, value)

    @property
    def started(self) -> bool:
        """The first packet went out: later packets continue the stream."""
        return bool(self.slot.info()["started"])

    @started.setter
    def started(self, value: bool) -> None:
        if value:
            raise ValueError("a consumer starts by sending, not by being told")
        self._engine.restart(self.slot.id)  # the next packet must be a keyframe

    @property
    def retransmitted(self) -> int:
        return self.slot.info()["retransmitted"]

    @property
    def switches(self) -> int:
        return self.slot.info()["switches"]

    @property
    def nacks_refused(self) -> int:
        """NACKs cut short by the retransmission bound (the engine's RTX_BURST rule)."""
        return self.slot.info()["nacks_refused"]

    def drops(self) -> dict[str, int]:
        return self.slot.info()["drops"]

    # ---- layer choice ----------------------------------------------------------------------------------------

    def choose(self, budget_bps: float, now: float, estimate_bps: float | None = None,
               cut_at: float = float("-inf")) -> Stream | None:
        """The highest flowing layer within the requested maximum whose rate fits the budget (the lowest
        flowing one when none fits: a small picture beats a frozen one).

        After the budget moved the subscriber down, the layer it gave up is not tried again for UP_HOLD_S, so a
        budget near a layer's rate does not flip it back and forth. The hold ends early when the subscriber's
        estimate (`estimate_bps`) has grown by UP_GROWTH since, with no cut (`cut_at`, when loss last cut it)
        since UP_HOLD_S before the down-step: a link still in slow start was not shown to be too small, the
        budget just had not reached a layer whose rate was measured higher (a resumed layer's first second).
        Without that, a student who joined as the top layer resumed sat on the lowest one for 5 s."""
        self.sent_bitrate(now)  # a rate sample every layer choice: reports without loss stay in the engine
        streams = self.producer.streams
        # flowing, or paused by us and so resumable on demand
        flowing = [s for s in streams[: self.max_index + 1] if s.flowing(now) or not s.active] or \
            [s for s in streams if s.flowing(now)]
        if not flowing:
            return self.target
        current = self.current  # one engine call: the engine switches layers only while packets are pushed
        best = flowing[0]
        for stream in flowing[1:]:
            rate = stream.expected_bitrate(now)
            # Stepping up needs 15% headroom over the layer's rate; staying on the current layer needs none.
            needed = rate if stream is current else rate * 1.15
            if needed <= budget_bps:
                best = stream
        if current is not None and current in flowing:
            if best.index < current.index <= self.max_index:  # the budget's doing, not the subscriber's maximum
                self.last_down = now
                self.down_estimate = estimate_bps if estimate_bps is not None else float("inf")
            elif best.index > current.index and now - self.last_down < UP_HOLD_S:
                grown = estimate_bps is not None and estimate_bps >= self.down_estimate * UP_GROWTH \
                    and cut_at < self.last_down - UP_HOLD_S
                if not grown:
                    return current  # a layer the budget just gave up is not tried again at once
        return best

    def wanted(self, budget_bps: float, now: float) -> int:
        """The layer this subscriber could take if every layer flowed: what dynacast must keep on."""
        best = 0
        for stream in self.producer.streams[1 : self.max_index + 1]:
            if stream.expected_bitrate(now) * 1.15 <= budget_bps:
                best = stream.index
        return best

    async def retarget(self, stream: Stream | None, now: float) -> None:
        if stream is not None and stream is not self._target:
            self.target = stream
        target = self._target
        # Until the switch happens, keep asking for the target's keyframe (the stream's throttle spaces them).
        if target is not None and target.flowing(now) and target is not self.current and \
                await target.request_keyframe(now):
            self.keyframes_requested += 1

    # ---- forwarding (the engine's) ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Called once the slot is negotiated: the engine replays the cached pictures; without a complete group
        a keyframe is asked for."""
        if not self.slot.bound or self.paused:
            return
        stream = self.target if self.target is not None else self.producer.streams[0]
        now = time.monotonic()
        if self.producer.simulcast and not stream.flowing(now):
            # The target is paused (dynacast resumes it for us): start on the best layer flowing below it, not
            # on the target's cached picture from before the pause; the target follows at its first keyframe.
            below = [s for s in self.producer.streams[: stream.index + 1] if s.flowing(now)]
            if below:
                stream = below[-1]
        target = self.target
        if stream is not target:
            self._engine.set_target(self.slot.id, stream.sid)  # the engine starts on its target's pictures
        need_keyframe = self._engine.start(self.slot.id)
        if stream is not target and target is not None:
            self._engine.set_target(self.slot.id, target.sid)
        self.slot.bridge.dispatch()
        if need_keyframe:
            if await stream.request_keyframe(now):
                self.keyframes_requested += 1

    async def ask_again(self, now: float) -> None:
        """A bound slot that has not forwarded a keyframe yet asks for one again (each report tick, spaced by the
        stream's throttle). The first request can be lost: a UDP packet; or a pipe's far side drops a request for
        an SSRC it has not sent on that pipe yet (a class moved to another node); or the throttle folded it into
        another subscriber's request that was lost. A browser then asks by itself, aiortc never does, and its
        picture stayed black (tests/cluster/test_netns.py, once in a few runs)."""
        if self.producer.kind != "video" or not self.slot.bound or self.paused or self.started:
            return
        target = self.target if self.target is not None else self.producer.streams[0]
        flowing = [s for s in self.producer.streams[: target.index + 1] if s.flowing(now)]
        if flowing and await flowing[-1].request_keyframe(now):
            self.keyframes_requested += 1

    def on_switched(self, stream_id: int) -> None:
        """The engine switched the slot to another layer (at its keyframe)."""
        stream = self._stream(stream_id)
        if stream is not None and self.producer.simulcast and self._notify is not None:
            self._notify({"type": "quality_changed", "trackId": self.producer.id, "layer": stream.rid,
                          "quality": QUALITY_NAMES[min(stream.index, 2)], "width": stream.width,
                          "height": stream.height})

    def sent_bitrate(self, now: float) -> int:
        """Bits per second the engine sent on the slot over about the last second."""
        total = self._engine.bytes_out(self.slot.id)
        samples = self._sent
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= 1.0:
            samples.popleft()
        then, before = samples[0]
        return int((total - before) * 8 / (now - then)) if now - then > 0.05 else 0

    # ---- feedback from the subscriber ------------------------------------------------------------------------

    async def on_nack(self, lost: list[int]) -> None:
        """The engine answers from its caches, repeating what was sent, within its bound (at most half as many
        retransmissions as packets sent, plus a burst); only what the caches lack goes to the publisher."""
        self.nacks_received += 1
        self.slot.bridge.counts["nacks_received"] += 1
        upstream: dict[int, list[int]] = {}
        for sid, seq in self._engine.retransmit(self.slot.id, [s & 0xFFFF for s in lost]):
            upstream.setdefault(sid, []).append(seq)
        for sid, seqs in upstream.items():
            stream = self._stream(sid)
            if stream is not None:
                self.nacks_forwarded += 1
                await stream.nack_upstream(seqs)

    async def on_keyframe_request(self, now: float) -> None:
        stream = self.current or self.target
        if stream is not None and await stream.request_keyframe(now):
            self.keyframes_requested += 1

    def on_report(self, block: rtcp.ReportBlock) -> None:
        """A report that reached Python (with native feedback, only those with loss above the engine's LOSS_QUIET:
        the others change nothing and stay in the engine)."""
        self.fraction_lost = block.fraction_lost

    def close(self) -> None:
        if self.slot.consumer is self:
            self.slot.consumer = None
            if not self.slot.removed:
                self._engine.detach(self.slot.id)
                self.slot.bridge.forget(self.slot.id)
        if self in self.producer.consumers:
            self.producer.consumers.remove(self)
