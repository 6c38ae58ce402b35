"""Keyframes: the throttle that keeps keyframe requests to a publisher at one per 500 ms per track however many
students ask. (The cached group of pictures that lets a joining student see the teacher at once is the media
engine's: sfu/engine.)
"""

from __future__ import annotations

from typing import Protocol


class _Packet(Protocol):
    keyframe: bool

    @property
    def timestamp(self) -> int: ...


class KeyframeThrottle:
    """At most one keyframe request per `interval` seconds; the rest are absorbed (they would be redundant)."""

    __slots__ = ("interval", "last", "requested", "suppressed")

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.requested = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if now - self.last < self.interval:
            self.suppressed += 1
            return False
        self.last = now
        self.requested += 1
        return True
