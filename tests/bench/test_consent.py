"""The bench's peers keep consent as browsers do: late answers count, only 30 s (here: shortened) of silence ends it.

Two real aioice connections on 127.0.0.1; the controlled side's STUN answers are held back 0.8 s, later than
aioice's own 0.5 s window, which closes the connection after a few checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioice import Connection, ice

from bench import consent
from sfu.ice import IceConfig
from sfu.peer import restrict_gathering


async def _pair() -> tuple[Connection, Connection]:
    a, b = Connection(ice_controlling=True), Connection(ice_controlling=False)
    for c in (a, b):
        restrict_gathering(c, IceConfig(hosts=("127.0.0.1",)))
        await c.gather_candidates()
    for x, y in ((a, b), (b, a)):
        for cand in y.local_candidates:
            await x.add_remote_candidate(cand)
        await x.add_remote_candidate(None)
        x.remote_username, x.remote_password = y.local_username, y.local_password
    await asyncio.gather(a.connect(), b.connect())
    return a, b


def _delay_answers(c: Connection, delay: float) -> None:
    """Hold every binding request c receives for `delay` s before c sees (and answers) it."""
    loop = asyncio.get_running_loop()
    for protocol in c._protocols:
        original = protocol.datagram_received

        def held(data: bytes, addr: Any, original: Any = original) -> None:
            loop.call_later(delay, original, data, addr)

        protocol.datagram_received = held  # type: ignore[method-assign]


async def _closed_within(c: Connection, seconds: float) -> bool:
    """Whether c's consent task ends (it closes c when consent is lost) within `seconds`."""
    task = c._query_consent_task
    assert task is not None
    try:
        await asyncio.wait_for(asyncio.shield(task), seconds)
        return True
    except TimeoutError:
        return False


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ice, "CONSENT_INTERVAL", 0.2)  # aioice's own rule, sped up
    monkeypatch.setattr(consent, "INTERVAL", 0.2)
    monkeypatch.setattr(consent, "TIMEOUT", 2.0)
    monkeypatch.setattr(ice.Connection, "query_consent", ice.Connection.query_consent)  # restored afterwards


async def test_aioice_alone_drops_a_connection_whose_answers_are_late(fast: None) -> None:
    consent.aioice_default()
    a, b = await _pair()
    try:
        _delay_answers(b, 0.8)
        assert await _closed_within(a, 6), "aioice's rule should have closed it (what the bench used to meet)"
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_browser_like_consent_keeps_a_connection_whose_answers_are_late(fast: None) -> None:
    consent.browser_like()
    a, b = await _pair()
    try:
        _delay_answers(b, 0.8)
        assert not await _closed_within(a, 4), "late answers are answers: consent holds"
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_browser_like_consent_ends_after_the_timeout_without_answers(fast: None) -> None:
    consent.browser_like()
    a, b = await _pair()
    try:
        _delay_answers(b, 1000)  # never answered while the test runs
        assert await _closed_within(a, 6), "no answer for TIMEOUT s: consent revoked"
    finally:
        await asyncio.gather(a.close(), b.close())
