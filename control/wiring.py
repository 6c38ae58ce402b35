"""The composition root of what is live: one node's memory, or Redis shared by several nodes (issue 18).

`build_live` is the one place that reads `CLASSCAST_REDIS_URL` (`Config.redis_url`) and picks the
implementations; everything else is handed the interfaces and never learns which it got:

| What | One node (no Redis) | Several nodes (Redis) |
|---|---|---|
| event bus | `control.events.EventBus` | `control.shared.bus.RedisEventBus` (pub/sub) |
| REST rate limits | `control.ratelimit.Limiter` buckets | `control.shared.limits.RedisLimiter` (Lua) |
| presence and the reconnect grace | `control.presence.LocalPresence` | `control.shared.presence.RedisPresence` |
| room -> node placement | `control.placement.LocalPlacement` | `control.shared.placement.RedisPlacement` (lease) |
"""

from __future__ import annotations

import logging
import secrets
import socket
from dataclasses import dataclass, field

from control.config import Config
from control.events import EventBus
from control.placement import LocalPlacement, Node, Placement
from control.presence import LocalPresence, Presence
from control.ratelimit import RestLimits

log = logging.getLogger("classcast.wiring")


@dataclass
class Live:
    node_id: str  # names this process on the bus (its own events come back and are skipped)
    bus: EventBus
    limits: RestLimits
    presence: Presence
    placement: Placement
    redis: object | None = None  # the client, when shared
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.placement.close()  # first: this node's rooms go to the others at their next join
        await self.presence.close()
        await self.bus.close()
        if self.redis is not None:
            await self.redis.aclose()  # type: ignore[attr-defined]


def new_node_id() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


async def build_live(config: Config) -> Live:
    node_id = new_node_id()
    node = Node(node_id, config.node_base_url)
    if not config.redis_url:
        return Live(node_id, EventBus(), RestLimits(config.rate_limits), LocalPresence(), LocalPlacement(node))
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise SystemExit("CLASSCAST_REDIS_URL is set but the redis client is not installed: "
                         "pip install 'classcast[redis]' (make install does)") from None
    from control.shared.bus import RedisEventBus
    from control.shared.limits import RedisLimiter
    from control.shared.placement import RedisPlacement
    from control.shared.presence import RedisPresence

    client = aioredis.Redis.from_url(config.redis_url, socket_connect_timeout=5, health_check_interval=15)
    try:
        await client.ping()  # a wrong URL stops the start with its reason, not the first request
    except Exception as exc:
        await client.aclose()
        raise SystemExit(f"CLASSCAST_REDIS_URL: cannot reach Redis: {exc}") from None
    bus = RedisEventBus(client, node_id)
    await bus.start()
    limits = RestLimits(config.rate_limits, lambda name, per_minute: RedisLimiter(client, name, per_minute))
    placement = RedisPlacement(client, node, config.node_lease_s)
    await placement.start()
    log.info("live state shared through Redis as node %s (%s)", node_id, node.url)
    return Live(node_id, bus, limits, RedisPresence(client), placement, client)
