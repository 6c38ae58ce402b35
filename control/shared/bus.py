"""The event bus across nodes: Redis pub/sub under the one-node `EventBus` interface.

`publish` delivers to this node's subscribers at once, synchronously, exactly as the one-node bus does (a request
never waits on Redis), and queues the event for one writer task that PUBLISHes it, in order, on one channel. A
reader task delivers the other nodes' events to this node's subscribers (not to `local_only` ones); a node skips
its own events by the node id in the envelope.

Pub/sub is at most once: an event published while Redis is unreachable reaches this node only (the writer retries
for `RETRY_S`, then drops what is queued, counting it in `dropped`). That is the right contract for what the bus
carries: live notices (kick, mute, class ended) whose state is in the database, and webhooks, which go through
the database outbox, never through the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from control.events import Event, EventBus

log = logging.getLogger("classcast.shared.bus")

CHANNEL = "classcast:events"
QUEUE_MAX = 10_000  # events waiting for Redis; past it new ones reach this node only
RETRY_S = 30.0  # how long the writer keeps one event while Redis is away before dropping the queue


def _honour_cancel() -> None:
    """redis-py can swallow a cancellation that lands inside a command (it drops the connection and returns or
    raises its own error): a task asked to stop then stops here instead of waiting forever on its next await.

    Only for a task whose awaits are redis-py's own: asyncio.timeout undoes its cancels, but aiohttp's request
    timeout leaves the count up when its cancel came back out as another error, and this would then end a task
    nobody stopped. A loop that does more ends on a flag of its own (signaling.Hub._dispatch_events)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisEventBus(EventBus):
    def __init__(self, client: Any, node_id: str, channel: str = CHANNEL) -> None:
        super().__init__()
        self.client = client
        self.node_id = node_id
        self.channel = channel
        self.dropped = 0  # events that never reached Redis
        self.received = 0  # events delivered from other nodes
        self._outbox: asyncio.Queue[str] = asyncio.Queue(QUEUE_MAX)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Returns once this node listens: an event another node publishes after that reaches it."""
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write())]
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def close(self, flush_s: float = 2.0) -> None:
        """Sends what is queued first (a drain's last class_ended must reach the other nodes), for at most
        `flush_s`."""
        if self._tasks and not self._tasks[1].done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), flush_s)
        if not self._tasks:
            return
        for task in self._tasks:
            task.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=5)
        if pending:
            log.warning("event bus: %d task(s) did not stop", len(pending))
        self._tasks = []

    def publish(self, event: Event) -> None:
        super().publish(event)
        try:
            envelope = json.dumps({"node": self.node_id, "type": event.type, "org": event.org_id,
                                   "room": event.room_id, "sid": event.room_sid, "data": event.data},
                                  separators=(",", ":"))
        except (TypeError, ValueError):
            log.exception("event %s is not JSON: delivered on this node only", event.type)
            self.dropped += 1
            return
        try:
            self._outbox.put_nowait(envelope)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event bus: %d events reached this node only (Redis too slow or away)", self.dropped)

    async def _write(self) -> None:
        while True:
            envelope = await self._outbox.get()
            since = time.monotonic()
            while True:
                try:
                    await self.client.publish(self.channel, envelope)
                    self._outbox.task_done()
                    _honour_cancel()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if time.monotonic() - since > RETRY_S:
                        lost = 1 + self._outbox.qsize()
                        self._outbox.task_done()
                        while not self._outbox.empty():
                            self._outbox.get_nowait()
                            self._outbox.task_done()
                        self.dropped += lost
                        log.warning("event bus: Redis unreachable for %.0f s, %d events reached this node only "
                                    "(%s)", RETRY_S, lost, exc)
                        break
                    await asyncio.sleep(0.2)

    async def _read(self) -> None:
        backoff = 0.1
        while True:
            _honour_cancel()
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._remote(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event bus: lost Redis (%s); listening again in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _remote(self, raw: bytes | str) -> None:
        try:
            m = json.loads(raw)
            if m["node"] == self.node_id:
                return
            event = Event(type=m["type"], org_id=m["org"], room_id=m["room"], room_sid=m["sid"], data=m["data"])
        except (ValueError, KeyError, TypeError):
            log.warning("event bus: ignored a message that is not an event: %r", raw[:200])
            return
        self.received += 1
        self._deliver(event, remote=True)
