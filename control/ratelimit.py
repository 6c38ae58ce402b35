"""REST rate limits on what costs the server a room or a participant: room creation and joins, per organization
and per client address (issue 13). A limit of N a minute is a token bucket holding N, refilled at N/60 a second:
a burst of N passes at once, a steady client gets N a minute, and a refused request learns when to come back
(`429 RATE_LIMITED` with `Retry-After`).

The tables are bounded: a bucket that has refilled completely is the same as no bucket and is forgotten, and at
most `max_keys` are kept (the oldest go first), so many addresses cannot grow the server's memory.

`Limiter` keeps the buckets in this process (one node). With Redis, control/wiring.py gives `RestLimits`
`control.shared.limits.RedisLimiter`s instead: the same buckets, kept in Redis, so a limit holds across nodes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from control.errors import ApiError


@dataclass(frozen=True)
class RateLimits:
    """Per minute; 0 turns a limit off. Configured by CLASSCAST_RATE_* (docs/operations.md)."""

    room_create_per_org: int = 120
    room_create_per_address: int = 60
    join_per_org: int = 3000
    join_per_address: int = 600


class Limiter:
    """Token buckets by key (an organization id or an address) for one kind of request."""

    def __init__(self, per_minute: int, max_keys: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """0 when the request may go on (one token taken), else the seconds until one is there."""
        if self.capacity <= 0:
            return 0.0
        tokens, at = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        tokens -= 1
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drops the oldest buckets that have refilled (a few per call: the cost stays constant)."""
        for _ in range(2):
            if not self._buckets:
                return
            key, (tokens, at) = next(iter(self._buckets.items()))
            if tokens + (now - at) * self.rate < self.capacity:
                return
            del self._buckets[key]

    async def acquire(self, key: str, now: float) -> float:
        """`take`, behind the interface the Redis limiter shares."""
        return self.take(key, now)

    def __len__(self) -> int:
        return len(self._buckets)


class Bucket(Protocol):
    async def acquire(self, key: str, now: float) -> float: ...


# (name, per minute) -> the limiter of that name: Limiter here, RedisLimiter across nodes (control/wiring.py).
LimiterFactory = Callable[[str, int], Bucket]


def local_limiter(_name: str, per_minute: int) -> Bucket:
    return Limiter(per_minute)


class RestLimits:
    """The four limits of RateLimits; `check` raises the 429 for the first one a request is over."""

    def __init__(self, limits: RateLimits, limiter: LimiterFactory = local_limiter) -> None:
        self.create_org = limiter("create_org", limits.room_create_per_org)
        self.create_address = limiter("create_address", limits.room_create_per_address)
        self.join_org = limiter("join_org", limits.join_per_org)
        self.join_address = limiter("join_address", limits.join_per_address)

    async def check(self, kind: str, org_id: str, address: str | None, now: float) -> None:
        """`kind` is "create" or "join"."""
        by_org, by_address = ((self.create_org, self.create_address) if kind == "create"
                              else (self.join_org, self.join_address))
        what = "room creations" if kind == "create" else "joins"
        wait = await by_org.acquire(org_id, now)
        if wait:
            raise _limited(f"Too many {what} for this organization", wait)
        wait = await by_address.acquire(address or "-", now)
        if wait:
            raise _limited(f"Too many {what} from this address", wait)


def _limited(message: str, wait: float) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError(429, f"{message}; retry in {seconds} s", "RATE_LIMITED", headers={"Retry-After": str(seconds)})
