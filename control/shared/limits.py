"""Rate limits across nodes: the token buckets of `control.ratelimit.Limiter`, kept in Redis.

One Lua script per request refills and takes atomically, so two nodes taking from one bucket at once never both
get its last token. A bucket is a hash {t: tokens, at: seconds} that expires when it would have refilled
completely: the same as no bucket, as the one-node limiter forgets full buckets, so Redis holds only the buckets
of clients that are being limited or were just now.

Time is the caller's (`now`, the node's clock), so a node whose clock runs behind never refills a bucket
backwards (elapsed time below zero counts as zero). With Redis unreachable the request is let through and a
warning logged: a limit is protection against floods, and refusing every join while Redis restarts would be the
outage it protects against.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("classcast.shared.limits")

PREFIX = "classcast:rate"

# KEYS[1] bucket; ARGV capacity, rate (tokens/s), now (s). Returns the seconds to wait as a string ("0": taken):
# Lua numbers become integers on their way out of a script.
_TAKE = """
local cap, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, at = cap, now end
local elapsed = now - at
if elapsed < 0 then elapsed = 0; now = at end
tokens = math.min(cap, tokens + elapsed * rate)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate * 1000) + 1)
return tostring(wait)
"""


class RedisLimiter:
    def __init__(self, client: Any, name: str, per_minute: int) -> None:
        self.client = client
        self.name = name
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._script = client.register_script(_TAKE)
        self._warned_at = 0.0

    async def acquire(self, key: str, now: float) -> float:
        """0 when the request may go on (one token taken), else the seconds until one is there."""
        if self.capacity <= 0:
            return 0.0
        try:
            wait = await self._script(keys=[f"{PREFIX}:{self.name}:{key}"], args=[self.capacity, self.rate, now])
        except Exception as exc:  # Redis away: let it through (see the module's docstring)
            if time.monotonic() - self._warned_at > 10:
                self._warned_at = time.monotonic()
                log.warning("rate limit %s not applied: Redis unreachable (%s)", self.name, exc)
            return 0.0
        return float(wait)
