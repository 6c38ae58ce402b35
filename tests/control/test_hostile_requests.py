"""Requests a probe of the API once answered wrongly: a body that arrives in pieces, a header's raw bytes, the
calendar's last day, a race past a limit, a stream's warnings, URLs no delivery could reach, values no JSON reader
takes back, and requests aiohttp's parser refuses. Each is a clear 4xx now, or the right answer, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from control.clock import FakeClock
from control.recordings import download
from tests.conftest import Api
from tests.control.tutor_fixtures import chat_body, make_api, tutor_config


async def _raw(api: Api, head: bytes, body: bytes = b"", split: int | None = None) -> tuple[int, bytes]:
    """One request written by hand on its own connection: `split` sends the body's first bytes, waits, then the
    rest (as a slow network delivers it). Returns the status and the response's body."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        if split is None:
            writer.write(head + body)
        else:
            writer.write(head + body[:split])
            await writer.drain()
            await asyncio.sleep(0.3)  # the server has read the first piece on its own by now
            writer.write(body[split:])
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


def _head(method: str, path: str, headers: dict[str, bytes | str], length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    if length is not None:
        lines += [b"Content-Type: application/json", f"Content-Length: {length}".encode()]
    lines += [name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
              for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# ---- bodies read whole --------------------------------------------------------------------------------------------

async def test_a_tutor_question_that_arrives_in_pieces_is_read_whole(tapi: Api) -> None:
    await tapi.create_room("math-101")
    body = json.dumps(chat_body(tapi)).encode()
    head = _head("POST", "/v1/ai-tutor/chat", {"VF-ORG-ID": tapi.org.id}, len(body))
    status, answer = await _raw(tapi, head, body, split=20)
    assert status == 200, answer
    assert "What does this equation mean?" in json.loads(answer)["text"]


async def test_a_large_tutor_body_under_its_limit_is_read_whole(tapi: Api) -> None:
    """2 MB of base64 (a long spoken question is about 5 MB) reaches the audio check, not a JSON error."""
    await tapi.create_room("math-101")
    body = {**chat_body(tapi), "audio": "A" * 2_000_000}
    del body["text"]
    status, answer = await tapi.post("/v1/ai-tutor/chat", body)
    assert status == 400 and answer["code"] == "BAD_AUDIO", answer


async def test_a_tutor_body_past_its_limit_is_413_with_or_without_a_length(aiohttp_client: Any, tmp_path: Path,
                                                                          clock: FakeClock) -> None:
    api = await make_api(aiohttp_client, tutor_config(tmp_path, max_body_bytes=4096), clock)
    big = json.dumps({**chat_body(api), "text": "x" * 8000}).encode()
    status, body = await api.post("/v1/ai-tutor/chat", json.loads(big))
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse early on
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    resp = await api.client.post("/v1/ai-tutor/chat", data=chunks(),
                                 headers={"VF-ORG-ID": api.org.id, "Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_logo_served_in_pieces_is_downloaded_whole(aiohttp_server: Any) -> None:
    png = bytes(range(256)) * 400  # 100 KiB

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(png)
        await resp.prepare(request)
        for i in range(0, len(png), 20_000):
            await resp.write(png[i:i + 20_000])
            await asyncio.sleep(0.05)
        return resp

    app = web.Application()
    app.router.add_get("/logo.png", slow)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}/logo.png"
    assert await download(url, 1 << 20, 10) == png
    with pytest.raises(ValueError, match="larger than"):
        await download(url, 50_000, 10)


# ---- headers' raw bytes ------------------------------------------------------------------------------------------

async def test_raw_bytes_in_the_organization_or_token_header_are_401(tapi: Api) -> None:
    status, body = await _raw(tapi, _head("GET", "/v1/billing/balance", {"VF-ORG-ID": b"\xe9"}))
    assert status == 401, body
    status, body = await _raw(tapi, _head("GET", "/v1/ai-tutor/usage/math-101", {"Authorization": b"Bearer \xe9"}))
    assert status == 401 and json.loads(body)["code"] == "INVALID_TOKEN", body


async def test_two_organization_headers_are_401_not_the_first_one(api: Api) -> None:
    other = await api.svc.store.create_org("Other School", 10, api.clock.now_ms())
    head = _head("GET", "/v1/billing/balance", {"VF-ORG-ID": api.org.id})
    status, body = await _raw(api, head.replace(b"\r\n\r\n", f"\r\nVF-ORG-ID: {other.id}\r\n\r\n".encode()))
    assert status == 401, body
    status, body = await _raw(api, head)
    assert status == 200, body


# ---- dates -------------------------------------------------------------------------------------------------------

async def test_the_calendars_last_day_is_a_validation_error(tapi: Api) -> None:
    await tapi.create_room("math-101")
    for dates, field in (({"startDate": "9999-12-31"}, "startDate"),
                         ({"startDate": "2026-01-01", "endDate": "9999-12-31"}, "endDate"),
                         ({"startDate": "9999-12-31T23:00:00-05:00"}, "startDate")):
        status, body = await tapi.post("/v1/participant/sessions", {"uid": "teacher-1", **dates})
        assert status == 400 and body["message"].startswith(f"Validation failed: {field} "), body
    status, body = await tapi.get("/v1/ai-agent/usage/summary?endDate=9999-12-31")
    assert status == 400 and "endDate" in body["message"], body


async def test_a_moment_with_an_offset_counts_in_its_utc_day(tapi: Api) -> None:
    await tapi.create_room("math-101")
    status, body = await tapi.post("/v1/participant/sessions",
                                   {"uid": "teacher-1", "startDate": "2026-12-04T23:00:00-05:00"})
    assert status == 200, body
    assert body["data"]["dateRange"] == {"startDate": "2026-12-05", "endDate": "2026-12-05"}


# ---- the webhook limit under a race ------------------------------------------------------------------------------

@pytest.mark.both_databases
async def test_concurrent_webhook_registrations_stop_at_the_limit(api: Api) -> None:
    results = await asyncio.gather(*(api.post("/v1/webhooks", {"url": f"http://127.0.0.1:9/r{i}"})
                                     for i in range(25)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 20 and statuses.count(409) == 5, statuses
    status, body = await api.get("/v1/webhooks")
    assert status == 200 and len(body["data"]["webhooks"]) == 20


# ---- warnings reach every answer ---------------------------------------------------------------------------------

async def test_the_tutors_answers_and_streams_carry_their_warnings(tapi: Api) -> None:
    await tapi.create_room("math-101")
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi, voiceName="alto"))
    assert status == 200 and any(w.startswith("voiceName ") for w in body["warnings"]), body

    resp = await tapi.client.post("/v1/ai-tutor/chat/stream", json=chat_body(tapi, voiceName="alto"),
                                  headers={"VF-ORG-ID": tapi.org.id})
    frames = (await resp.text()).split("\n\n")[:-1]
    first, rest = frames[0].split("\n"), frames[1:]
    assert first[0] == "event: warnings" and first[1].startswith("data: "), frames[0]
    assert json.loads(first[1][len("data: "):])["warnings"][0].startswith("voiceName ")
    assert all(f.startswith("data: ") for f in rest) and rest[-1] == "data: [DONE]"

    resp = await tapi.client.post("/v1/ai-agent/chat/stream", headers={"VF-ORG-ID": tapi.org.id},
                                  json={"chatId": "c1", "message": "hello", "voiceName": "alto"})
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert lines[0]["type"] == "warnings" and lines[0]["warnings"][0].startswith("voiceName ")
    assert lines[1]["type"] == "text" and lines[-1] == {"type": "done"}


# ---- webhook URLs ------------------------------------------------------------------------------------------------

async def test_webhook_urls_no_delivery_could_reach_are_refused(api: Api) -> None:
    for url, problem in (("http://127.0.0.1:99999/x", "port"), ("http://127.0.0.1:0/x", "port"),
                         ("http://127.0.0.1:9/a b", "spaces"), ("http://127.0.0.1:9/a\r\nX-Injected: 1", "spaces"),
                         ("http://127.0.0.1:9/\u0007", "control")):
        status, body = await api.post("/v1/webhooks", {"url": url})
        assert status == 400 and body["message"].startswith("Validation failed: url ") and problem in body["message"], \
            (url, body)


async def test_a_failed_test_delivery_says_what_failed(api: Api) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, ep = await api.post("/v1/webhooks", {"url": f"http://127.0.0.1:{port}/hook"})
    assert status == 201
    status, body = await api.post(f"/v1/webhooks/{ep['data']['id']}/test")
    assert status == 200 and body["data"]["delivered"] is False
    assert body["data"]["error"].startswith("ClientConnectorError: "), body


# ---- values the store could not give back as JSON ----------------------------------------------------------------

async def test_numbers_past_a_float_and_nul_characters_are_refused(api: Api) -> None:
    """PostgreSQL's text cannot hold a NUL, and `1e999` read as a float would be stored as `Infinity`, not JSON."""
    room = '{"roomId":"r","title":%s,"participant":{"uid":"u","name":"n","role":"TEACHER"%s}}'
    resp = await api.client.post("/v1/room/create", data=room % ('"t"', ',"metadata":{"x":1e999}'),
                                 headers={"VF-ORG-ID": api.org.id, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["code"] == "INVALID_JSON"
    base = {"roomId": "r", "title": "t", "participant": {"uid": "u", "name": "n", "role": "TEACHER"}}
    for change, field in (({"title": "a\u0000b"}, "title"), ({"roomDescription": "x\u0000"}, "roomDescription"),
                          ({"participant": {**base["participant"], "name": "\u0000"}}, "participant.name")):
        status, body = await api.post("/v1/room/create", {**base, **change})
        assert status == 400 and body["message"] == f"Validation failed: {field} must not contain NUL characters", \
            body
    status, body = await api.post("/v1/room/create", {**base, "title": "   "})
    assert status == 400 and body["message"] == "Validation failed: title is required"
    assert (await api.svc.store.get_room(api.org.id, "r")) is None
    status, body = await api.post("/v1/room/create", {**base, "unknownField\u0000": "x\u0000"})
    assert status == 200, body  # unknown fields are dropped, never stored: anything goes there


async def test_query_integers_are_ascii_digits(api: Api) -> None:
    for raw in ("%D9%A3", "1_0", "%201", "1%20", "+1", "0x10"):
        status, body = await api.get(f"/v1/rooms?limit={raw}")
        assert status == 400 and body["message"] == "Validation failed: limit must be an integer", (raw, body)
    status, body = await api.get("/v1/rooms?page=" + "9" * 4400)
    assert status == 400 and body["message"].startswith("Validation failed: page must be between"), body
    status, body = await api.get("/v1/rooms?limit=10&page=-1")
    assert status == 400 and body["message"].startswith("Validation failed: page must be between"), body
    status, body = await api.get("/v1/rooms?limit=10")
    assert status == 200, body


async def test_odd_download_signatures_are_403(api: Api) -> None:
    for query in ("expires=%C2%B2&sig=00", "expires=" + "9" * 5000 + "&sig=00", "expires=1&sig=%C3%A9",
                  "expires=99999999999&sig=" + "0" * 64):
        resp = await api.client.get(f"/recordings/RF_abcdefABCDEF?{query}")  # well formed, unknown
        assert resp.status == 403 and (await resp.json())["code"] == "INVALID_SIGNATURE", query


async def test_an_unknown_sdk_file_is_404(api: Api) -> None:
    for name in ("nope.js", "classcast.map"):
        resp = await api.client.get(f"/sdk/{name}")
        assert resp.status == 404 and (await resp.json())["code"] == "NOT_FOUND", name
    assert (await api.client.options("/sdk/nope.js")).status != 405  # preflights still answered


# ---- clear messages ----------------------------------------------------------------------------------------------

async def test_empty_lists_and_missing_questions_are_named_clearly(tapi: Api) -> None:
    resp = await tapi.client.delete("/v1/recordings", json={"ids": []}, headers={"VF-ORG-ID": tapi.org.id})
    body = await resp.json()
    assert resp.status == 400 and body["message"] == "Validation failed: ids must have at least 1 item", body
    status, body = await tapi.post("/v1/webhooks", {"url": "http://127.0.0.1:9/h", "events": []})
    assert status == 400 and body["message"] == "Validation failed: events must have at least 1 item", body
    resp = await tapi.client.post("/v1/ai-agent/chat/stream", json={"chatId": "c1"},
                                  headers={"VF-ORG-ID": tapi.org.id})
    body = await resp.json()
    assert resp.status == 400 and body["errors"] == {"message": "message or audio is required"}, body


async def test_requests_the_http_parser_refuses_log_one_info_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Anyone can send them: an ERROR with a traceback each would let any client fill the error log."""
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    status, _ = await _raw(api, _head("GET", "/v1/rooms?x=" + "a" * 9000, {"VF-ORG-ID": api.org.id}))
    assert status == 400
    status, _ = await _raw(api, _head("GET", "/v1/rooms", {"VF-ORG-ID": b"a\x00b"}))
    assert status == 400
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 2 and all(r.levelno == logging.INFO and not r.exc_info for r in records), records
    assert all(r.getMessage().startswith("malformed HTTP request from ") for r in records)
    assert all(len(r.getMessage()) < 400 for r in records)  # the 9000 bytes are not echoed
