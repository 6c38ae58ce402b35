"""The aiohttp application: services wired once, routes, middlewares, the background ticker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from control import cors, health, metrics, signaling
from control.api import billing, openapi, participants, recordings, rooms, tutor, webhooks, whip
from control.auth import Auth, token_secret
from control.background import stop_tasks
from control.classroom import Classroom
from control.clock import Clock
from control.config import Config
from control.drain import DRAIN, Drain
from control.failover import Failover
from control.logs import quiet_malformed_requests
from control.middleware import org_middleware, request_middleware
from control.services import SERVICES, Services
from control.signaling import HUB
from control.store.store import Store
from control.tutor.service import Tutor
from control.web import page, sdkfiles
from control.webhooks.dispatcher import Dispatcher
from control.wiring import build_live

log = logging.getLogger("classcast.app")


async def build_services(config: Config, clock: Clock | None = None) -> Services:
    clock = clock or Clock()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(config.db_url)
    auth = Auth(token_secret(config), clock, store)  # shared by several nodes when the operator sets it
    live = await build_live(config)  # one node's memory, or Redis: control/wiring.py decides
    bus = live.bus
    classroom = Classroom(config, store, auth, bus, clock, node_id=live.node_id)
    failover = Failover(classroom, live.presence, live.placement, grace_s=config.reconnect_grace_s,
                        lease_s=config.node_lease_s)
    closed = await failover.recover()  # the previous run's sessions, or those of other nodes that are gone
    if closed:
        log.info("closed %d sessions left open by the previous run", closed)
    tutor_svc = Tutor(config.tutor, store, bus, clock, config.data_dir)
    return Services(config=config, clock=clock, store=store, auth=auth, bus=bus, classroom=classroom,
                    tutor=tutor_svc, limits=live.limits, live=live, failover=failover)


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]

    async def loop() -> None:
        while True:
            await asyncio.sleep(svc.config.tick_interval_s)
            try:
                await svc.classroom.tick()
            except Exception:
                log.exception("tick failed")

    task = asyncio.create_task(loop())
    yield
    await stop_tasks(task)


async def _failover(app: web.Application) -> AsyncIterator[None]:
    """This node's heartbeat, and the sweep that closes what nodes that are gone left open (control/failover.py)."""
    failover = app[SERVICES].failover
    assert failover is not None
    task = asyncio.create_task(failover.run())
    yield
    await stop_tasks(task)


async def media_ready(app: web.Application, timeout: float = 15.0) -> bool:
    """Waits for the media plane: the SFU worker processes start with the app, all at once, without holding its
    start-up (control/workers.py `WorkerPool.start`); in-process media is ready at once. False after `timeout`."""
    ready = getattr(app[HUB].sfu, "ready", None)
    return bool(await ready(timeout)) if ready is not None else True


async def create_app(config: Config, clock: Clock | None = None, *, background: bool = True) -> web.Application:
    """`background=False` leaves the ticker and the janitor's loop off so tests drive them with a fake clock, and
    starts the recorder process only when a recording starts."""
    svc = await build_services(config, clock)
    drain = Drain()
    middlewares = [cors.preflight_middleware, request_middleware, org_middleware, drain.middleware]
    meter = metrics.Metrics() if config.metrics else None
    if meter is not None:
        middlewares.insert(0, meter.middleware)  # outermost: it sees every final status
        svc.bus.subscribe(meter.on_event, local_only=True)  # this node's counts (other nodes count theirs)
        if svc.tutor is not None:
            metrics.time_backend(svc.tutor.backend, meter.on_generation)
    quiet_malformed_requests()
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app[SERVICES] = svc
    app[DRAIN] = drain
    app[recordings.BACKGROUND] = background  # the recorder process starts with the server, else on demand
    for module in (rooms, participants, billing, openapi, page, sdkfiles, signaling, tutor, recordings, webhooks, whip):
        module.setup(app)  # tutor and whip after signaling
    health.setup(app, drain)
    cors.setup(app)

    async def refuse_joins_while_draining(app: web.Application) -> None:
        app[HUB].draining = lambda: drain.draining

    app.on_startup.append(refuse_joins_while_draining)

    async def drain_only_what_is_hosted_here(app: web.Application) -> None:
        placement = app[HUB].placement  # several nodes: another node's classes are not this drain's

        async def hosts(room_sid: str) -> bool:
            host = await placement.host(room_sid)
            return host is not None and host.id == placement.node.id

        async def others_live() -> bool:
            return any(n.id != placement.node.id for n in await placement.nodes())

        drain.hosts, drain.others_live, drain.announce = hosts, others_live, placement.set_draining

    app.on_startup.append(drain_only_what_is_hosted_here)

    async def settle_lost_recordings(app: web.Application) -> None:  # after control/api/recordings.py's start
        assert svc.failover is not None
        svc.failover.settle_lost = app[recordings.RECORDINGS].settle_lost

    app.on_startup.append(settle_lost_recordings)
    dispatcher = Dispatcher(svc.classroom.outbox, config.webhooks, svc.clock,
                            meter.on_webhook if meter is not None else None)
    app[webhooks.DISPATCHER] = dispatcher
    if meter is not None:
        metrics.setup(app, meter)

        async def watch(app: web.Application) -> None:
            meter.live.hub = app[HUB]
            meter.live.recordings = app[recordings.RECORDINGS]
            meter.live.transcription = svc.tutor.transcription if svc.tutor is not None else None

        app.on_startup.append(watch)
    if background:
        app.cleanup_ctx.append(_ticker)
        app.cleanup_ctx.append(_failover)

        async def deliver(_app: web.Application) -> AsyncIterator[None]:
            await dispatcher.start()
            yield
            await dispatcher.stop()

        app.cleanup_ctx.append(deliver)

    async def close_store(_app: web.Application) -> None:
        await svc.store.close()
        if svc.live is not None:
            await svc.live.close()

    app.on_cleanup.append(close_store)
    return app
