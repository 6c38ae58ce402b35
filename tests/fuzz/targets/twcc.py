"""Transport-wide congestion control feedback from a subscriber (the defect class of issue 13: 36 bytes declaring
65,535 statuses), read as `SfuParticipant.on_rtcp` reads it: `TwccSender.on_feedback` on a sender that has sent
a full window of packets. Nothing may raise; the cost must stay bounded by what was sent."""

from __future__ import annotations

from typing import Any

INSTRUMENT = ("sfu.bwe",)
BOUND_MS = 40.0  # a full window (8192 statuses) costs about 16 ms instrumented; 65,535 cost 8 times that
STATELESS = True

bwe: Any = None
_sender: Any = None
_sent: dict[int, tuple[float, int]] = {}


def setup() -> None:
    global bwe, _sender, _sent
    from sfu import bwe as module

    bwe = module
    _sender = bwe.TwccSender(ext_id=3)
    for _ in range(bwe.MAX_SENT):
        _sender.stamp(1200, 0.0)
    _sent = dict(_sender.sent)


def one_input(data: bytes) -> None:
    _sender.sent = dict(_sent)
    _sender._budget = bwe.TwccSender.BUDGET_SLACK + 2 * bwe.MAX_SENT
    result = _sender.on_feedback(data)
    if result is not None:
        lost, reported = result
        assert 0 <= lost <= reported
    try:
        statuses = bwe.parse_twcc(data)
    except ValueError:
        return
    assert len(statuses) <= bwe.MAX_FEEDBACK_STATUSES
