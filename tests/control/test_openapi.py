"""The OpenAPI document matches the routes the server really has."""

from __future__ import annotations

import re

from tests.conftest import Api


def _app_routes(api: Api) -> set[tuple[str, str]]:
    routes = set()
    for route in api.client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith("/v1/") and route.method not in ("HEAD", "*") and path != "/v1/rtc":
            routes.add((route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    return routes


async def test_every_route_is_documented_and_nothing_else(api: Api) -> None:
    resp = await api.client.get("/v1/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert _app_routes(api) == documented


async def test_every_schema_reference_resolves(api: Api) -> None:
    doc = await (await api.client.get("/v1/openapi.json")).json()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(doc).replace("'", '"')))
    assert refs and refs <= set(doc["components"]["schemas"])


async def test_every_route_answers_as_the_document_says(api: Api) -> None:
    """Each route of the app, called once with the document's parameters and no body: the status is one the
    document lists for that operation, and a JSON reply validates against the schema it gives."""
    import jsonschema_rs

    doc = await (await api.client.get("/v1/openapi.json")).json()
    await api.create_room()
    values = {"roomId": "math-101", "uid": "teacher-1", "webhookId": "WH_none", "sessionId": "none"}
    checked = 0
    for method, path in sorted(_app_routes(api)):
        operation = doc["paths"][path][method]
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        resp = await api.client.request(method.upper(), url, headers={"VF-ORG-ID": api.org.id})
        status = str(resp.status)
        assert status in operation["responses"], (method, path, resp.status, await resp.text())
        content = operation["responses"][status].get("content", {})
        if resp.content_type == "application/json" and "application/json" in content:
            schema = {**content["application/json"]["schema"], "components": doc["components"]}
            jsonschema_rs.validate(schema, await resp.json())
        checked += 1
    assert checked == len(_app_routes(api)) >= 35
