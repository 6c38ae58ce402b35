"""`/healthz` (the process answers) and `/readyz` (it can take classes), both without VF-ORG-ID and cheap.

`/readyz` is what a load balancer asks: 200 when the database answers, the recorder process and the SFU are up
and the server is not draining; else 503 with the failing checks named. A recorder that starts on demand (tests,
`background=False`) is reported as such and does not fail readiness.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import text

from control.services import SERVICES

DB_TIMEOUT_S = 2.0


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _database(app: web.Application) -> dict[str, Any]:
    try:
        async with asyncio.timeout(DB_TIMEOUT_S), app[SERVICES].store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {"ok": True}
    except Exception as exc:  # any failure to reach it is "not ready", with its reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}


def _recorder(app: web.Application) -> dict[str, Any]:
    from control.api.recordings import BACKGROUND, RECORDINGS

    recordings = app.get(RECORDINGS)
    if recordings is None:
        return {"ok": False, "error": "not started"}
    if not app.get(BACKGROUND, True):
        return {"ok": True, "mode": "on_demand"}
    running = recordings.supervisor.running
    return {"ok": running, **({} if running else {"error": "recorder process not running"})}


def _sfu(app: web.Application) -> dict[str, Any]:
    from control.signaling import HUB

    hub = app.get(HUB)
    if hub is None:
        return {"ok": False, "error": "not started"}
    workers = getattr(hub.sfu, "workers_alive", None)  # once the engine runs in worker processes
    if callable(workers):
        alive, total = workers()
        return {"ok": alive == total and total > 0, "workers": total, "alive": alive}
    return {"ok": True, "workers": "in-process"}


def setup(app: web.Application, drain: Any) -> None:
    async def readyz(request: web.Request) -> web.Response:
        checks = {
            "database": await _database(request.app),
            "recorder": _recorder(request.app),
            "sfu": _sfu(request.app),
            "draining": {"ok": not drain.draining, **({"error": "the node is draining"} if drain.draining else {})},
        }
        ready = all(c["ok"] for c in checks.values())
        return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                                 status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
