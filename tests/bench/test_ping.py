"""The signaling round trip of the workers bench (bench/ping.py): what it measures against a real server, and how
it turns pings into the figures of a step and of "80% of the knee"."""

from __future__ import annotations

import asyncio
import time

from bench import ping
from bench.workers import at_80_percent
from tests.conftest import Api


def test_summary_takes_the_pings_of_the_windows_and_counts_a_lost_one_as_slow() -> None:
    samples: list[ping.Sample] = [(1.0, 3.0), (1.1, 4.0), (1.2, None), (5.0, 100.0), (5.1, 2.0)]
    first = ping.summary(samples, [(0.9, 1.25)])
    assert first["count"] == 3 and first["lost"] == 1
    assert first["p50_ms"] == 4.0 and first["p99_ms"] == ping.TIMEOUT * 1000  # lost: never a fast one
    both = ping.summary(samples, [(0.9, 1.15), (4.9, 5.05)])
    assert both == {"count": 3, "lost": 0, "p50_ms": 4.0, "p99_ms": 100.0, "max_ms": 100.0}
    assert ping.summary(samples, [(2.0, 3.0)]) == {"count": 0, "lost": 0, "p50_ms": None, "p99_ms": None,
                                                   "max_ms": None}
    assert ping.summary(samples)["count"] == 5


def test_80_percent_of_the_knee_is_the_smallest_passing_step_at_or_above_it() -> None:
    def step(total: int, ok: bool, p99: float) -> dict[str, object]:
        return {"subscribers_total": total, "ok": ok, "ping_ms_p50": p99 / 2, "ping_ms_p99": p99, "pings": 50,
                "pings_lost": 0}

    steps = [step(40, True, 10), step(70, False, 90), step(80, True, 30), step(90, True, 60), step(100, True, 70)]
    at = at_80_percent(steps, 100)
    assert at is not None
    assert (at["subscribers_total"], at["of_knee"], at["ping_ms_p99"], at["p99_under_50_ms"]) == (80, 0.8, 30, True)
    steps[2]["ping_ms_p99"] = 55.0
    assert at_80_percent(steps, 100)["p99_under_50_ms"] is False  # type: ignore[index]
    assert at_80_percent(steps, None) is None


async def test_a_spare_connection_gets_every_ping_answered(api: Api) -> None:
    """Against the real server: open loop every 20 ms for half a second, each pong matched to its ping."""
    room = await api.create_room()
    url = str(api.client.make_url("/"))
    end = time.monotonic() + 0.5
    samples = await ping.ping_for(url, room["token"], lambda: time.monotonic() > end, interval=0.02)
    assert 20 <= len(samples) <= 30
    assert all(ms is not None and 0 < ms < 1000 for _, ms in samples), samples
    assert [at for at, _ in samples] == sorted(at for at, _ in samples)


async def test_the_pinger_process_measures_and_reports(api: Api) -> None:
    room = await api.create_room()
    pinger = ping.Pinger(str(api.client.make_url("/")), room["token"], interval=0.05).start()
    await asyncio.sleep(2.5)  # its interpreter starts, then pings
    samples = await asyncio.get_running_loop().run_in_executor(None, pinger.stop)
    figures = ping.summary(samples)
    assert figures["count"] >= 5 and figures["lost"] == 0 and figures["p99_ms"] is not None, figures
