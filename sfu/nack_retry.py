"""Asking again for a packet that stays missing, as browsers do, for the Python client's aiortc receivers.

aiortc (1.16) NACKs the missing packets once, when a new gap appears, and forgets a packet 128 sequence numbers
later. Its video jitter buffer meanwhile waits for that packet until 512 packets have queued behind it, and only then
asks for a keyframe: at 320x240 that is a picture frozen for tens of seconds when a NACK or its retransmission was
lost. libwebrtc's NackRequester asks again every round trip, up to ten times, so a browser's picture stalls for a
few hundred milliseconds instead. `RetryingNacks` keeps aiortc's own sends unchanged and adds the browser's retries;
sfu/client.py calls `ask_again` on a timer, which sends one NACK for what `due` returns.

Private aiortc internals used (audited against aiortc 1.16.0): `RTCRtpReceiver._RTCRtpReceiver__nack_generator`
(replaced by `install`, before the first packet), `RTCRtpReceiver._send_rtcp_nack`, and `NackGenerator.add` /
`.missing`, which `RTCRtpReceiver._handle_rtp_packet` calls for every packet after unwrapping RTX.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.rtcrtpreceiver import NackGenerator, RTCRtpReceiver
from aiortc.rtp import RtpPacket

RETRY_S = 0.1  # between two asks for one packet: a round trip on a slow path, libwebrtc's minimum is 20 ms
TRIES = 10  # asks per packet, libwebrtc's kMaxNackRetries
WINDOW = 512  # sequence numbers behind the newest: the video jitter buffer's capacity (older is given up there)

_GENERATOR = "_RTCRtpReceiver__nack_generator"


class RetryingNacks(NackGenerator):
    """aiortc's NACK generator, plus the packets it asked for and when, to ask again for those still missing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.ssrc: int | None = None
        self.asked: dict[int, tuple[int, float]] = {}  # sequence number -> (times asked, when last)
        self.repeated = 0  # packets asked for again (what aiortc alone would not have)

    def add(self, packet: RtpPacket) -> bool:
        if packet.ssrc != self.ssrc:  # another stream on this receiver: its numbers are not this one's
            self.ssrc, self.max_seq = packet.ssrc, None
            self.missing.clear()
            self.asked.clear()
        self.asked.pop(packet.sequence_number, None)
        missed = super().add(packet)
        if missed:  # aiortc sends a NACK for all of `missing` now
            now = self.clock()
            for seq in self.missing:
                self.asked.setdefault(seq, (1, now))
        return missed

    def due(self) -> list[int]:
        """The packets to ask for again now; each counts as asked."""
        if self.max_seq is None:
            return []
        now, newest = self.clock(), self.max_seq
        out = []
        for seq, (times, last) in list(self.asked.items()):
            if (newest - seq) & 0xFFFF >= WINDOW or times >= TRIES:
                del self.asked[seq]  # the jitter buffer gave up on it, or so would a browser
            elif now - last >= RETRY_S:
                self.asked[seq] = (times + 1, now)
                out.append(seq)
        self.repeated += len(out)
        return sorted(out)  # as aiortc orders its own: its NACK packing takes each next number as larger


def install(receiver: RTCRtpReceiver) -> RetryingNacks | None:
    """Give a video receiver the retrying generator (audio receivers have none: aiortc does not NACK audio)."""
    current = getattr(receiver, _GENERATOR, None)
    if isinstance(current, RetryingNacks):
        return current
    if not isinstance(current, NackGenerator):
        return None
    generator = RetryingNacks()
    setattr(receiver, _GENERATOR, generator)
    return generator


async def ask_again(receiver: RTCRtpReceiver) -> int:
    """Send one NACK for what this receiver still misses and is due for another ask; how many packets it names."""
    generator = getattr(receiver, _GENERATOR, None)
    if not isinstance(generator, RetryingNacks) or generator.ssrc is None:
        return 0
    lost = generator.due()
    if lost:
        await receiver._send_rtcp_nack(generator.ssrc, lost)
    return len(lost)
