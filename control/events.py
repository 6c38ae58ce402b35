"""The event bus between the control plane and signaling.

REST calls (kick, mute, end class) and session changes publish here; the signaling layer subscribes and fans the
events out to connected participants. Subscribers are plain callables run synchronously in publish order: they
must not block (signaling only enqueues), and one failing subscriber never stops the others.

`EventBus` is the one-node implementation. With Redis (control/wiring.py) the bus is
`control.shared.bus.RedisEventBus`: the same interface, and events published on any node also reach the
subscribers of every other node (a REST kick on one node reaches the WebSocket on another). A subscriber that
counts what this node did (metrics) subscribes with `local_only=True`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("classcast.events")


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # participant_joined, participant_left, participant_removed, class_ended, participant_muted, ...
    org_id: str
    room_id: str
    room_sid: str
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[tuple[Subscriber, bool]] = []  # (callback, local_only)

    def subscribe(self, callback: Subscriber, *, local_only: bool = False) -> Callable[[], None]:
        """Returns the function that unsubscribes. `local_only`: only events published in this process."""
        entry = (callback, local_only)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        self._deliver(event, remote=False)

    def _deliver(self, event: Event, *, remote: bool) -> None:
        for callback, local_only in list(self._subscribers):
            if remote and local_only:
                continue
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not break the publisher's request
                log.exception("event subscriber failed for %s", event.type)

    async def close(self) -> None:
        """Nothing to release in one process (the Redis bus stops its tasks)."""
