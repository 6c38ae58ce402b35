"""Graceful drain (issue 17): stop taking new classes, let running ones finish, then end the rest normally.

SIGTERM or `classcast drain` starts it. From then `/readyz` answers 503 (a load balancer sends new schools
elsewhere), creating a room or joining one answers 503 with `Retry-After`, and running classes go on. A room whose
class has nobody connected any more is ended at once; when none is left, or `CLASSCAST_DRAIN_TIMEOUT` passed, every
remaining room is ended the normal way (`Classroom.end_room`: class_ended to participants, recordings finished,
sessions closed, credits billed, webhooks written) and the server stops. With several nodes only the rooms this
node hosts count, and at the timeout none is ended while another node lives: the node stops and they move there
(`Drain.hosts`). A second SIGTERM or SIGINT stops at once; what was committed stays committed, and the next start
closes what was left open (`control/failover.py`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from control.classroom import Classroom
from control.errors import ApiError, error_body
from control.store.records import Room

log = logging.getLogger("classcast.drain")

# The calls that start something new; everything else (ending, listing, recordings, tokens of running classes)
# keeps working while draining.
REFUSED = re.compile(r"^/v1/room/(create|[^/]+/join)/?$")
RETRY_AFTER_S = 30
CHECK_INTERVAL_S = 1.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _yes(_room_sid: str) -> bool:
    return True


async def _no() -> bool:
    return False


async def _nothing() -> None:
    pass


class Drain:
    def __init__(self) -> None:
        self.started_at: float | None = None
        self.finished = asyncio.Event()
        # Set by control/app.py from the room placement. With several nodes on one database a drain looks only at
        # the classes this node hosts (another node's are not its to end), and when its time is out while other
        # nodes live it ends none of them: the node stops, and their participants reconnect to the others, where
        # the classes go on (their sessions too, within the reconnect grace). One node hosts every room, and has
        # nobody to hand over to.
        self.hosts: Callable[[str], Awaitable[bool]] = _yes
        self.others_live: Callable[[], Awaitable[bool]] = _no
        # Tells the other nodes this one drains (the placement), so none sends it a lecture's new students.
        self.announce: Callable[[], Awaitable[None]] = _nothing

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def begin(self) -> bool:
        """Returns False if a drain was already under way."""
        if self.started_at is not None:
            return False
        self.started_at = time.monotonic()
        log.info("draining: new rooms and joins are refused, running classes continue")
        return True

    def refused(self) -> ApiError:
        return ApiError(503, "This server is draining for a restart; retry shortly (another node may take it)",
                        "SERVER_DRAINING")

    async def _hosted(self, classroom: Classroom) -> list[Room]:
        return [r for r in await classroom.store.unfinished_started_rooms() if await self.hosts(r.sid)]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.draining and request.method == "POST" and REFUSED.match(request.path):
            err = self.refused()
            return web.json_response(error_body(err.status, err.message, err.code), status=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
        return await handler(request)

    async def run(self, classroom: Classroom, timeout_s: float, interval_s: float = CHECK_INTERVAL_S) -> int:
        """Waits for running classes to end (ending the empty ones), then ends what is left; returns how many
        rooms the drain itself ended."""
        self.begin()
        assert self.started_at is not None
        try:
            await self.announce()
        except Exception as exc:  # Redis away: hosts may still send students here, who are refused and retry
            log.warning("drain: could not tell the other nodes (%s)", exc)
        deadline = self.started_at + timeout_s
        ended = 0
        while True:
            rooms = await self._hosted(classroom)
            late = time.monotonic() >= deadline
            hand_over = late and await self.others_live()
            for room in rooms:
                busy = await classroom.store.room_sessions(room.sid, active_only=True)
                if busy and (not late or hand_over):
                    continue
                try:
                    await classroom.end_room(room, "drain_timeout" if busy else "server_drain")
                    ended += 1
                except ApiError:
                    pass  # it ended meanwhile
            if late or not await self._hosted(classroom):
                if hand_over:
                    log.info("drain: the classes still running here go on on the other nodes")
                break
            await asyncio.sleep(interval_s)
        log.info("drain finished: %d rooms ended by the drain", ended)
        self.finished.set()
        return ended
DRAIN = web.AppKey("drain", Drain)
