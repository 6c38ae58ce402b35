"""Consent freshness (RFC 7675) for the bench's own aioice peers, as browsers do it.

aioice (0.13) sends one consent check every 4-6 s, never retransmits it, gives up on its answer after 0.5 s and
closes the connection after 6 such checks in a row (`aioice.ice.CONSENT_FAILURES`): any answer later than 0.5 s is a
failure even when it arrives. Chrome and Firefox keep a check's transaction open for seconds, count every answer
that arrives, and revoke consent only when none has arrived for 30 s (RFC 7675 section 5.1).

With the aioice rule, a bench whose client processes and server share two busy cores (100 subscribers joining at
once: DTLS handshakes on both sides) lost its publisher and subscribers to "Consent to send expired" on the client
side while the server still answered every check, only late (bench/RESULTS.md, issue 14's 200-subscriber step); no
browser would have. The bench measures the server as browsers would use it, so its peers use the browsers' rule.

Private aioice internals used (audited against aioice 0.13.0): `Connection.query_consent` (replaced, a coroutine
method started by `connect()`), `Connection._nominated`, `Connection.build_request`, `Connection.remote_password`,
`Connection._query_consent_task` (set to None before closing, as aioice's own does), `StunProtocol.request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from aioice import ice, stun

logger = logging.getLogger(__name__)

INTERVAL = 5.0  # s between checks, randomized by +-20% as aioice and RFC 7675 do
TIMEOUT = 30.0  # s without any answer before consent is revoked (RFC 7675 section 5.1)
RETRANSMISSIONS = 4  # an unanswered check is resent after 0.5, 1, 2, 4 s: its answer is awaited 15.5 s
LATE = 0.5  # s: answers later than this (aioice's whole window) are logged

_original = ice.Connection.query_consent


async def query_consent(self: Any) -> None:
    """Checks every ~5 s on each nominated pair, each in its own task; closed only after 30 s without an answer."""
    assert self.remote_password is not None
    key = self.remote_password.encode("utf8")
    last_answer = time.monotonic()
    checks: set[asyncio.Task[None]] = set()

    async def check(pair: Any) -> None:
        nonlocal last_answer
        sent = time.monotonic()
        with contextlib.suppress(stun.TransactionError):
            await pair.protocol.request(self.build_request(pair, nominate=False), pair.remote_addr,
                                        integrity_key=key, retransmissions=RETRANSMISSIONS)
            last_answer = max(last_answer, time.monotonic())
            if (late := last_answer - sent) > LATE:
                logger.info("%s: consent check answered after %.2f s", self, late)

    try:
        while True:
            await asyncio.sleep(INTERVAL * (0.8 + 0.4 * random.random()))
            if time.monotonic() - last_answer > TIMEOUT:
                logger.info("%s: consent to send expired (no answer for %.0f s)", self, TIMEOUT)
                self._query_consent_task = None
                await self.close()
                return
            for pair in self._nominated.values():
                task = asyncio.create_task(check(pair))
                checks.add(task)
                task.add_done_callback(checks.discard)
    finally:
        for task in checks:
            task.cancel()


def browser_like() -> None:
    """Replace aioice's consent checks in this process (idempotent)."""
    ice.Connection.query_consent = query_consent  # type: ignore[method-assign]


def aioice_default() -> None:
    ice.Connection.query_consent = _original  # type: ignore[method-assign]
