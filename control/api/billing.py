"""Billing balance (reference 2.11, prepaid form)."""

from __future__ import annotations

from aiohttp import web

from control.api.common import ok, org, services


async def balance(request: web.Request) -> web.Response:
    return ok(services(request).classroom.balance(org(request)), "Balance retrieved successfully")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/billing/balance", balance)
