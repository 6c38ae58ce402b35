"""VF-ORG-ID on every /v1 call, and the one token validator with its reasons."""

from __future__ import annotations

import re

import jwt
import pytest

from control.app import build_services
from control.auth import token_secret
from control.config import Config
from control.errors import ApiError
from control.middleware import PUBLIC_V1
from tests.conftest import Api


def _v1_routes(api: Api) -> list[tuple[str, str]]:
    out = []
    for route in api.client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith("/v1/") and not path.startswith(PUBLIC_V1) and route.method != "HEAD":
            out.append((route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", "x", path)))
    return out


async def test_every_v1_route_needs_a_known_org(api: Api) -> None:
    routes = _v1_routes(api)
    assert len(routes) >= 12
    for method, path in routes:
        for headers in ({}, {"VF-ORG-ID": "llHUjznZtGuY6jXP"}, {"VF-ORG-ID": api.org.id.lower()}):
            resp = await api.client.request(method, path, headers=headers, json={})
            body = await resp.json()
            assert resp.status == 401, (method, path, headers)
            assert body == {"success": False, "message": "Unauthorized", "error": "UNAUTHORIZED",
                            "code": "UNAUTHORIZED", "status": 401}


async def test_openapi_is_public(api: Api) -> None:
    resp = await api.client.get("/v1/openapi.json")
    assert resp.status == 200


async def test_token_is_valid_until_it_expires(api: Api) -> None:
    data = await api.create_room()
    auth = api.svc.auth
    grant = await auth.validate(data["token"])
    assert (grant.claims.uid, grant.room.room_id, grant.participant.role) == ("teacher-1", "math-101", "TEACHER")
    api.clock.advance(3599)
    await auth.validate(data["token"])
    api.clock.advance(1)
    with pytest.raises(ApiError) as err:
        await auth.validate(data["token"])
    assert (err.value.status, err.value.code, err.value.message) == (401, "TOKEN_EXPIRED", "Token expired")


async def test_token_with_bad_signature_or_garbage_is_refused(api: Api) -> None:
    data = await api.create_room()
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    forged = jwt.encode({**claims, "role": "ADMIN"}, "an-attacker-guessed-this-secret-" * 2, algorithm="HS256")
    for token in (forged, "not-a-jwt", "", data["token"][:-3] + "abc",
                  jwt.encode(claims, "y" * 64, algorithm="HS384")):
        with pytest.raises(ApiError) as err:
            await api.svc.auth.validate(token)
        assert err.value.code == "INVALID_TOKEN", token
        assert err.value.status == 401
    # Signed with the server's own secret, with an expiry no integer holds: 401, not a 500 (OverflowError).
    endless = jwt.encode({**claims, "exp": float("inf")}, token_secret(api.svc.config), algorithm="HS256")
    with pytest.raises(ApiError) as err:
        await api.svc.auth.validate(endless)
    assert (err.value.status, err.value.code) == (401, "INVALID_TOKEN")


async def test_token_for_ended_room_or_removed_participant_is_refused(api: Api) -> None:
    await api.create_room()
    student = await api.join("math-101", "s1")
    await api.post("/v1/room/math-101/participants/s1/remove", {})
    with pytest.raises(ApiError) as err:
        await api.svc.auth.validate(student["token"])
    assert (err.value.status, err.value.code) == (403, "PARTICIPANT_REMOVED")
    teacher = await api.join("math-101", "teacher-1", "TEACHER")
    await api.delete("/v1/room/math-101")
    with pytest.raises(ApiError) as err:
        await api.svc.auth.validate(teacher["token"])
    assert (err.value.status, err.value.code) == (410, "ROOM_ENDED")


async def test_tokens_survive_a_restart(api: Api, config: Config) -> None:
    data = await api.create_room()
    svc2 = await build_services(config, api.clock)
    try:
        grant = await svc2.auth.validate(data["token"])
        assert grant.claims.uid == "teacher-1"
    finally:
        await svc2.store.close()
    assert (config.data_dir / "jwt-secret").stat().st_mode & 0o777 == 0o600


async def test_iframe_page_validates_the_token(api: Api) -> None:
    data = await api.create_room()
    resp = await api.client.get("/iframe/live", params={"token": data["token"]})
    assert resp.status == 200
    assert "Calculus I" in await resp.text()
    assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"]
    resp = await api.client.get("/iframe/live", params={"token": "garbage"})
    text = await resp.text()
    assert resp.status == 401 and "Cannot open this classroom" in text and "Traceback" not in text
    assert "segments" not in text and "/web/classroom.css" in text, "no library message; our stylesheet"
    api.clock.advance(7200)
    resp = await api.client.get("/iframe/live", params={"token": data["token"]})
    text = await resp.text()  # the page's own words, styled; the code is in the page for scripts
    assert resp.status == 401 and "This classroom link has expired" in text and 'data-state="TOKEN_EXPIRED"' in text


async def test_iframe_frame_ancestors_come_from_verified_domains(api: Api) -> None:
    await api.svc.store.add_domain(api.org.id, "school.example", api.clock.now_ms())
    data = await api.create_room()
    resp = await api.client.get("/iframe/live", params={"token": data["token"]})
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://school.example https://*.school.example" in csp


async def test_a_signed_tokens_error_page_may_show_in_the_schools_frame(api: Api) -> None:
    """The class ended or the token expired: the school's iframe shows our page saying so, not the browser's
    "refused to connect" (its frame-ancestors named only 'self'). A token we never signed still gets 'self'."""
    await api.svc.store.add_domain(api.org.id, "school.example", api.clock.now_ms())
    data = await api.create_room()
    assert (await api.delete("/v1/room/math-101"))[0] == 200
    resp = await api.client.get("/iframe/live", params={"token": data["token"]})
    assert resp.status == 410 and "ROOM_ENDED" in await resp.text()
    assert "frame-ancestors 'self' https://school.example https://*.school.example" in \
        resp.headers["Content-Security-Policy"]
    api.clock.advance(7200)  # past its time: still ours, so still the school's frame
    resp = await api.client.get("/iframe/live", params={"token": data["token"]})
    assert resp.status == 401 and "TOKEN_EXPIRED" in await resp.text()
    assert "https://school.example" in resp.headers["Content-Security-Policy"]
    forged = data["token"][:-4] + ("AAAA" if not data["token"].endswith("AAAA") else "BBBB")
    resp = await api.client.get("/iframe/live", params={"token": forged})
    assert resp.status == 401
    assert "frame-ancestors 'self';" in resp.headers["Content-Security-Policy"] + ";"
    assert "school.example" not in resp.headers["Content-Security-Policy"]
