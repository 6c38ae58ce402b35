"""The Python client's NACK retries (sfu/nack_retry.py): what it asks again for, when, and when it stops."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from sfu.nack_retry import RETRY_S, TRIES, WINDOW, RetryingNacks

STEP = RETRY_S + 0.001  # a retry period, and a little: 100.0 + 0.1 - 100.0 is just under 0.1 in floating point


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _packet(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, ssrc=ssrc)


def test_a_missing_packet_is_asked_again_every_retry_period_until_it_arrives() -> None:
    clock = Clock()
    nacks = RetryingNacks(clock)
    for seq in (10, 11, 14):  # 12 and 13 missing: aiortc's own NACK names them now
        missed = nacks.add(_packet(seq))
    assert missed and nacks.missing == {12, 13}
    assert nacks.due() == [], "aiortc asked just now"
    clock.now += STEP
    assert nacks.due() == [12, 13]
    assert nacks.due() == [], "asked again just now"
    nacks.add(_packet(12))  # its retransmission arrived
    clock.now += STEP
    assert nacks.due() == [13]
    assert nacks.repeated == 3


def test_a_packet_is_asked_for_at_most_ten_times_in_all() -> None:
    clock = Clock()
    nacks = RetryingNacks(clock)
    nacks.add(_packet(1))
    nacks.add(_packet(3))
    asks = 1  # aiortc's own
    for _ in range(3 * TRIES):
        clock.now += STEP
        asks += len(nacks.due())
    assert asks == TRIES
    assert nacks.asked == {}


def test_a_packet_the_jitter_buffer_gave_up_on_is_not_asked_for_again() -> None:
    clock = Clock()
    nacks = RetryingNacks(clock)
    nacks.add(_packet(65530))
    nacks.add(_packet(65533))  # 65531 and 65532 missing, just before the sequence numbers wrap
    for seq in range(65534, 65534 + WINDOW - 3):  # across the wrap, to 65531 + WINDOW - 1 (within the window)
        nacks.add(_packet(seq))
    clock.now += STEP
    assert nacks.due() == [65531, 65532]
    nacks.add(_packet(65531 + WINDOW))  # 65531 is now WINDOW behind the newest
    clock.now += STEP
    assert nacks.due() == [65532]


def test_another_ssrc_starts_afresh() -> None:
    clock = Clock()
    nacks = RetryingNacks(clock)
    nacks.add(_packet(1))
    nacks.add(_packet(5))
    assert nacks.add(_packet(900, ssrc=2)) is False, "a new stream: no gap from the old one's numbers"
    clock.now += STEP
    assert nacks.due() == [] and nacks.ssrc == 2
