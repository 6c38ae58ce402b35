"""Ending a node's background loops for sure.

A loop that calls the database or Redis inside `try: ... except Exception: log` can swallow its stop's cancel:
when the cancel lands inside the driver's call, SQLAlchemy hands it back wrapped in its own OperationalError
(asyncpg's adapter) and redis-py may drop the connection and raise its own error or return. The loop logs, goes on
to its next sleep, and the stop waits forever: a draining node's webhook dispatcher held its stop this way until
the 20 s limit, and the node exited with status 1 instead of 0 (tests/cluster/test_netns.py, once in six runs
alone). The task's cancel count cannot be trusted to tell a stop either: aiohttp's request timeout can leave it up
with nobody stopping anything (control/signaling.py's event loop ends on a flag for that reason).

So the stop cancels again while a task lives: the next cancel lands in the loop's own sleep or queue wait, where no
driver is there to swallow it.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("classcast")

AGAIN_S = 0.5  # a swallowed cancel costs a stop this long; a loop's cleanup after a cancel must fit in it


async def stop_tasks(*tasks: asyncio.Task[object] | None, again_s: float = AGAIN_S) -> None:
    """Cancels the tasks and returns once every one has ended, cancelling again each `again_s` those that still
    run. For loops that have nothing of their own to finish once cancelled. A task that ended with an error of its
    own has it logged here (nobody else awaits it)."""
    own = [t for t in tasks if t is not None]
    pending = {t for t in own if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_s)
    for task in own:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s ended with an error", task.get_name(), exc_info=task.exception())
