"""In-process event bus between the control plane and signaling.

REST calls (kick, mute, end class) and session changes publish here; the signaling layer subscribes and fans the
events out to connected participants. Subscribers are plain callables run synchronously in publish order: they
must not block (signaling only enqueues), and one failing subscriber never stops the others.
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
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not break the publisher's request
                log.exception("event subscriber failed for %s", event.type)
