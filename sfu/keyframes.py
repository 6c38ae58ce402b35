"""Keyframes: the cached group of pictures that lets a joining student see the teacher at once, and the
throttle that keeps keyframe requests to a publisher at one per 500 ms per track however many students ask.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class GopCache:
    """The last keyframe and every packet since, bounded.

    A new subscriber is sent the whole group and then the live stream: it decodes at once and needs no keyframe
    from the publisher. When the group outgrows the bound (a publisher with a long keyframe interval), only the
    keyframe's own packets are kept: the subscriber then shows that picture at once and waits for the next
    keyframe before live delta frames, which would not decode without the frames in between.
    """

    __slots__ = ("complete", "keyframe_timestamp", "max_packets", "packets")

    def __init__(self, max_packets: int = 1500) -> None:
        self.max_packets = max_packets
        self.packets: list[_Packet] = []
        self.keyframe_timestamp: int | None = None
        self.complete = False

    def add(self, packet: _Packet) -> None:
        ts = packet.timestamp
        if packet.keyframe and ts != self.keyframe_timestamp:
            self.packets = [packet]
            self.keyframe_timestamp = ts
            self.complete = True
            return
        if self.keyframe_timestamp is None:
            return
        if self.complete:
            if len(self.packets) < self.max_packets:
                self.packets.append(packet)
            else:
                self.packets = [p for p in self.packets if p.timestamp == self.keyframe_timestamp]
                self.complete = False
        elif ts == self.keyframe_timestamp and len(self.packets) < self.max_packets:
            self.packets.append(packet)  # a late packet of the cached keyframe itself (bounded like the rest)

    def snapshot(self) -> tuple[Sequence[_Packet], bool]:
        """(packets to replay, whether the live stream may follow them directly)."""
        return list(self.packets), self.complete

    def clear(self) -> None:
        self.packets = []
        self.keyframe_timestamp = None
        self.complete = False
