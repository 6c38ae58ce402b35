"""CORS for the /v1 endpoints a browser calls with a participant token (the AI tutor, WHIP, WHEP).

Everything else under /v1 takes the organization's id, which must never reach a browser, so it gets no CORS at
all. A preflight carries no credentials, so it cannot tell which organization will be asked: it is answered for any
origin, and the real response is readable by the page only when its origin is one of the token's organization's
verified domains (or a subdomain of one), over https. Headers are added in `on_response_prepare` so streamed
answers (the tutor's SSE and NDJSON) get them too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from control.api.common import ORG
from control.middleware import BEARER_V1, Handler

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, X-Request-Id"
# WHIP/WHEP clients read Location (the session), ETag (ICE restarts), Link (ICE servers); everyone Retry-After.
EXPOSE_HEADERS = "Location, ETag, Link, Retry-After, X-Request-Id, Accept-Patch"


def origin_allowed(origin: str, domains: list[str]) -> bool:
    """https://<domain> or https://<anything>.<domain> for a verified domain; nothing else."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return False
    return any(host == d.lower() or host.endswith("." + d.lower()) for d in domains)


def _browser_path(path: str) -> bool:
    return path.startswith(BEARER_V1)


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers and _browser_path(request.path)):
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": request.headers["Origin"], "Vary": "Origin",
            "Access-Control-Allow-Methods": ALLOW_METHODS, "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": "600",
        })
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.headers.get("Origin")
    if origin is None or not _browser_path(request.path):
        return
    org = request.get(ORG)
    response.headers.add("Vary", "Origin")
    if org is not None and origin_allowed(origin, org.domains):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(add_cors_headers)
