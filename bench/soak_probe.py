"""`classcast serve` with one extra route for the soak: GET /_bench/runtime -> {"tasks", "threads"}.

What /proc cannot say about a server is how many asyncio tasks it holds, so the soak runs the real server through
this wrapper (bench only: the product has no such route) and asks. Everything else is `control.cli.main`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

import control.app
from control.cli import main as cli_main

_create_app = control.app.create_app


async def _runtime(_request: web.Request) -> web.Response:
    return web.json_response({"tasks": len(asyncio.all_tasks()) - 1,  # not counting this request's own task
                              "threads": threading.active_count()})


async def _create_app_with_probe(*args: Any, **kwargs: Any) -> web.Application:
    app = await _create_app(*args, **kwargs)
    app.router.add_get("/_bench/runtime", _runtime)
    return app


def main(argv: list[str] | None = None) -> int:
    control.app.create_app = _create_app_with_probe  # control.cli imports it when serving
    return cli_main(argv)
