"""Credit arithmetic: 1 credit = 1 minute of one participant's time (seed 001).

The one home of the rounding rules, used by the room summary, the organization's billing and the
participant-sessions report, so the three can never disagree.
"""

from __future__ import annotations

MS_PER_CREDIT = 60_000


def credits_for(total_ms: int) -> int:
    """Session durations are summed first and the total rounded up once (seed 001), not per session."""
    return -(-total_ms // MS_PER_CREDIT) if total_ms > 0 else 0


def session_credits(duration_ms: int) -> float:
    """A single session's share, unrounded to whole credits so that a room's sessions add up to its total."""
    return round(duration_ms / MS_PER_CREDIT, 2)


def avg_stay_s(total_ms: int, unique_participants: int) -> int:
    """Total seconds over unique participants, floored (the seed's example: 1629 credits / 86 people -> 1136)."""
    if unique_participants <= 0:
        return 0
    return total_ms // (1000 * unique_participants)
