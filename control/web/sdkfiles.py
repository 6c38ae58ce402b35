"""The browser SDK package (control/web/sdk/) served over HTTP.

`/sdk/classcast.js` is the current SDK, revalidated on every load (`no-cache`), for pages that always want the
server's own version. `/sdk/classcast-<version>.js` is the same bytes under a name that never changes meaning, so it
is cached for a year (`immutable`); any other version is 404 rather than a silently different SDK. Both answer
`Access-Control-Allow-Origin: *`: a module script from another origin is fetched in CORS mode, and the SDK holds no
secret (the join token it is given does). `/sdk/classcast.d.ts` serves the declarations when the package was built.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from control.errors import ApiError

SDK_DIR = Path(__file__).parent / "sdk"
SDK_FILE = SDK_DIR / "classcast.js"
TYPES_FILE = SDK_DIR / "dist" / "classcast.d.ts"
SDK_VERSION: str = json.loads((SDK_DIR / "package.json").read_text())["version"]
IMMUTABLE = "public, max-age=31536000, immutable"
CORS_ANY = {"Access-Control-Allow-Origin": "*", "Cross-Origin-Resource-Policy": "cross-origin"}


def _file(path: Path, content_type: str, cache: str) -> web.Response:
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff", **CORS_ANY})


async def sdk(_request: web.Request) -> web.Response:
    return _file(SDK_FILE, "application/javascript", "no-cache")


async def sdk_versioned(request: web.Request) -> web.Response:
    if request.match_info["version"] != SDK_VERSION:
        raise web.HTTPNotFound()
    return _file(SDK_FILE, "application/javascript", IMMUTABLE)


async def sdk_types(_request: web.Request) -> web.Response:
    return _file(TYPES_FILE, "application/typescript", "no-cache")


async def preflight(_request: web.Request) -> web.Response:
    """A cross-origin module load sends no preflight today, but a page may fetch the file with custom headers."""
    return web.Response(status=204, headers={**CORS_ANY, "Access-Control-Allow-Methods": "GET, HEAD",
                                             "Access-Control-Allow-Headers": "*", "Access-Control-Max-Age": "86400"})


async def unknown(request: web.Request) -> web.Response:
    raise ApiError(404, "No such SDK file: /sdk/classcast.js, /sdk/classcast.d.ts or /sdk/classcast-<version>.js",
                   "NOT_FOUND")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/sdk/classcast.js", sdk)
    r.add_get("/sdk/classcast.d.ts", sdk_types)
    r.add_get(r"/sdk/classcast-{version:[0-9A-Za-z.+-]+}.js", sdk_versioned)
    r.add_get("/sdk/{name}", unknown)  # after the files: any other name is 404, not the OPTIONS route's 405
    r.add_route("OPTIONS", "/sdk/{name}", preflight)
