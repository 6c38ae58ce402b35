"""Compound RTCP from a peer, of every type the SFU reads (SR, RR, NACK, PLI, FIR, REMB, transport-cc, BYE),
parsed by `rtcp.parse_rtcp` (which never raises) and applied as `SfuParticipant.on_rtcp` applies it to a
subscriber's consumer: NACKs answered from a real send history, keyframe requests, reports into the estimate,
transport-cc into the subscriber's TwccSender. Nothing may raise; the cost is bounded per input."""

from __future__ import annotations

import asyncio
from typing import Any

INSTRUMENT = ("sfu.rtcp", "sfu.bwe", "sfu.consumer", "sfu.keyframes")
BOUND_MS = 40.0
STATELESS = True

rtcp: Any = None
_loop: asyncio.AbstractEventLoop | None = None
_consumer: Any = None
_estimate: Any = None
_wire: Any = None
_twcc: Any = None
_streams: list[int] = []


def setup() -> None:
    global rtcp, _loop, _consumer, _estimate, _wire, _twcc, _streams
    from sfu import bwe
    from sfu import rtcp as module
    from tests.sfu.test_keyframes import Wire, _feed, _producer
    from tests.sfu.test_keyframes import _consumer as make_consumer

    rtcp = module
    _loop = asyncio.new_event_loop()
    _wire = Wire()
    producer = _producer(Wire())
    _consumer = make_consumer(producer, _wire, 0)
    _streams = [stream.sid for stream in producer.streams]
    _twcc = bwe.TwccSender(ext_id=3)
    _consumer.slot.twcc = _twcc
    _loop.run_until_complete(_feed(producer, 3000, keyframe_every=100))  # a send history to answer NACKs from
    _estimate = bwe.SubscriberEstimate()


async def _apply(packets: list[Any]) -> None:
    now = 10.0
    for packet in packets:
        if isinstance(packet, rtcp.Nack):
            await _consumer.on_nack(packet.lost)
        elif isinstance(packet, rtcp.Pli):
            await _consumer.on_keyframe_request(now)
        elif isinstance(packet, rtcp.Fir):
            for _ssrc, _seq in packet.entries:
                await _consumer.on_keyframe_request(now)
        elif isinstance(packet, rtcp.SenderReport | rtcp.ReceiverReport):
            for block in packet.reports:
                _consumer.on_report(block)
                _estimate.on_loss(block.fraction_lost, _consumer.sent_bitrate(now), now)
        elif isinstance(packet, rtcp.Remb):
            _estimate.on_remb(packet.bitrate)
        elif isinstance(packet, rtcp.TransportCC):
            _twcc.on_feedback(packet.fci)
    _estimate.tick(now)


def one_input(data: bytes) -> None:
    packets = rtcp.parse_rtcp(data)
    assert isinstance(packets, list)
    # each input judged on its own: the retransmission budget starts full (the engine keeps it per attachment;
    # the send history stays with the slot)
    _consumer.slot.bridge.engine.attach(_consumer.slot.id, _streams, True, False)
    _wire.rtp.clear()
    _wire.rtcp.clear()
    assert _loop is not None
    _loop.run_until_complete(_apply(packets))
