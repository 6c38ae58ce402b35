"""Webhook endpoints of the organization (issue 17): `POST/GET/DELETE /v1/webhooks`, deliveries, a test send.

The secret is in the creation reply only: it signs every delivery (Standard Webhooks), so whoever reads the list
later must not learn it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from control import validation as v
from control.api import models
from control.api.common import ok, org, query_int, services
from control.clock import iso
from control.errors import ApiError
from control.ids import new_id
from control.store.webhooks import Delivery, Endpoint, WebhookStore
from control.webhooks import EVENT_TYPES
from control.webhooks.dispatcher import Dispatcher
from control.webhooks.signing import new_secret

DISPATCHER = web.AppKey("webhook_dispatcher", Dispatcher)
MAX_ENDPOINTS = 20


def endpoint_json(ep: Endpoint) -> dict[str, Any]:
    return {"id": ep.id, "url": ep.url, "events": list(ep.events), "description": ep.description,
            "createdAt": iso(ep.created_at)}


def _db(request: web.Request) -> WebhookStore:
    return WebhookStore(services(request).store)


async def create(request: web.Request) -> web.Response:
    body = v.parse(models.WebhookCreate, await v.read_json(request))
    url, description = body.url, body.description
    events = list(dict.fromkeys(body.events)) if body.events is not None else list(EVENT_TYPES)
    ep = await _db(request).create_endpoint(org(request).id, url, new_secret(), events, description,
                                            services(request).clock.now_ms(), limit=MAX_ENDPOINTS)
    if ep is None:
        raise ApiError(409, f"An organization may register at most {MAX_ENDPOINTS} webhook endpoints",
                       "TOO_MANY_WEBHOOKS")
    return ok({**endpoint_json(ep), "secret": ep.secret},
              message="Webhook endpoint created. Keep the secret: it is shown only now.", status=201)


async def list_(request: web.Request) -> web.Response:
    return ok({"webhooks": [endpoint_json(ep) for ep in await _db(request).endpoints(org(request).id)]})


async def _endpoint(request: web.Request) -> Endpoint:
    ep = await _db(request).get_endpoint(org(request).id, request.match_info["webhookId"])
    if ep is None:
        raise ApiError(404, "Webhook endpoint not found", "WEBHOOK_NOT_FOUND")
    return ep


async def delete(request: web.Request) -> web.Response:
    ep = await _endpoint(request)
    await _db(request).delete_endpoint(org(request).id, ep.id)
    return ok({"id": ep.id, "deleted": True})


async def deliveries(request: web.Request) -> web.Response:
    ep = await _endpoint(request)
    limit = query_int(request, "limit", default=50, minimum=1, maximum=500)
    rows = await _db(request).deliveries(org(request).id, ep.id, limit)
    return ok({"deliveries": [{
        "id": r["id"], "eventId": r["event_id"], "type": r["type"], "status": r["status"],
        "attempts": r["attempts"], "lastStatus": r["last_status"], "lastError": r["last_error"],
        "nextAttemptAt": iso(r["next_attempt_at"]) if r["status"] == "pending" else None,
        "waitingFor": r["waiting_for"],
        "deliveredAt": iso(r["delivered_at"]), "createdAt": iso(r["created_at"]),
    } for r in rows]})


async def test(request: web.Request) -> web.Response:
    """One signed `webhook_test` POST now, outside the outbox; the reply says what the receiver answered."""
    ep = await _endpoint(request)
    now = services(request).clock.now_ms()
    event_id = new_id("msg_")
    payload = json.dumps({"type": "webhook_test", "timestamp": iso(now),
                          "data": {"webhookId": ep.id, "orgId": ep.org_id}}, separators=(",", ":"))
    delivery = Delivery(id="", event_id=event_id, endpoint_id=ep.id, url=ep.url, secret=ep.secret, payload=payload,
                        attempts=0, created_at=now, next_attempt_at=now)
    status, error = await request.app[DISPATCHER].attempt_once(delivery)
    return ok({"id": ep.id, "eventId": event_id, "delivered": error is None, "status": status, "error": error})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/webhooks", create)
    r.add_get("/v1/webhooks", list_)
    r.add_delete("/v1/webhooks/{webhookId}", delete)
    r.add_get("/v1/webhooks/{webhookId}/deliveries", deliveries)
    r.add_post("/v1/webhooks/{webhookId}/test", test)
