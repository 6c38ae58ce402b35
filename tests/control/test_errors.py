"""Bad input of every kind gets a clear 4xx in the error envelope, never a 500."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import Api

ENVELOPE_KEYS = {"success", "message", "error", "code", "status"}


async def _raw(api: Api, method: str, path: str, data: bytes | str, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    resp = await api.client.request(method, path, data=data,
                                    headers={"VF-ORG-ID": api.org.id, "Content-Type": content_type})
    return resp.status, await resp.json(), resp


async def test_malformed_json(api: Api) -> None:
    for payload in ('{"roomId": ', "[1, 2]", '"just a string"', "nul", b"\xff\xfe{"):
        status, body, _ = await _raw(api, "POST", "/v1/room/create", payload)
        assert status == 400, payload
        assert set(body) >= ENVELOPE_KEYS and body["success"] is False and body["status"] == 400


async def test_missing_body(api: Api) -> None:
    status, body, _ = await _raw(api, "POST", "/v1/room/create", b"")
    assert status == 400 and body["message"] == "Validation failed: request body is required"


async def test_wrong_types_are_named(api: Api) -> None:
    cases = [
        ({"roomId": 5, "title": "t", "participant": {"uid": "u", "name": "n", "role": "TEACHER"}}, "roomId"),
        ({"roomId": "r", "title": ["t"], "participant": {"uid": "u", "name": "n", "role": "TEACHER"}}, "title"),
        ({"roomId": "r", "title": "t", "participant": "teacher"}, "participant"),
        ({"roomId": "r", "title": "t", "participant": {"uid": "u", "name": "n", "role": "TEACHER"},
          "customization": {"needChat": "no"}}, "customization.needChat"),
        ({"roomId": "r", "title": "t", "participant": {"uid": "u", "name": "n", "role": "TEACHER"},
          "settings": {"emptyTimeout": True}}, "settings.emptyTimeout"),
        ({"roomId": "r", "title": "t", "participant": {"uid": "u", "name": "n", "role": 1}}, "participant.role"),
        ({"roomId": "r", "title": "t", "participant": {"uid": "u", "name": "n", "role": "TEACHER",
                                                       "photoURL": "javascript:alert(1)"}}, "participant.photoURL"),
    ]
    for payload, field in cases:
        status, body = await api.post("/v1/room/create", payload)
        assert status == 400, payload
        assert body["message"].startswith(f"Validation failed: {field} "), body["message"]
        assert body["code"] == "VALIDATION_ERROR" and field in body["errors"]


async def test_unknown_fields_are_ignored_and_logged_at_debug(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """The hosted service's SDKs send fields we do not know (participant.email): change only the base URL."""
    caplog.set_level(logging.DEBUG, logger="classcast.validation")
    status, body = await api.post("/v1/room/create", {
        "roomId": "r", "title": "t", "tittle": "x", "customization": {"showLobby": False, "sparkles": True},
        "participant": {"uid": "u", "name": "n", "role": "TEACHER", "email": "u@school.example"}})
    assert status == 200 and body["success"] is True and "warnings" not in body
    logged = caplog.text
    for name in ("tittle", "participant.email", "customization.sparkles"):
        assert f"ignored unknown request field {name}" in logged
    status, body = await api.get("/v1/room/r/status")
    assert status == 200 and body["data"]["title"] == "t"


async def test_known_unsupported_fields_are_accepted_with_a_warning(api: Api) -> None:
    status, body = await api.post("/v1/room/create", {
        "roomId": "r", "title": "t", "allowedDomains": ["school.example"],
        "participant": {"uid": "u", "name": "n", "role": "TEACHER"}})
    assert status == 200 and body["data"]["token"]
    assert body["warnings"] == ["allowedDomains is not supported and was ignored: embedding is allowed for the "
                                "organization's verified domains, not per room"]
    status, body = await api.post("/v1/room/r/join", {
        "participant": {"uid": "s", "name": "s", "role": "STUDENT"},
        "customization": {"allowedDomains": ["x.example"], "needChat": False}})
    assert status == 200 and [w.split(" ")[0] for w in body["warnings"]] == ["customization.allowedDomains"]
    status, body = await api.get("/v1/room/r/status")  # the next request on the connection has none
    assert status == 200 and "warnings" not in body


async def test_sdk_only_fields_are_accepted(api: Api) -> None:
    status, body = await api.post("/v1/room/create", {
        "roomId": "r", "title": "t", "description": "d", "settings": {"autoClose": False},
        "participant": {"uid": "u", "name": "n", "role": "TEACHER", "photoUrl": "https://x.example/p.png",
                        "metadata": {"grade": 7}}})
    assert status == 200, body


async def test_identifier_patterns(api: Api) -> None:
    base = {"title": "t", "participant": {"uid": "u", "name": "n", "role": "TEACHER"}}
    for room_id in ("math 101", "math/101", "x" * 129, "", "ünï"):
        status, body = await api.post("/v1/room/create", {"roomId": room_id, **base})
        assert status == 400, room_id
    status, body = await api.get("/v1/room/math.101/status")
    assert status == 400 and body["message"].startswith("Validation failed: roomId")
    for uid in ("a b", "<script>", "x" * 129):
        status, body = await api.post("/v1/room/create", {"roomId": "ok", "title": "t",
                                                          "participant": {"uid": uid, "name": "n", "role": "TEACHER"}})
        assert status == 400 and "participant.uid" in body["message"], uid
    for i, uid in enumerate(("user@example.com", "auth0|123", "2f1c-uuid_like.9")):
        status, body = await api.post("/v1/room/create", {"roomId": f"ok-{i}", "title": "t",
                                                          "participant": {"uid": uid, "name": "n", "role": "TEACHER"}})
        assert status == 200, uid


async def test_huge_body_is_refused(api: Api) -> None:
    payload = '{"roomId": "r", "title": "' + "x" * 200_000 + '"}'
    status, body, _ = await _raw(api, "POST", "/v1/room/create", payload)
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE" and body["success"] is False
    assert "65536" in body["message"]


async def test_unknown_route_and_method(api: Api) -> None:
    status, body = await api.get("/v1/nothing-here")
    assert status == 404 and body["success"] is False
    resp = await api.client.put("/v1/room/create", headers={"VF-ORG-ID": api.org.id})
    body = await resp.json()
    assert resp.status == 405 and body["code"] == "METHOD_NOT_ALLOWED"


async def test_every_response_has_a_request_id(api: Api) -> None:
    resp = await api.client.get("/v1/billing/balance", headers={"VF-ORG-ID": api.org.id, "X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    resp = await api.client.get("/v1/billing/balance")
    assert len(resp.headers["X-Request-Id"]) == 16
