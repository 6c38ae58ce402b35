"""GET /iframe/live?token=...: the classroom page behind `iframeUrl`.

The token is validated by the one validator (`Auth.validate`); a bad token gets a readable page, never a trace.
The page's frame-ancestors come from the organization's verified domains.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from control.errors import ApiError
from control.services import SERVICES
from control.store.records import Org


def frame_ancestors(org: Org | None) -> str:
    """'self' plus each verified domain and its subdomains over https; only 'self' when none are verified."""
    sources = ["'self'"]
    for domain in org.domains if org else []:
        sources += [f"https://{domain}", f"https://*.{domain}"]
    return " ".join(sources)


def _headers(org: Org | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
            f"connect-src 'self'; media-src 'self' blob:; frame-ancestors {frame_ancestors(org)}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head><body><main>{body}</main></body></html>"
    )


async def iframe_live(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    token = request.query.get("token", "")
    try:
        grant = await svc.auth.validate(token)
    except ApiError as exc:
        body = f"<h1>Cannot open this classroom</h1><p>{html.escape(exc.message)}</p>"
        return web.Response(text=_page("Classroom unavailable", body), status=exc.status, content_type="text/html",
                            headers=_headers(None))
    org = await svc.store.get_org(grant.room.org_id)
    body = (
        f"<h1>{html.escape(grant.room.title)}</h1>"
        f"<p>Signed in as {html.escape(grant.participant.name)} ({html.escape(grant.participant.role)}).</p>"
    )
    return web.Response(text=_page(grant.room.title, body), content_type="text/html", headers=_headers(org))


STATIC = Path(__file__).parent / "static"


async def sdk(_request: web.Request) -> web.Response:
    """The browser SDK: one ES module, no build step."""
    return web.Response(body=(STATIC / "classcast.js").read_bytes(), content_type="application/javascript",
                        charset="utf-8", headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def setup(app: web.Application) -> None:
    app.router.add_get("/iframe/live", iframe_live)
    app.router.add_get("/sdk/classcast.js", sdk)
