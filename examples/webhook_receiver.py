"""A classcast webhook receiver for an integrator's backend: verify, deduplicate, acknowledge fast.

    pip install aiohttp standardwebhooks
    CLASSCAST_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py   # listens on 127.0.0.1:9000/classcast

Register it with `classcast webhooks add http://127.0.0.1:9000/classcast` (or `POST /v1/webhooks`), which prints the
secret once. classcast delivers each event at least once, in order per room, under a stable `webhook-id`: answer
2xx only once the event is stored, and ignore an id already seen.
"""

from __future__ import annotations

import json
import os

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

SEEN = web.AppKey("seen", set)
EVENTS = web.AppKey("events", list)


def make_app(secret: str) -> web.Application:
    verifier = Webhook(secret)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = verifier.verify(body, dict(request.headers))  # signature and a timestamp within 5 minutes
        except WebhookVerificationError:
            return web.Response(status=400, text="bad signature")
        event_id = request.headers["webhook-id"]
        if event_id not in request.app[SEEN]:  # a retry of an event already stored
            request.app[SEEN].add(event_id)
            request.app[EVENTS].append(event)  # a real backend writes it to its database here
            print(json.dumps({"id": event_id, "type": event["type"], "room": event["data"].get("roomId")}))
        return web.Response(status=204)

    app = web.Application()
    app[SEEN] = set()
    app[EVENTS] = []
    app.router.add_post("/classcast", receive)
    return app


if __name__ == "__main__":
    web.run_app(make_app(os.environ["CLASSCAST_WEBHOOK_SECRET"]), host="127.0.0.1", port=9000)
