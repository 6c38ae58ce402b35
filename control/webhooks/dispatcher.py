"""Delivering the outbox: signed POSTs, exponential backoff for the retry window, one in flight per room queue.

Everything the dispatcher knows is in the database, so a restart simply picks up the pending rows: a delivery
whose attempt was cut by the restart is sent again under the same `webhook-id` (at least once, never lost).

Idle costs nothing: after each look the dispatcher asks the database when the next queue head is due (a retry's
backoff, a lease) and sleeps until then; an outbox write or a finished attempt wakes it earlier. It does not poll
every second: during a class the server's CPU belongs to media, and a query a second (plus the SQLite thread's
wake-up) was measurable per forwarded packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import aiohttp

from control.background import stop_tasks
from control.clock import Clock
from control.config import WebhookConfig
from control.store.webhooks import Delivery
from control.webhooks import signing
from control.webhooks.outbox import Outbox

log = logging.getLogger("classcast.webhooks")

ERROR_TEXT_MAX = 300
KEEP_SETTLED_S = 7 * 24 * 3600  # delivered and failed rows are kept a week for the deliveries listing
PRUNE_EVERY_S = 3600
# Longest sleep with nothing known to be due. Rows this process did not write and that nobody's wake announces
# (another node on the same database that died between writing and sending) are found within this time.
IDLE_LOOK_S = 30.0
# result ("delivered" | "retry" | "gave_up"), seconds the attempt took
ResultHook = Callable[[str, float], None]

CONNECTIONS = 256  # to every receiver at once
CONNECTIONS_PER_HOST = 8  # to one receiver: an organization has at most 20 endpoints (control/api/webhooks.py)
ANSWER_READ_MAX = 64 * 1024  # of a receiver's answer body, read then dropped


def _verdict(status: int) -> str | None:
    """None for a delivery (2xx); else what the record says. Redirects are not followed: a receiver that moved
    must be registered again at its new URL (a redirect could point a signed payload anywhere)."""
    if 200 <= status < 300:
        return None
    return f"HTTP {status}" + (" (redirects are not followed: register the new URL)" if 300 <= status < 400 else "")


def backoff_s(config: WebhookConfig, attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: base x 2^(attempts-1), capped, with +-10 % jitter so many failed
    deliveries to one receiver do not come back all at once."""
    delay = min(config.retry_max_s, config.retry_base_s * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.9, 1.1)


class Dispatcher:
    def __init__(self, outbox: Outbox, config: WebhookConfig, clock: Clock, on_result: ResultHook | None = None):
        self.outbox = outbox
        self.db = outbox.db
        self.config = config
        self.clock = clock
        self.on_result = on_result
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """One pool for every organization's receivers, with a share per host: 100 connections in all let one
        organization's slow endpoints hold every slot, and another's delivery spent its timeout waiting for one."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS, limit_per_host=CONNECTIONS_PER_HOST)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        return self._session

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Attempts under way are cut; their rows stay pending and are sent again by the next run."""
        await stop_tasks(self._task, *self._in_flight.values())  # a cancel the database swallowed is sent again
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        pruned_at = 0.0
        while True:
            self.outbox.wake.clear()  # before looking: an event written meanwhile wakes the next wait at once
            sleep_s = self.config.poll_s  # after a failed look: look again soon
            try:
                await self.send_due()
                if time.monotonic() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = time.monotonic()
                    await self.db.prune(self.clock.now_ms() - KEEP_SETTLED_S * 1000)
                sleep_s = await self.idle_s()
            except Exception:
                log.exception("webhook dispatch failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.wake.wait(), sleep_s)

    async def idle_s(self) -> float:
        """Seconds until the next queue head is due (its retry time, or the lease of an attempt under way), at
        most IDLE_LOOK_S. A head already due that this look could not start (its attempt is still ours, or
        became due just now) is looked at again after `poll_s`, never in a tight loop."""
        due_at = await self.db.next_due_at()
        if due_at is None:
            return IDLE_LOOK_S
        wait_ms = due_at - self.clock.now_ms()
        return min(IDLE_LOOK_S, wait_ms / 1000 if wait_ms > 0 else self.config.poll_s)

    async def send_due(self) -> int:
        """Starts an attempt for every due queue head not already in flight; returns how many started."""
        started = 0
        now = self.clock.now_ms()
        lease = now + int((self.config.timeout_s + 5) * 1000)
        for delivery in await self.db.due(now):
            if delivery.id in self._in_flight or not await self.db.claim(delivery, lease):
                continue
            task = asyncio.create_task(self._attempt(delivery))
            self._in_flight[delivery.id] = task
            task.add_done_callback(lambda _t, key=delivery.id: self._done(key))
            started += 1
        return started

    async def settle(self) -> None:
        """Waits for the attempts under way (tests and `send_due` callers that need their outcome)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    def _done(self, key: str) -> None:
        self._in_flight.pop(key, None)
        self.outbox.wake.set()  # the queue's next event may go now

    async def attempt_once(self, delivery: Delivery) -> tuple[int | None, str | None]:
        """POSTs one delivery; returns (HTTP status, error). A fresh timestamp and signature per attempt."""
        body = delivery.payload.encode()
        headers = signing.headers(delivery.secret, delivery.event_id, int(time.time()), body)
        try:
            async with self._client().post(delivery.url, data=body, headers=headers, allow_redirects=False) as resp:
                # The status is the answer; of the body, a little is read so a small one keeps the connection
                # for the next delivery. All of it was read once: a receiver's 50 MB answer was 50 MB of ours,
                # and a body cut short or trickling after a 200 made the delivery a failure.
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    await resp.content.read(ANSWER_READ_MAX)
                return resp.status, _verdict(resp.status)
        except TimeoutError:
            return None, f"no answer within {self.config.timeout_s:g} s"
        except aiohttp.ClientResponseError as exc:  # no answer we could read: its "400" is aiohttp's, not theirs
            return None, f"{type(exc).__name__}: {exc.message}"[:ERROR_TEXT_MAX]
        except aiohttp.ClientError as exc:
            # the class says what went wrong: an InvalidURL's text is only the URL
            return None, f"{type(exc).__name__}: {exc}".rstrip(": ")[:ERROR_TEXT_MAX]

    async def _attempt(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        status, error = await self.attempt_once(delivery)
        now = self.clock.now_ms()
        attempts = delivery.attempts + 1
        if error is None:
            result, state, next_at = "delivered", "delivered", now
        elif now - delivery.created_at >= self.config.retry_window_s * 1000:
            result, state, next_at = "gave_up", "failed", now
            log.warning("webhook %s to %s given up after %d attempts: %s", delivery.event_id, delivery.url,
                        attempts, error)
        else:
            result, state = "retry", "pending"
            next_at = now + int(backoff_s(self.config, attempts) * 1000)
        try:
            await self.db.finish_attempt(delivery.id, status=state, attempts=attempts, next_attempt_at=next_at,
                                         http_status=status, error=error, now=now)
        except Exception as exc:  # a busy database: the claim's lease runs out and the event is sent again
            log.warning("webhook %s: the outcome of attempt %d (%s) could not be recorded, it will be sent again: "
                        "%s", delivery.event_id, attempts, result, exc)
            return
        if self.on_result is not None:
            self.on_result(result, time.perf_counter() - started)
