"""REST calls that only the node hosting a room can carry out, forwarded to it.

Any node answers REST: most calls are the database's (rooms, tokens, listings) or reach the room's sockets through
the event bus (kick, mute, end). Starting and stopping a recording are not: the recorder takes its media from the
SFU of the node that hosts the class (control/placement.py). A node that receives one for a room another live
node hosts forwards the request there and relays the answer unchanged, so an integrator still calls one URL.
One hop only: a forwarded request (`FORWARDED` header) is served where it lands.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from control.errors import ApiError

log = logging.getLogger("classcast.cluster")

FORWARDED = "X-Classcast-Forwarded"  # the forwarding node's id
PASSED = ("VF-ORG-ID", "Authorization", "Content-Type", "X-Request-Id")
TIMEOUT_S = 30.0


async def socket_origins(app: web.Application) -> list[str]:
    """The ws(s):// origins of the other live nodes: the classroom page's CSP lets its WebSocket follow a REDIRECT
    there (with one node: none)."""
    from control.signaling import HUB

    hub = app[HUB]
    out = []
    for node in await hub.placement.nodes():
        url = urlsplit(node.url)
        if node.id != hub.node.id and url.scheme in ("http", "https") and url.netloc:
            out.append(f"{'wss' if url.scheme == 'https' else 'ws'}://{url.netloc}")
    return sorted(set(out))


async def to_host(request: web.Request, room_sid: str) -> web.Response | None:
    """The answer of the node hosting `room_sid` when that is another node; None when this node serves it (it is
    the host, nobody hosts the room, or the request was forwarded already)."""
    from control.signaling import HUB

    if FORWARDED in request.headers:
        return None
    hub = request.app[HUB]
    host = await hub.placement.host(room_sid)
    if host is None or host.id == hub.node.id:
        return None
    headers = {k: request.headers[k] for k in PASSED if k in request.headers} | {FORWARDED: hub.node.id}
    body = await request.read()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
            async with http.request(request.method, host.url + request.rel_url.path_qs, data=body,
                                    headers=headers) as reply:
                payload = await reply.read()
                return web.Response(status=reply.status, body=payload,
                                    content_type=reply.content_type or "application/json")
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not forward %s %s to node %s (%s): %s", request.method, request.path, host.id, host.url,
                    exc)
        raise ApiError(503, "The node hosting this class did not answer; try again shortly",
                       "NODE_UNAVAILABLE") from None
