"""Prometheus metrics at `/metrics` on the main port (`CLASSCAST_METRICS=off` removes the route).

One registry per application (never prometheus-client's global one, so two servers in one test process do not
share counters). Three kinds of source:
- counted as they happen: HTTP requests (by route template, never the raw path, so cardinality stays bounded),
  joins and leaves (from the EventBus), webhook attempts (the dispatcher's hook), AI generations (`time_backend`
  on the tutor's backend: the `Backend.stream` protocol is the boundary, the tutor itself is untouched);
- read at scrape time from plain data: live rooms and participants by role (the signaling hub), SFU counters
  through `Sfu.metrics()` when the engine offers it, else summed from `Sfu.stats(room)`, recorder jobs and feed
  drops (control/recordings.py), the webhook outbox by status;
- the process itself (CPU, memory, file descriptors) from prometheus-client's ProcessCollector.
Families whose source does not exist in this build are absent from the scrape, never reported as 0.
docs/operations.md lists every name; docs/grafana-dashboard.json is built on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from control.events import Event

log = logging.getLogger("classcast.metrics")

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BANDWIDTH_BUCKETS = (50e3, 100e3, 200e3, 300e3, 500e3, 800e3, 1.2e6, 2e6, 3e6, 5e6, 8e6)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
ROLES = ("TEACHER", "MODERATOR", "STUDENT", "ADMIN")
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Source = Callable[[], Any]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter("classcast_http_requests", "HTTP requests by route template and status",
                                     ["method", "route", "status"], registry=r)
        self.http_duration = Histogram("classcast_http_request_duration_seconds", "HTTP request latency",
                                       ["method", "route"], buckets=HTTP_BUCKETS, registry=r)
        self.joins = Counter("classcast_participant_joins", "Participants who joined a class (first session)",
                             ["role"], registry=r)
        self.leaves = Counter("classcast_participant_leaves", "Participants who left a class", ["reason"],
                              registry=r)
        self.rooms_ended = Counter("classcast_rooms_ended", "Classes ended", ["reason"], registry=r)
        self.tutor_requests = Counter("classcast_tutor_requests", "AI generations (tutor and agent) by backend "
                                      "and outcome (ok, error)", ["backend", "outcome"], registry=r)
        self.tutor_ttft = Histogram("classcast_tutor_time_to_first_token_seconds",
                                    "AI generations: time from asking the model to its first token", ["backend"],
                                    buckets=TTFT_BUCKETS, registry=r)
        self.webhook_attempts = Counter("classcast_webhook_deliveries", "Webhook delivery attempts by result "
                                        "(delivered, retry: failed and rescheduled, gave_up: the 24 h passed)",
                                        ["result"], registry=r)
        self.webhook_duration = Histogram("classcast_webhook_delivery_duration_seconds",
                                          "Time one webhook attempt took", buckets=HTTP_BUCKETS, registry=r)
        self.live = LiveCollector()
        r.register(self.live)

    # ---- sources counted as they happen ---------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """EventBus subscriber: never blocks, never raises into the publisher (the bus guards too)."""
        data = event.data
        if event.type == "participant_joined":
            self.joins.labels(role=str((data.get("participant") or {}).get("role", "UNKNOWN"))).inc()
        elif event.type == "participant_removed":  # its reason is the moderator's free text: a label per text
            self.leaves.labels(reason="removed").inc()  # would let any API client add series without end
        elif event.type == "participant_left":  # the server's own reasons, a few
            self.leaves.labels(reason=str(data.get("reason") or "left")).inc()
        elif event.type == "class_ended":
            self.rooms_ended.labels(reason=str(data.get("reason") or "unknown")).inc()

    def on_generation(self, backend: str, ok: bool, first_token_s: float | None) -> None:
        self.tutor_requests.labels(backend=backend, outcome="ok" if ok else "error").inc()
        if first_token_s is not None:
            self.tutor_ttft.labels(backend=backend).observe(first_token_s)

    def on_webhook(self, result: str, seconds: float) -> None:
        self.webhook_attempts.labels(result=result).inc()
        self.webhook_duration.observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: sees the final status of every request, including the error envelope's."""
        started = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = _route(request)
            method = request.method if request.method in METHODS else "OTHER"  # a client may send any token
            if route != "/metrics":
                self.http_requests.labels(method, route, str(status)).inc()
                if status != 101:  # a WebSocket's "latency" would be the length of the class
                    self.http_duration.labels(method, route).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route(request: web.Request) -> str:
    """The matched route's template (`/v1/room/{roomId}`), or `unmatched`: one label value per route."""
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    canonical = info.canonical
    return canonical if canonical else "unmatched"


def time_backend(backend: Any, on_done: Callable[[str, bool, float | None], None]) -> None:
    """Times every generation of the tutor's model backend by wrapping its `stream` on the instance (the object and
    its type stay the tutor's own; control/tutor/ is not edited for it)."""
    inner = backend.stream
    name = str(getattr(backend, "name", "unknown"))

    async def stream(messages: Any, max_tokens: int) -> AsyncIterator[Any]:
        started = time.perf_counter()
        first: float | None = None
        ok = False
        try:
            async for item in inner(messages, max_tokens):
                if first is None and isinstance(item, str) and item:
                    first = time.perf_counter() - started
                yield item
            ok = True
        finally:  # an error, or the client going away mid-answer (aclose), is not a completed generation
            on_done(name, ok, first)

    backend.stream = stream


class LiveCollector(Collector):
    """Reads, at scrape time, the plain data the running parts expose. Set the sources once they exist."""

    def __init__(self) -> None:
        self.hub: Any = None  # control.signaling.Hub
        self.recordings: Any = None  # control.recordings.Recordings
        self.transcription: Any = None  # control.tutor.transcription.Transcription
        self.outbox_counts: dict[str, int] = {}  # refreshed by the /metrics handler (a database read)

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._hub()
            yield from self._sfu()
            yield from self._recorder()
            yield from self._transcriber()
            yield from self._outbox()
        except Exception:  # a scrape must never fail because one part is mid-change
            log.exception("metrics collection failed")

    def _hub(self) -> Iterable[Metric]:
        hub = self.hub
        if hub is None:
            return
        rooms = GaugeMetricFamily("classcast_rooms_live", "Rooms with at least one connected participant")
        rooms.add_metric([], sum(1 for conns in hub.rooms.values() if conns))
        yield rooms
        by_role = dict.fromkeys(ROLES, 0)
        for conns in list(hub.rooms.values()):
            for conn in list(conns.values()):
                role = str(conn.grant.participant.role)
                by_role[role] = by_role.get(role, 0) + 1
        people = GaugeMetricFamily("classcast_participants", "Connected participants by role", labels=["role"])
        for role, n in sorted(by_role.items()):
            people.add_metric([role], n)
        yield people

    def _sfu(self) -> Iterable[Metric]:
        hub = self.hub
        sfu = getattr(hub, "sfu", None)
        if sfu is None:
            return
        totals = _sum_room_stats(sfu)
        if callable(getattr(sfu, "metrics", None)):
            totals.update(sfu.metrics())  # cumulative engine totals win over the live rooms' sums
        simple = (
            ("forwarded_packets", "classcast_sfu_forwarded_packets", "RTP packets forwarded to subscribers"),
            ("forwarded_bytes", "classcast_sfu_forwarded_bytes", "RTP payload bytes forwarded to subscribers"),
            ("packets_in", "classcast_sfu_received_packets", "RTP packets received from publishers"),
            ("nacks_received", "classcast_sfu_nacks_received", "NACKs received from subscribers"),
            ("nacks_sent", "classcast_sfu_nacks_sent", "NACKs sent to publishers"),
            ("retransmitted", "classcast_sfu_retransmitted_packets", "Packets retransmitted on NACK"),
            ("plis_sent", "classcast_sfu_keyframe_requests", "Keyframe requests (PLI/FIR) sent to publishers"),
            ("layer_switches", "classcast_sfu_layer_switches", "Simulcast layer switches"),
        )
        for key, name, doc in simple:
            if key in totals:
                c = CounterMetricFamily(name, doc)
                c.add_metric([], float(totals[key]))
                yield c
        if "drops" in totals:
            drops = CounterMetricFamily("classcast_sfu_dropped_packets", "Packets not forwarded, by reason",
                                        labels=["reason"])
            for reason, n in sorted(totals["drops"].items()):
                drops.add_metric([str(reason)], float(n))
            yield drops
        if "estimated_bitrates_bps" in totals:
            yield _histogram("classcast_sfu_estimated_bandwidth_bps",
                             "Current bandwidth estimate per subscriber", totals["estimated_bitrates_bps"],
                             BANDWIDTH_BUCKETS)
        if "workers" in totals:
            cpu = CounterMetricFamily("classcast_sfu_worker_cpu_seconds", "CPU time of each SFU worker",
                                      labels=["worker"])
            for w in totals["workers"]:
                cpu.add_metric([str(w.get("id"))], float(w.get("cpu_seconds", 0.0)))
            yield cpu
            # per worker process (issue 15 req 6): the same counters as above, split, and whether each is up
            per_worker = (
                ("forwarded_packets", CounterMetricFamily, "classcast_sfu_worker_forwarded_packets",
                 "RTP packets forwarded by each SFU worker"),
                ("participants", GaugeMetricFamily, "classcast_sfu_worker_participants",
                 "Participants whose media each SFU worker carries"),
                ("alive", GaugeMetricFamily, "classcast_sfu_worker_up", "Whether each SFU worker process runs"),
                ("restarts", CounterMetricFamily, "classcast_sfu_worker_restarts",
                 "Times each SFU worker was restarted after it died"),
            )
            for key, family, name, doc in per_worker:
                m = family(name, doc, labels=["worker"])
                for w in totals["workers"]:
                    m.add_metric([str(w.get("id"))], float(w.get(key, 0)))
                yield m

    def _recorder(self) -> Iterable[Metric]:
        rec = self.recordings
        if rec is None:
            return
        live = GaugeMetricFamily("classcast_recorder_jobs_live", "Recording jobs running")
        live.add_metric([], len(rec.live))
        yield live
        done = CounterMetricFamily("classcast_recorder_jobs_finished", "Recording jobs finished, by final status",
                                   labels=["status"])
        for status, n in sorted(rec.finished.items()):
            done.add_metric([status], float(n))
        yield done
        drops = CounterMetricFamily("classcast_recorder_feed_dropped_packets",
                                    "Media messages dropped because the recorder could not keep up")
        drops.add_metric([], float(rec.feed_dropped_finished + sum(j.tap.dropped for j in rec.live.values())))
        yield drops
        up = GaugeMetricFamily("classcast_recorder_up", "Whether the recorder process is connected")
        up.add_metric([], 1.0 if rec.supervisor.link.connected else 0.0)
        yield up

    def _transcriber(self) -> Iterable[Metric]:
        tr = self.transcription
        if tr is None:
            return
        rooms = GaugeMetricFamily("classcast_transcriber_rooms", "Rooms being transcribed live")
        rooms.add_metric([], len(tr.taps))
        yield rooms
        up = GaugeMetricFamily("classcast_transcriber_up", "Whether the transcriber process is connected (it starts "
                               "with the first transcribed class)")
        up.add_metric([], 1.0 if tr.supervisor.running else 0.0)
        yield up
        restarts = CounterMetricFamily("classcast_transcriber_restarts", "Times the transcriber process died and "
                                       "was started again")
        restarts.add_metric([], float(tr.supervisor.restarts))
        yield restarts

    def _outbox(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("classcast_webhook_outbox", "Webhook deliveries in the outbox by status",
                              labels=["status"])
        for status in ("pending", "delivered", "failed"):
            g.add_metric([status], float(self.outbox_counts.get(status, 0)))
        yield g


def _sum_room_stats(sfu: Any) -> dict[str, Any]:
    """What `Sfu.stats(room)` offers, summed over live rooms, until the engine exposes cumulative `Sfu.metrics()`.

    Reads each key only where the engine reports it (tracks' packetsIn/nacksSent/keyframeRequests/drops; the
    engine's per-subscription packetsSent/retransmitted/switches/drops and per-transport bytes_out/drops). A room's
    counts leave the sums when it closes, which Prometheus reads as a counter reset."""
    totals: dict[str, Any] = {"packets_in": 0, "nacks_sent": 0, "plis_sent": 0}
    drops: dict[str, int] = {}

    def add(key: str, value: Any) -> None:
        totals[key] = totals.get(key, 0) + int(value or 0)

    def add_drops(found: Any) -> None:
        for reason, n in (found or {}).items():
            drops[str(reason)] = drops.get(str(reason), 0) + int(n)

    for sid in list(getattr(sfu, "routers", {})):
        stats = sfu.stats(sid)
        for track in stats.get("tracks", []):
            add("packets_in", track.get("packetsIn"))
            add("nacks_sent", track.get("nacksSent"))
            add("plis_sent", track.get("keyframeRequests"))
            add_drops(track.get("drops"))
        for c in stats.get("consumers", []):
            add("forwarded_packets", c.get("packetsSent"))
            add("retransmitted", c.get("retransmitted"))
            add("layer_switches", c.get("switches"))
            add_drops(c.get("drops"))
        for tr in stats.get("transports", []):
            if "bytes_out" in tr:
                add("forwarded_bytes", tr["bytes_out"])
            add_drops(tr.get("drops"))
        if any("drops" in x for key in ("tracks", "consumers", "transports") for x in stats.get(key, [])):
            totals["drops"] = drops
    return totals


def _histogram(name: str, doc: str, values: Iterable[float], buckets: tuple[float, ...]) -> HistogramMetricFamily:
    values = [float(v) for v in values]
    cumulative = [(str(b), float(sum(1 for v in values if v <= b))) for b in buckets]
    cumulative.append(("+Inf", float(len(values))))
    h = HistogramMetricFamily(name, doc)
    h.add_metric([], buckets=cumulative, sum_value=sum(values))
    return h


def setup(app: web.Application, metrics: Metrics) -> None:
    """The route; the middleware is installed by control/app.py (it must be the outermost)."""
    from control.services import SERVICES
    from control.store.webhooks import WebhookStore

    async def handle(request: web.Request) -> web.Response:
        try:
            metrics.live.outbox_counts = await WebhookStore(request.app[SERVICES].store).counts()
        except Exception:
            log.exception("webhook outbox count failed")
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", handle)
