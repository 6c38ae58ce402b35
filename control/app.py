"""The aiohttp application: services wired once, routes, middlewares, the background ticker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from control import signaling
from control.api import billing, openapi, participants, recordings, rooms, tutor
from control.auth import Auth, load_or_create_secret
from control.classroom import Classroom
from control.clock import Clock
from control.config import Config
from control.events import EventBus
from control.middleware import org_middleware, request_middleware
from control.ratelimit import RestLimits
from control.services import SERVICES, Services
from control.store.store import Store
from control.tutor.service import Tutor
from control.web import page

log = logging.getLogger("classcast.app")


async def build_services(config: Config, clock: Clock | None = None) -> Services:
    clock = clock or Clock()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(config.db_url)
    auth = Auth(load_or_create_secret(config.data_dir), clock, store)
    bus = EventBus()
    classroom = Classroom(config, store, auth, bus, clock)
    closed = await classroom.recover()
    if closed:
        log.info("closed %d sessions left open by the previous run", closed)
    tutor_svc = Tutor(config.tutor, store, bus, clock)
    return Services(config=config, clock=clock, store=store, auth=auth, bus=bus, classroom=classroom,
                    tutor=tutor_svc, limits=RestLimits(config.rate_limits))


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
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def create_app(config: Config, clock: Clock | None = None, *, background: bool = True) -> web.Application:
    """`background=False` leaves the ticker and the janitor's loop off so tests drive them with a fake clock, and
    starts the recorder process only when a recording starts."""
    svc = await build_services(config, clock)
    app = web.Application(middlewares=[request_middleware, org_middleware], client_max_size=config.max_body_bytes)
    app[SERVICES] = svc
    app[recordings.BACKGROUND] = background  # the recorder process starts with the server, else on demand
    for module in (rooms, participants, billing, openapi, page, signaling, tutor, recordings):  # tutor after signaling
        module.setup(app)
    if background:
        app.cleanup_ctx.append(_ticker)

    async def close_store(_app: web.Application) -> None:
        await svc.store.close()

    app.on_cleanup.append(close_store)
    return app
