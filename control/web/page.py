"""GET /iframe/live?token=...: the classroom page behind `iframeUrl`.

The token is validated by the one validator (`Auth.validate`); a bad token gets a readable page, never a trace.
The page's frame-ancestors come from the organization's verified domains.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from control import cluster
from control.auth import Grant
from control.errors import ApiError
from control.roles import Role, permissions
from control.services import SERVICES
from control.store.records import Org
from control.validation import effective_customization


def frame_ancestors(org: Org | None) -> str:
    """'self' plus each verified domain and its subdomains over https; only 'self' when none are verified."""
    sources = ["'self'"]
    for domain in org.domains if org else []:
        sources += [f"https://{domain}", f"https://*.{domain}"]
    return " ".join(sources)


def _headers(org: Org | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data: blob:; "
            f"connect-src 'self'; media-src 'self' blob: mediastream:; frame-ancestors {frame_ancestors(org)}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


# What a person opening a classroom link is told, by the validator's error code: our words, never a library's.
ERROR_MESSAGES = {
    "TOKEN_EXPIRED": ("This classroom link has expired", "Links to a class are valid for a limited time. Ask your "
                      "school or teacher for a new one."),
    "ROOM_ENDED": ("The class has ended", "This class is over. Thank you for taking part."),
    "PARTICIPANT_REMOVED": ("You were removed from this class", "A teacher or moderator removed you. Contact them "
                            "if you think this is a mistake."),
    "ROOM_NOT_FOUND": ("This class does not exist", "The link points to a class that was never created or was "
                       "deleted. Check the link you were given."),
}
INVALID_LINK = ("Cannot open this classroom", "This classroom link is not valid. Open the link you were given again, "
                "or ask for a new one.")


def _error_page(code: str) -> str:
    title, message = ERROR_MESSAGES.get(code, INVALID_LINK)
    return (
        "<!doctype html><html lang=\"en\" data-theme=\"system\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><link rel=\"stylesheet\" href=\"/web/classroom.css\"></head>"
        f"<body class=\"error-page\"><main id=\"terminal\" class=\"terminal error\" data-state=\"{html.escape(code)}\">"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></main></body></html>"
    )


def _config_json(grant: Grant, org: Org | None, perms: list[str], customization: dict[str, Any]) -> str:
    """The page's configuration as a JSON data block (not a script: the CSP allows no inline scripts).

    The organization id never reaches the browser; the page authenticates with its participant token only.
    """
    config = {
        "room": {"roomId": grant.room.room_id, "title": grant.room.title, "description": grant.room.description},
        "participant": {"uid": grant.participant.uid, "name": grant.participant.name, "role": grant.participant.role,
                        "photoURL": grant.participant.photo_url},
        "permissions": perms,
        "customization": customization,
        "branding": {"name": org.name if org else None, "logoUrl": org.logo_url if org else None,
                     "primaryColor": org.primary_color if org else None,
                     "accentColor": org.accent_color if org else None},
    }
    # "<" escaped so that no value can close the data block.
    return json.dumps(config).replace("<", "\\u003c")


async def iframe_live(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    token = request.query.get("token", "")
    try:
        grant = await svc.auth.validate(token)
    except ApiError as exc:
        # A token we signed (a class that ended, a participant removed, a token past its time) names its
        # organization: its page in the school's iframe may then be shown there, with its message, instead of
        # the browser's "refused to connect". A token we did not sign gets 'self' only.
        try:
            signed_org = await svc.store.get_org(svc.auth.signed_claims(token).org_id)
        except ApiError:
            signed_org = None
        return web.Response(text=_error_page(exc.code), status=exc.status, content_type="text/html",
                            headers=_headers(signed_org))
    org = await svc.store.get_org(grant.room.org_id)
    customization = effective_customization(grant.room.customization, grant.participant.customization)
    perms = sorted(p.value for p in permissions(Role(grant.participant.role), customization))
    theme = customization.get("theme", "system")
    page = (CLASSROOM_HTML
            .replace("{{title}}", html.escape(grant.room.title))
            .replace("{{theme}}", html.escape(str(theme)))
            .replace("{{config}}", _config_json(grant, org, perms, customization)))
    headers = _headers(org if customization.get("validateDomain", True) else None)
    if not customization.get("validateDomain", True):
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            f"frame-ancestors {frame_ancestors(None)}", "frame-ancestors *")
    others = await cluster.socket_origins(request.app)  # several nodes: the WebSocket may be redirected there
    if others:
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "connect-src 'self'", "connect-src 'self' " + " ".join(others))
    return web.Response(text=page, content_type="text/html", headers=headers)


CLASSROOM_HTML = """<!doctype html>
<html lang="en" data-theme="{{theme}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<link rel="stylesheet" href="/web/classroom.css">
<script type="application/json" id="classcast-config">{{config}}</script>
<script type="module" src="/web/classroom.js"></script>
</head>
<body>
<div id="app" class="app"><p class="loading">Loading the classroom…</p></div>
</body>
</html>
"""

STATIC = Path(__file__).parent / "static"
WEB_ASSETS = {"classroom.js": "application/javascript", "classroom.css": "text/css"}


async def asset(request: web.Request) -> web.Response:
    """The classroom page's own files: a fixed list, so no request can name anything else on disk."""
    name = request.match_info["name"]
    if name not in WEB_ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=WEB_ASSETS[name], charset="utf-8",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def setup(app: web.Application) -> None:
    app.router.add_get("/iframe/live", iframe_live)
    app.router.add_get("/web/{name}", asset)
