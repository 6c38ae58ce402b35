"""The composition root of what is live: one node's memory, or Redis shared by several nodes (issue 18).

`build_live` is the one place that reads `CLASSCAST_REDIS_URL` (`Config.redis_url`) and picks the
implementations; everything else is handed the interfaces and never learns which it got:

| What | One node (no Redis) | Several nodes (Redis) |
|---|---|---|
| event bus | `control.events.EventBus` | `control.shared.bus.RedisEventBus` (pub/sub) |
| REST rate limits | `control.ratelimit.Limiter` buckets | `control.shared.limits.RedisLimiter` (Lua) |

Presence with its reconnect grace, and the room -> node placement lease, are not here yet: they live in
control/signaling.py's Hub and in the several-nodes work (issue 18 requirements 3-5), which will add them beside
these two.
"""

from __future__ import annotations

import logging
import secrets
import socket
from dataclasses import dataclass, field

from control.config import Config
from control.events import EventBus
from control.ratelimit import RestLimits

log = logging.getLogger("classcast.wiring")


@dataclass
class Live:
    node_id: str  # names this process on the bus (its own events come back and are skipped)
    bus: EventBus
    limits: RestLimits
    redis: object | None = None  # the client, when shared
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.bus.close()
        if self.redis is not None:
            await self.redis.aclose()  # type: ignore[attr-defined]


def new_node_id() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


async def build_live(config: Config) -> Live:
    node_id = new_node_id()
    if not config.redis_url:
        return Live(node_id, EventBus(), RestLimits(config.rate_limits))
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise SystemExit("CLASSCAST_REDIS_URL is set but the redis client is not installed: "
                         "pip install 'classcast[redis]' (make install does)") from None
    from control.shared.bus import RedisEventBus
    from control.shared.limits import RedisLimiter

    client = aioredis.Redis.from_url(config.redis_url, socket_connect_timeout=5, health_check_interval=15)
    try:
        await client.ping()  # a wrong URL stops the start with its reason, not the first request
    except Exception as exc:
        await client.aclose()
        raise SystemExit(f"CLASSCAST_REDIS_URL: cannot reach Redis: {exc}") from None
    bus = RedisEventBus(client, node_id)
    await bus.start()
    limits = RestLimits(config.rate_limits, lambda name, per_minute: RedisLimiter(client, name, per_minute))
    log.info("live state shared through Redis as node %s", node_id)
    return Live(node_id, bus, limits, client)
