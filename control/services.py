"""The services one server process shares, reachable from every handler through `request.app[SERVICES]`."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from control.auth import Auth
from control.classroom import Classroom
from control.clock import Clock
from control.config import Config
from control.events import EventBus
from control.failover import Failover
from control.ratelimit import RateLimits, RestLimits
from control.store.store import Store
from control.tutor.service import Tutor
from control.wiring import Live


@dataclass
class Services:
    config: Config
    clock: Clock
    store: Store
    auth: Auth
    bus: EventBus
    classroom: Classroom
    tutor: Tutor | None = None  # None only in tools that build services without the API (the CLI)
    limits: RestLimits = field(default_factory=lambda: RestLimits(RateLimits()))
    live: Live | None = None  # what chose bus and limits (control/wiring.py); closed with the app
    failover: Failover | None = None  # closes what nodes that are gone left open (control/failover.py)


SERVICES = web.AppKey("services", Services)
