"""`/healthz`, `/readyz` and `/metrics` on the real app (issue 17, requirements 1 and 2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from control.app import create_app, media_ready
from control.clock import FakeClock
from control.config import Config
from control.drain import DRAIN
from tests.conftest import Api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser (the format is checked too)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
    return samples(await resp.text())


async def test_health_needs_no_organization_and_reports_each_check(api: Api) -> None:
    resp = await api.client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    # the SFU worker processes start with the app without holding it up: ready once they run (a load balancer
    # polls /readyz; `classcast serve` waits for them before its banner)
    assert await media_ready(api.client.app)
    resp = await api.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready", body
    assert body["checks"]["database"] == {"ok": True} and body["checks"]["recorder"]["ok"]
    workers = api.svc.config.sfu_workers
    assert body["checks"]["sfu"] == ({"ok": True, "workers": workers, "alive": workers} if workers else
                                     {"ok": True, "workers": "in-process"})
    assert body["checks"]["draining"] == {"ok": True}

    store = api.svc.store
    real = store.engine
    store.engine = create_async_engine("sqlite+aiosqlite:////nonexistent-dir/classcast.db")
    try:
        resp = await api.client.get("/readyz")
        body = await resp.json()
    finally:
        await store.engine.dispose()
        store.engine = real
    assert resp.status == 503 and body["checks"]["database"]["ok"] is False
    assert "unable to open database" in body["checks"]["database"]["error"]
    assert (await api.client.get("/healthz")).status == 200  # the process still answers


async def test_draining_refuses_new_classes_with_retry_after(api: Api) -> None:
    await api.create_room("algebra")
    api.client.app[DRAIN].begin()
    resp = await api.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["draining"] == {"ok": False, "error": "the node is draining"}
    for path, body in (("/v1/room/create", {"roomId": "biology", "title": "B",
                                            "participant": {"uid": "t", "name": "T", "role": "TEACHER"}}),
                       ("/v1/room/algebra/join", {"participant": {"uid": "s1", "name": "S", "role": "STUDENT"}})):
        resp = await api.client.post(path, json=body, headers={"VF-ORG-ID": api.org.id})
        assert resp.status == 503 and resp.headers["Retry-After"] == "30"
        assert (await resp.json())["code"] == "SERVER_DRAINING"
    status, body = await api.get("/v1/room/algebra/status")  # the rest keeps working
    assert status == 200 and body["data"]["exists"] is True
    assert await api.svc.store.get_room(api.org.id, "biology") is None


async def test_drain_lets_classes_run_then_ends_them_normally(api: Api) -> None:
    await api.create_room("busy")
    await api.create_room("empty")
    busy, empty = await api.room("busy"), await api.room("empty")
    c = api.svc.classroom
    await c.open_session(busy.sid, "teacher-1")
    gone = await c.open_session(empty.sid, "teacher-1")
    api.clock.advance(120)
    await c.close_session(gone.id)
    drain = api.client.app[DRAIN]
    ended = await drain.run(c, timeout_s=0.3, interval_s=0.05)
    assert ended == 2 and drain.finished.is_set()
    busy, empty = await api.room("busy"), await api.room("empty")
    assert empty.end_reason == "server_drain" and busy.end_reason == "drain_timeout"
    assert not await api.svc.store.room_sessions(busy.sid, active_only=True)
    assert busy.credits_debited > 0 or empty.credits_debited > 0  # billed the normal way
    assert [e.data["reason"] for e in api.events if e.type == "class_ended"] == ["server_drain", "drain_timeout"]


async def test_metrics_count_requests_by_route_and_status(api: Api) -> None:
    await api.create_room("algebra")
    await api.join("algebra", "s1")
    for _ in range(3):
        await api.get("/v1/room/nosuch/summary")
    await api.client.get("/no/such/path")
    await api.client.request("PROPFIND", "/no/such/path")  # a WebDAV method: counted as OTHER, not a label value
    room = await api.room("algebra")
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    await api.svc.classroom.open_session(room.sid, "s1")
    s = await scrape(api.client)
    create = ("classcast_http_requests_total", (("method", "POST"), ("route", "/v1/room/create"), ("status", "200")))
    assert s[create] == 1
    assert s[("classcast_http_requests_total", (("method", "GET"), ("route", "/v1/room/{roomId}/summary"),
                                                ("status", "404")))] == 3  # the template, not /v1/room/nosuch
    assert s[("classcast_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert s[("classcast_http_requests_total", (("method", "OTHER"), ("route", "unmatched"), ("status", "404")))] == 1
    count = s[("classcast_http_request_duration_seconds_count",
               (("method", "POST"), ("route", "/v1/room/create")))]
    inf = s[("classcast_http_request_duration_seconds_bucket",
             (("le", "+Inf"), ("method", "POST"), ("route", "/v1/room/create")))]
    assert count == inf == 1
    assert s[("classcast_participant_joins_total", (("role", "TEACHER"),))] == 1
    assert s[("classcast_participant_joins_total", (("role", "STUDENT"),))] == 1
    assert s[("classcast_rooms_live", ())] == 0  # nobody is connected over signaling in this test
    assert s[("classcast_recorder_jobs_live", ())] == 0
    assert ("classcast_sfu_received_packets_total", ()) in s  # read through Sfu.stats
    assert s[("classcast_webhook_outbox", (("status", "pending"),))] == 0
    assert s[("process_cpu_seconds_total", ())] > 0
    assert not any(k[0].startswith("classcast_http") and ("route", "/metrics") in k[1] for k in s)


async def test_metrics_live_rooms_and_participants_by_role(api: Api) -> None:
    teacher = await api.create_room("algebra")
    student = await api.join("algebra", "s1")
    sockets = []
    for token in (teacher["token"], student["token"]):
        ws = await api.client.ws_connect(f"/v1/rtc?token={token}")
        await ws.send_json({"type": "join"})
        while (await ws.receive_json(timeout=10))["type"] != "joined":
            pass
        sockets.append(ws)
    s = await scrape(api.client)
    assert s[("classcast_rooms_live", ())] == 1
    assert s[("classcast_participants", (("role", "TEACHER"),))] == 1
    assert s[("classcast_participants", (("role", "STUDENT"),))] == 1
    await sockets[1].send_json({"type": "leave"})
    while not sockets[1].closed:  # the server closes the socket once the leave is done
        await sockets[1].receive(timeout=10)
    s = await scrape(api.client)
    assert s[("classcast_participants", (("role", "STUDENT"),))] == 0
    assert s[("classcast_participant_leaves_total", (("reason", "left"),))] == 1
    for ws in sockets:
        await ws.close()
    await api.join("algebra", "s2")
    status, _ = await api.post("/v1/room/algebra/participants/s2/remove", {"reason": "spam\" } 1\nx"})
    assert status == 200
    s = await scrape(api.client)  # a moderator's text is no label: any API client could add series without end
    assert s[("classcast_participant_leaves_total", (("reason", "removed"),))] == 1
    assert not any(k[0] == "classcast_participant_leaves_total" and "spam" in str(k[1]) for k in s)


async def test_metrics_off(aiohttp_client: Any, tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", metrics=False)
    client = await aiohttp_client(await create_app(config, FakeClock(), background=False))
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/healthz")).status == 200


def test_every_metric_name_is_documented() -> None:
    """docs/operations.md and the Grafana dashboard name the same families the code defines."""
    root = Path(__file__).resolve().parents[2]
    code = (root / "control" / "metrics.py").read_text()
    names = set(re.findall(r'"(classcast_[a-z_]+)"', code))
    ops = (root / "docs" / "operations.md").read_text()
    dashboard = (root / "docs" / "grafana-dashboard.json").read_text()
    assert names and {n for n in names if n not in ops} == set()
    used = set(re.findall(r"(classcast_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", dashboard))
    assert used and used <= names, used - names


async def test_draining_refuses_new_participants_over_signaling_but_not_reconnects(api: Api) -> None:
    teacher = await api.create_room("algebra")
    student = await api.join("algebra", "s1")

    async def join(token: str) -> tuple[Any, dict[str, Any]]:
        ws = await api.client.ws_connect(f"/v1/rtc?token={token}")
        await ws.send_json({"type": "join"})
        while True:
            msg = await ws.receive_json(timeout=10)
            if msg["type"] in ("joined", "error"):
                return ws, msg

    first, msg = await join(teacher["token"])
    assert msg["type"] == "joined"
    api.client.app[DRAIN].begin()
    ws, msg = await join(student["token"])
    assert msg == {"type": "error", "code": "SERVER_DRAINING", "ref": "join",
                   "message": "this server is draining for a restart; join again shortly"}
    closed = await ws.receive(timeout=10)
    assert ws.closed or closed.type.name in ("CLOSE", "CLOSED")
    again, msg = await join(teacher["token"])  # the teacher's reconnect keeps the class going
    assert msg["type"] == "joined"
    room = await api.room("algebra")
    assert [p.uid for p in await api.svc.store.active_participants(room.sid)] == ["teacher-1"]
    for w in (first, again):
        await w.close()


async def test_metrics_time_the_tutors_generations(tapi: Api) -> None:
    from tests.control.tutor_fixtures import chat_body

    await tapi.create_room("math-101")
    for _ in range(2):
        status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi))
        assert status == 200, body
    s = await scrape(tapi.client)
    assert s[("classcast_tutor_requests_total", (("backend", "fake"), ("outcome", "ok")))] == 2
    assert s[("classcast_tutor_time_to_first_token_seconds_count", (("backend", "fake"),))] == 2
    assert 0 < s[("classcast_tutor_time_to_first_token_seconds_sum", (("backend", "fake"),))] < 5


class EngineWithTotals:
    """Plain data in the shape of i21's `Sfu.metrics()` and `Sfu.stats()` (branch i21, not merged here yet)."""

    def __init__(self) -> None:
        self.routers = {"RM_a": None}

    def metrics(self) -> dict[str, Any]:
        return {"engine": "native", "forwarded_packets": 1200, "forwarded_bytes": 960_000,
                "drops": {"no_layer": 7, "paused": 3}, "retransmitted": 11, "layer_switches": 2,
                "estimated_bitrates_bps": [250_000, 900_000, 2_500_000]}

    def stats(self, _sid: str) -> dict[str, Any]:
        return {"tracks": [{"packetsIn": 500, "nacksSent": 4, "keyframeRequests": 2, "drops": {"no_layer": 1}}],
                "consumers": [{"packetsSent": 9, "retransmitted": 1, "switches": 1, "drops": {}}]}


async def test_metrics_prefer_the_engines_cumulative_totals(api: Api) -> None:
    from control.signaling import HUB

    hub = api.client.app[HUB]
    real, hub.sfu = hub.sfu, EngineWithTotals()
    try:
        s = await scrape(api.client)
    finally:
        hub.sfu = real
    assert s[("classcast_sfu_forwarded_packets_total", ())] == 1200  # the engine's total, not the rooms' 9
    assert s[("classcast_sfu_forwarded_bytes_total", ())] == 960_000
    assert s[("classcast_sfu_dropped_packets_total", (("reason", "no_layer"),))] == 7
    assert s[("classcast_sfu_retransmitted_packets_total", ())] == 11
    assert s[("classcast_sfu_layer_switches_total", ())] == 2
    assert s[("classcast_sfu_received_packets_total", ())] == 500  # only the rooms say it
    assert s[("classcast_sfu_nacks_sent_total", ())] == 4
    assert s[("classcast_sfu_keyframe_requests_total", ())] == 2
    assert s[("classcast_sfu_estimated_bandwidth_bps_count", ())] == 3
    assert s[("classcast_sfu_estimated_bandwidth_bps_bucket", (("le", "300000.0"),))] == 1
    assert s[("classcast_sfu_estimated_bandwidth_bps_bucket", (("le", "1200000.0"),))] == 2
    assert s[("classcast_sfu_estimated_bandwidth_bps_sum", ())] == 3_650_000


def test_dashboard_queries_evaluate_as_prometheus_would() -> None:
    """bench/metrics_chart.py draws the dashboard's own queries: its PromQL subset must compute what Prometheus
    does (rate over the window, sum by, label matchers, histogram_quantile's linear interpolation)."""
    import json as jsonlib

    from bench.metrics_chart import DASHBOARD, evaluate, parse_scrape

    def scrape_at(t: float, requests: float, le: list[tuple[str, float]], pending: float) -> tuple[float, Any]:
        lines = ["# TYPE classcast_http_requests counter",
                 f'classcast_http_requests_total{{method="GET",route="/a",status="200"}} {requests}',
                 f'classcast_http_requests_total{{method="GET",route="/a",status="404"}} {requests / 2}',
                 "# TYPE classcast_http_request_duration_seconds histogram"]
        lines += [f'classcast_http_request_duration_seconds_bucket{{method="GET",route="/a",le="{b}"}} {n}'
                  for b, n in le]
        lines += [f'classcast_http_request_duration_seconds_count{{method="GET",route="/a"}} {le[-1][1]}',
                  'classcast_http_request_duration_seconds_sum{method="GET",route="/a"} 1.0',
                  "# TYPE classcast_webhook_outbox gauge",
                  f'classcast_webhook_outbox{{status="pending"}} {pending}',
                  'classcast_webhook_outbox{status="delivered"} 99']
        return t, parse_scrape("\n".join(lines) + "\n")

    scrapes = [scrape_at(0, 100, [("0.1", 0), ("0.2", 0), ("+Inf", 0)], 3),
               scrape_at(10, 150, [("0.1", 10), ("0.2", 30), ("+Inf", 40)], 1)]
    by_status = evaluate("sum by (status) (rate(classcast_http_requests_total[1m]))", scrapes, 1)
    assert by_status == {frozenset({("status", "200")}): 5.0, frozenset({("status", "404")}): 2.5}
    assert evaluate("sum(rate(classcast_http_requests_total[1m]))", scrapes, 0) == {}  # no window yet
    # 40 observations: 10 <= 0.1 s, 20 more <= 0.2 s, 10 above. p50 = rank 20: halfway through (0.1, 0.2].
    p50 = evaluate("histogram_quantile(0.5, sum by (le, route) "
                   "(rate(classcast_http_request_duration_seconds_bucket[1m])))", scrapes, 1)
    assert p50 == {frozenset({("route", "/a")}): pytest.approx(0.15)}
    p95 = evaluate("histogram_quantile(0.95, sum by (le) (rate(classcast_http_request_duration_seconds_bucket[1m])))",
                   scrapes, 1)
    assert p95 == {frozenset(): 0.2}  # in the +Inf bucket: the highest finite bound, as Prometheus answers
    assert evaluate('sum(classcast_webhook_outbox{status="pending"})', scrapes, 1) == {frozenset(): 1.0}
    for panel in jsonlib.loads(DASHBOARD.read_text())["panels"]:  # every query of the dashboard is in the subset
        for target in panel["targets"]:
            evaluate(target["expr"], scrapes, 1)
