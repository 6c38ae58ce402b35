"""Request middlewares: request id, the one-line request log, the error envelope, and VF-ORG-ID auth."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from control import strictjson, validation
from control.api.common import GRANT, ORG
from control.errors import ApiError, error_body, unauthorized
from control.services import SERVICES
from control.store.store import DATABASE_UNAVAILABLE

log = logging.getLogger("classcast.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# /v1 paths that authenticate otherwise (a participant token) or not at all.
PUBLIC_V1 = ("/v1/openapi.json", "/v1/rtc")
# /v1 paths a browser may call with `Authorization: Bearer <participant token>` instead of VF-ORG-ID, which must
# never reach a browser. The organization is then the token's.
BEARER_V1 = ("/v1/ai-tutor/", "/v1/whip/", "/v1/whep/")  # the last two: WHIP/WHEP (control/api/whip.py)
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HTTP_MESSAGES = {
    404: ("Not found", "NOT_FOUND"),
    405: ("Method not allowed", "METHOD_NOT_ALLOWED"),
    413: ("Request body too large", "PAYLOAD_TOO_LARGE"),
}


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    message, code = _HTTP_MESSAGES.get(exc.status, (exc.reason, f"HTTP_{exc.status}"))
    if exc.status == 413:
        message = f"{message} (limit {request.app[SERVICES].config.max_body_bytes} bytes)"
    resp = web.json_response(error_body(exc.status, message, code), status=exc.status, dumps=strictjson.dumps)
    if exc.status == 405 and "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if _RID_RE.fullmatch(incoming) else secrets.token_hex(8)
    started = time.perf_counter()
    validation.begin_request()  # warnings are per request, and keep-alive requests share one task
    try:
        resp = await handler(request)
    except ApiError as exc:
        resp = web.json_response(exc.body(), status=exc.status, dumps=strictjson.dumps, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _http_error(exc, request)
    except DATABASE_UNAVAILABLE as exc:
        # Locked (SQLite busy past its timeout) or unreachable (PostgreSQL): the request did nothing; say so and
        # when to try again, rather than a 500 that reads like a bug.
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:200],
                    extra={"rid": rid, "method": request.method, "path": request.path})
        resp = web.json_response(error_body(503, "The database is busy or unavailable; retry shortly",
                                            "DATABASE_UNAVAILABLE"), status=503, dumps=strictjson.dumps,
                                 headers={"Retry-After": "1"})
    except Exception:
        log.exception("unhandled error", extra={"rid": rid, "method": request.method, "path": request.path})
        resp = web.json_response(error_body(500, "Internal server error", "SERVER_ERROR"), status=500,
                                 dumps=strictjson.dumps)
    if not resp.prepared:
        resp.headers["X-Request-Id"] = rid
    org = request.get(ORG)
    log.info(
        "%s %s %d", request.method, request.path, resp.status,
        extra={
            "rid": rid, "method": request.method, "path": request.path, "status": resp.status,
            "ms": round((time.perf_counter() - started) * 1000, 2), "remote": request.remote,
            "org": org.id if org else None,
        },
    )
    return resp


@web.middleware
async def org_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /v1 REST call names its organization in VF-ORG-ID; missing or unknown is 401 `Unauthorized`.

    On BEARER_V1 paths a participant token does instead, checked by `Auth.validate` (the one validator) so it
    is refused there for the same reasons as everywhere: expiry, an ended room, a removed participant.
    """
    path = request.path
    if path.startswith("/v1/") and not path.startswith(PUBLIC_V1):
        bearer = _bearer(request)
        if bearer is not None and "VF-ORG-ID" not in request.headers and path.startswith(BEARER_V1):
            svc = request.app[SERVICES]
            grant = await svc.auth.validate(bearer)
            org = await svc.store.get_org(grant.claims.org_id)
            if org is None:
                raise unauthorized()
            request[ORG] = org
            request[GRANT] = grant
            return await handler(request)
        given = request.headers.getall("VF-ORG-ID", [])
        org_id = given[0].strip() if len(given) == 1 else ""  # two are ambiguous: neither is taken
        if not org_id or len(org_id) > 64 or not (org_id.isascii() and org_id.isprintable()):
            raise unauthorized()  # ids are printable ASCII; other bytes reach us as surrogates, unstorable
        org = await request.app[SERVICES].store.get_org(org_id)
        if org is None:
            raise unauthorized()
        request[ORG] = org
    return await handler(request)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
