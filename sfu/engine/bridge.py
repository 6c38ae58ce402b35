"""The process's engine and the slow-path objects its integer ids stand for.

The engine knows streams, slots and transports by number; the slow path (producers, consumers, participants)
knows them by object. The bridge holds the one engine of the process (an SFU worker is one process and one
engine) and routes what the engine reports back to listeners, as mediasoup's worker reports to its channel:
a consumer registers for its slot and hears which stream it switched to.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from sfu.engine import engine_kind, new_engine


class SlotListener(Protocol):
    def on_switched(self, stream_id: int) -> None:
        """The consumer on this slot now carries that stream (a layer switch at a keyframe, or its start)."""


class EngineBridge:
    def __init__(self, engine: Any = None) -> None:
        self.engine = engine if engine is not None else new_engine()
        self.kind = engine_kind() if engine is None else type(engine).__module__.rsplit(".", 1)[-1]
        self._listeners: dict[int, SlotListener] = {}
        # The slow path's process-wide counts for /metrics (Sfu.metrics). A counter must not drop when a class
        # ends, so what the objects that counted it take with them when they go is added here: a subscriber's
        # NACK packets as they arrive, a publisher's packets, NACKs and keyframe requests when its track closes.
        self.counts: Counter[str] = Counter()

    def listen(self, slot_id: int, listener: SlotListener) -> None:
        self._listeners[slot_id] = listener

    def forget(self, slot_id: int) -> None:
        self._listeners.pop(slot_id, None)

    def dispatch(self) -> None:
        """Deliver the engine's layer-switch events (push and start flag them with F_EVENTS)."""
        for slot_id, stream_id in self.engine.events():
            listener = self._listeners.get(slot_id)
            if listener is not None:
                listener.on_switched(stream_id)


_process_bridge: EngineBridge | None = None


def process_bridge() -> EngineBridge:
    """The process's engine, made on first use (CLASSCAST_ENGINE is read then)."""
    global _process_bridge
    if _process_bridge is None:
        _process_bridge = EngineBridge()
    return _process_bridge
