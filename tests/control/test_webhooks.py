"""Webhooks in one process: the REST endpoints, the outbox written with the change it announces, signed
deliveries (verified with the `standardwebhooks` package, the receiver's side), retries in order per room.

The receiver that is down, slow, failing and then fine across a real server restart is
tests/control/test_webhooks_restart.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select
from standardwebhooks import Webhook

from control.api.webhooks import DISPATCHER
from control.clock import iso
from control.store import schema as t
from control.store.webhooks import Delivery, WebhookStore
from control.webhooks import EVENT_TYPES
from control.webhooks.dispatcher import Dispatcher
from tests.conftest import Api

pytestmark = pytest.mark.both_databases  # and the store under them: SQLite and PostgreSQL

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"


class Receiver:
    """A real HTTP receiver on 127.0.0.1 answering with the status it is told to."""

    def __init__(self) -> None:
        self.status = 200
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() of each request, taken by the receiver itself
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            self.arrived.append(time.monotonic())
            self.got.append((dict(request.headers), body))
            return web.Response(status=self.status)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    assert r.runner is not None
    await r.runner.cleanup()


async def _register(api: Api, url: str, events: list[str] | None = None) -> dict[str, Any]:
    status, body = await api.post("/v1/webhooks", {"url": url, **({"events": events} if events else {})})
    assert status == 201, body
    return body["data"]


async def _outbox_types(api: Api) -> list[tuple[str, str]]:
    async with api.svc.store.engine.connect() as conn:
        rows = await conn.execute(select(t.webhook_events.c.type, t.webhook_deliveries.c.status)
                                  .join(t.webhook_deliveries, t.webhook_deliveries.c.event_id == t.webhook_events.c.id)
                                  .order_by(t.webhook_events.c.seq))
        return [(r[0], r[1]) for r in rows]


async def test_endpoints_rest(api: Api) -> None:
    created = await _register(api, "https://hooks.example.test/classcast", ["room_started", "room_finished"])
    assert created["secret"].startswith("whsec_") and created["events"] == ["room_started", "room_finished"]
    status, body = await api.get("/v1/webhooks")
    assert status == 200
    [listed] = body["data"]["webhooks"]
    assert listed["id"] == created["id"] and "secret" not in listed  # shown once
    everything = await _register(api, "http://127.0.0.1:9/x")
    assert everything["events"] == list(EVENT_TYPES)

    for bad, field in (({"url": "ftp://x.test/a"}, "url"), ({"url": "https://x.test", "events": ["nope"]}, "events"),
                       ({"url": "https://x.test", "events": []}, "events"), ({}, "url")):
        status, body = await api.post("/v1/webhooks", bad)
        assert status == 400 and field in body["message"], body
    # A secret of one's own is a known field we do not take: accepted, said so, and the server's secret is used.
    status, body = await api.post("/v1/webhooks", {"url": "https://x.test", "secret": "mine"})
    assert status == 201 and body["warnings"][0].startswith("secret is not supported and was ignored")
    assert body["data"]["secret"] != "mine"
    status, _ = await api.delete(f"/v1/webhooks/{body['data']['id']}")
    assert status == 200

    resp = await api.client.get("/v1/webhooks")  # no VF-ORG-ID
    assert resp.status == 401
    other = await api.svc.store.create_org("Other School", 0, api.clock.now_ms())
    status, body = await api.get("/v1/webhooks", headers={"VF-ORG-ID": other.id})
    assert body["data"]["webhooks"] == []
    status, _ = await api.delete(f"/v1/webhooks/{created['id']}", headers={"VF-ORG-ID": other.id})
    assert status == 404  # another organization's endpoint does not exist for it

    status, body = await api.delete(f"/v1/webhooks/{created['id']}")
    assert status == 200 and body["data"]["deleted"] is True
    status, _ = await api.delete(f"/v1/webhooks/{created['id']}")
    assert status == 404
    assert [w["id"] for w in (await api.get("/v1/webhooks"))[1]["data"]["webhooks"]] == [everything["id"]]


async def test_outbox_rows_commit_with_the_change(api: Api) -> None:
    await _register(api, "http://127.0.0.1:9/hook")
    await _register(api, "http://127.0.0.1:9/only-rooms", ["room_started", "room_finished"])
    await api.create_room("algebra")
    await api.join("algebra", "s1")
    room = await api.room("algebra")
    c = api.svc.classroom
    await c.open_session(room.sid, "teacher-1")
    student = await c.open_session(room.sid, "s1")
    again = await c.open_session(room.sid, "s1")  # a second tab: not a second join
    await c.close_session(again.id)
    await c.close_session(student.id)
    await c.end_room(await api.room("algebra"), "ended_by_api")
    with pytest.raises(Exception, match="ended"):
        await c.end_room(await api.room("algebra"), "ended_by_api")  # refused: writes no second room_finished

    types = [ty for ty, _ in await _outbox_types(api)]
    assert types == ["room_started", "room_started", "participant_joined", "participant_joined",
                     "participant_left", "participant_left", "room_finished", "room_finished"]

    # A transaction that fails writes neither the change nor its event.
    db = WebhookStore(api.svc.store)
    before = len(await _outbox_types(api))
    with pytest.raises(RuntimeError):
        async with api.svc.store.atomic():
            await api.svc.store.update_room(room.sid, title="changed")
            await c.outbox.record("room_started", api.org.id, {"roomId": "x"}, room_sid=room.sid)
            raise RuntimeError("the change failed")
    assert len(await _outbox_types(api)) == before
    assert (await api.room("algebra")).title != "changed"
    assert (await db.counts()) == {"pending": 8}


async def test_signed_deliveries_retry_in_order(api: Api, receiver: Receiver) -> None:
    ep = await _register(api, receiver.url)
    await api.create_room("algebra")
    room = await api.room("algebra")
    dispatcher: Dispatcher = api.client.app[DISPATCHER]
    receiver.status = 500
    await api.svc.classroom.open_session(room.sid, "teacher-1")  # room_started, participant_joined

    async def send_and_settle() -> int:
        started = await dispatcher.send_due()
        await dispatcher.settle()
        return started

    assert await send_and_settle() == 1  # only the room's first event: the second waits behind it
    assert len(receiver.got) == 1
    rows = await WebhookStore(api.svc.store).deliveries(api.org.id, ep["id"])
    first = next(r for r in rows if r["type"] == "room_started")
    assert first["status"] == "pending" and first["attempts"] == 1 and first["last_status"] == 500
    assert first["next_attempt_at"] > api.clock.now_ms()
    assert await send_and_settle() == 0  # not due yet
    # The listing says why the second has not gone: it waits for the first, and cannot go before the first's retry
    # (its own next attempt, the time it was queued, read as "due now").
    status, body = await api.get(f"/v1/webhooks/{ep['id']}/deliveries")
    assert status == 200, body
    listed = {d["type"]: d for d in body["data"]["deliveries"]}
    assert listed["room_started"]["waitingFor"] is None
    assert listed["participant_joined"]["waitingFor"] == listed["room_started"]["id"]
    assert listed["participant_joined"]["nextAttemptAt"] == listed["room_started"]["nextAttemptAt"]
    assert listed["room_started"]["nextAttemptAt"] == iso(first["next_attempt_at"])

    receiver.status = 200
    api.clock.advance(api.svc.config.webhooks.retry_base_s * 1.2)
    assert await send_and_settle() == 1
    assert await send_and_settle() == 1
    assert await send_and_settle() == 0
    wh = Webhook(ep["secret"])
    ids, types = [], []
    for headers, body in receiver.got:
        payload = wh.verify(body, headers)  # raises on a bad signature or a stale timestamp
        ids.append(headers["webhook-id"])
        types.append(payload["type"])
        assert payload["data"]["roomId"] == "algebra" and payload["data"]["roomSid"] == room.sid
    assert types == ["room_started", "room_started", "participant_joined"]
    assert ids[0] == ids[1] != ids[2]  # a retry carries the same id
    with pytest.raises(Exception):  # noqa: B017 - the package's own verification error
        Webhook("whsec_" + "A" * 44).verify(receiver.got[0][1], receiver.got[0][0])
    joined = json.loads(receiver.got[2][1])["data"]["participant"]
    assert joined["uid"] == "teacher-1" and joined["role"] == "TEACHER"


async def test_gives_up_after_the_window_and_moves_on(api: Api, receiver: Receiver) -> None:
    await _register(api, receiver.url, ["room_started", "room_finished"])
    await api.create_room("algebra")
    room = await api.room("algebra")
    dispatcher: Dispatcher = api.client.app[DISPATCHER]
    receiver.status = 503
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    await api.svc.classroom.end_room(await api.room("algebra"), "ended_by_api")
    cfg = api.svc.config.webhooks
    first_at = api.clock.now_ms()
    attempts = 0
    while True:
        started = await dispatcher.send_due()
        await dispatcher.settle()
        attempts += started
        rows = await WebhookStore(api.svc.store).deliveries(api.org.id)
        if any(r["status"] == "failed" for r in rows):
            break
        due = await WebhookStore(api.svc.store).next_due_at()
        assert due is not None and due > api.clock.now_ms()
        api.clock.set(due)
        assert attempts < 100
    # base 5 s doubling up to the 1 h cap (11 attempts in the first 1.4 h), then one an hour until 24 h: ~34.
    assert 30 <= attempts <= 38
    assert api.clock.now_ms() - first_at >= cfg.retry_window_s * 1000
    receiver.status = 200
    await dispatcher.send_due()
    await dispatcher.settle()
    statuses = {r["type"]: r["status"] for r in await WebhookStore(api.svc.store).deliveries(api.org.id)}
    assert statuses == {"room_started": "failed", "room_finished": "delivered"}


async def test_test_send_reports_the_receivers_answer(api: Api, receiver: Receiver) -> None:
    ep = await _register(api, receiver.url)
    receiver.status = 204
    status, body = await api.post(f"/v1/webhooks/{ep['id']}/test")
    assert status == 200 and body["data"]["delivered"] is True and body["data"]["status"] == 204
    assert Webhook(ep["secret"]).verify(receiver.got[0][1], receiver.got[0][0])["type"] == "webhook_test"
    receiver.status = 500
    body = (await api.post(f"/v1/webhooks/{ep['id']}/test"))[1]
    assert body["data"]["delivered"] is False and body["data"]["error"] == "HTTP 500"


async def test_a_receivers_endless_answer_is_not_read_to_its_end(api: Api, aiohttp_server: Any) -> None:
    """The dispatcher read every answer whole: 50 MB from a receiver was 50 MB of the server's memory, and one that
    never ended made every delivery to it time out although it had said 200."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        await request.read()
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        try:
            while sent < 200 << 20:
                await resp.write(b"x" * (1 << 20))
                sent += 1 << 20
        except ConnectionError:
            pass  # the dispatcher hung up: what it should do
        return resp

    app = web.Application()
    app.router.add_post("/hook", endless)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = await _register(api, f"http://127.0.0.1:{server.port}/hook")
    started = time.monotonic()
    status, body = await api.post(f"/v1/webhooks/{ep['id']}/test")
    assert status == 200 and body["data"]["delivered"] is True and body["data"]["status"] == 200, body
    assert time.monotonic() - started < api.svc.config.webhooks.timeout_s
    assert sent < 64 << 20  # it stopped reading long before the receiver would have stopped writing


async def test_what_a_failed_attempt_records_is_the_receivers_doing(api: Api, aiohttp_server: Any) -> None:
    """A body cut after a 200 was a failure with no status; a garbled answer showed aiohttp's "400", which the
    receiver never sent; a redirect said only "HTTP 307"."""
    async def cut(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"0123456789")
        assert request.transport is not None
        request.transport.close()
        return resp

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/elsewhere")

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HELLO THERE\r\n\r\n")
        await writer.drain()
        writer.close()

    app = web.Application()
    app.router.add_post("/cut", cut)
    app.router.add_post("/moved", moved)
    server = await aiohttp_server(app, host="127.0.0.1")
    raw = await asyncio.start_server(garbled, "127.0.0.1", 0)
    raw_port = raw.sockets[0].getsockname()[1]
    try:
        results = {}
        for name, url in (("cut", f"http://127.0.0.1:{server.port}/cut"),
                          ("moved", f"http://127.0.0.1:{server.port}/moved"),
                          ("garbled", f"http://127.0.0.1:{raw_port}/hook")):
            ep = await _register(api, url)
            results[name] = (await api.post(f"/v1/webhooks/{ep['id']}/test"))[1]["data"]
    finally:
        raw.close()
    assert results["cut"]["delivered"] is True and results["cut"]["status"] == 200, results["cut"]
    assert results["moved"]["delivered"] is False and "redirects are not followed" in results["moved"]["error"]
    garbled_error = results["garbled"]["error"]
    assert garbled_error.startswith("ClientResponseError: ") and "400" not in garbled_error, garbled_error


async def test_two_dispatchers_on_one_database_send_each_attempt_once(api: Api, receiver: Receiver) -> None:
    """A district's nodes share the database: each due attempt is claimed by one of them.

    Two claims of the same due rows are raced directly (one wins each row); then both dispatchers run side by side
    until the outbox is empty. How the four attempts split between them depends on timing (one's attempt may end
    while the other is still reading, making the room's next event its head), so what is checked is what a
    receiver sees: each event once, each room's events in order."""
    await _register(api, receiver.url)
    await api.create_room("algebra")
    await api.create_room("biology")
    for room_id in ("algebra", "biology"):
        await api.svc.classroom.open_session((await api.room(room_id)).sid, "teacher-1")
    mine: Dispatcher = api.client.app[DISPATCHER]
    other = Dispatcher(api.svc.classroom.outbox, api.svc.config.webhooks, api.clock)
    store = mine.db
    now = api.clock.now_ms()
    heads = await store.due(now)
    assert len(heads) == 2  # the two room queues' heads
    won = await asyncio.gather(*(store.claim(d, now + 1) for d in heads for _ in range(2)))
    assert sorted(won) == [False, False, True, True] and won[0] != won[1] and won[2] != won[3]
    api.clock.advance(0.01)  # the raced claims' leases end: the heads are due again
    try:
        started = 0
        for _ in range(6):
            counts = await asyncio.gather(mine.send_due(), other.send_due())
            await mine.settle()
            await other.settle()
            started += sum(counts)
        assert started == 4
    finally:
        await other.stop()
    ids = [h["webhook-id"] for h, _ in receiver.got]
    assert len(ids) == len(set(ids)) == 4  # no attempt sent twice
    events = [json.loads(b) for _, b in receiver.got]
    assert [e["type"] for e in events].count("room_started") == 2
    for room_id in ("algebra", "biology"):
        types = [e["type"] for e in events if json.dumps(e).find(room_id) >= 0]
        assert types == ["room_started", "participant_joined"], types


async def test_an_idle_dispatcher_makes_no_query_and_wakes_for_writes_and_retries(
        api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle costs nothing (issue 21: the server's CPU belongs to media): with nothing due, the running dispatcher
    makes no query over many poll periods; an event written while it sleeps is sent at once, and a failed attempt
    is retried when its backoff ends, with no look in between."""
    start, t0 = api.clock.now_ms(), time.monotonic()
    monkeypatch.setattr(api.clock, "now_ms", lambda: start + int((time.monotonic() - t0) * 1000))  # real time
    cfg = dataclasses.replace(api.svc.config.webhooks, retry_base_s=1.0, poll_s=0.05)
    db = api.svc.classroom.outbox.db
    looks: list[float] = []
    real_due = db.due

    async def counted_due(now: int, limit: int = 500) -> list[Delivery]:
        looks.append(time.monotonic())
        return await real_due(now, limit)

    monkeypatch.setattr(db, "due", counted_due)
    await _register(api, receiver.url, ["room_started"])
    await api.create_room("algebra")
    room = await api.room("algebra")
    dispatcher = Dispatcher(api.svc.classroom.outbox, cfg, api.clock)
    await dispatcher.start()
    try:
        await asyncio.sleep(20 * cfg.poll_s)
        assert len(looks) == 1  # the first look only, not one per poll period

        receiver.status = 500
        await api.svc.classroom.open_session(room.sid, "teacher-1")  # written while it sleeps: the outbox wakes it
        deadline = time.monotonic() + 5
        while not receiver.got:
            assert time.monotonic() < deadline, "the event written while the dispatcher slept was not sent"
            await asyncio.sleep(0.01)
        receiver.status = 200
        await asyncio.sleep(0.5)  # the attempt's own wake-ups are over; the retry is due ~1 s after the failure
        quiet_from = len(looks)
        deadline = time.monotonic() + 5
        while len(receiver.got) < 2:
            assert time.monotonic() < deadline, "the retry was not sent when its backoff ended"
            await asyncio.sleep(0.01)
        # not before its backoff (1 s +-10 %), measured where the requests arrived: this test's own wake-ups can
        # come late on a loaded machine, the receiver's clock readings cannot come early
        assert receiver.arrived[1] - receiver.arrived[0] >= 0.85
        assert receiver.got[0][0]["webhook-id"] == receiver.got[1][0]["webhook-id"]
        assert len(looks) - quiet_from <= 2  # one look when it was due (another after the attempt at most)
        await asyncio.sleep(20 * cfg.poll_s)
        settled = len(looks)
        await asyncio.sleep(20 * cfg.poll_s)
        assert len(looks) == settled  # delivered, nothing pending: quiet again
    finally:
        await dispatcher.stop()
    statuses = [r["status"] for r in await WebhookStore(api.svc.store).deliveries(api.org.id)]
    assert statuses == ["delivered"]


async def test_settled_deliveries_are_pruned_after_a_week_pending_ones_never(api: Api, receiver: Receiver) -> None:
    await _register(api, receiver.url, ["room_started", "room_finished"])
    await api.create_room("algebra")
    await api.svc.classroom.open_session((await api.room("algebra")).sid, "teacher-1")
    dispatcher: Dispatcher = api.client.app[DISPATCHER]
    await dispatcher.send_due()
    await dispatcher.settle()
    receiver.status = 500
    await api.svc.classroom.end_room(await api.room("algebra"), "destroyed")  # room_finished stays pending
    db = WebhookStore(api.svc.store)
    assert await db.prune(api.clock.now_ms() - 1000) == 0  # nothing is a week old
    api.clock.advance(8 * 24 * 3600)
    assert await db.prune(api.clock.now_ms() - 7 * 24 * 3600 * 1000) == 1
    assert [ty for ty, _ in await _outbox_types(api)] == ["room_finished"]


async def test_the_example_receiver_verifies_and_deduplicates(api: Api, aiohttp_server: Any) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("webhook_receiver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    secret = (await _register(api, "http://127.0.0.1:9/placeholder"))["secret"]
    app = example.make_app(secret)
    server = await aiohttp_server(app, host="127.0.0.1")
    dispatcher: Dispatcher = api.client.app[DISPATCHER]
    delivery = Delivery(id="", event_id="msg_example0001", endpoint_id="", url=str(server.make_url("/classcast")),
                        secret=secret, payload='{"type":"room_started","timestamp":"x","data":{"roomId":"a"}}',
                        attempts=0, created_at=0, next_attempt_at=0)
    assert await dispatcher.attempt_once(delivery) == (204, None)
    assert await dispatcher.attempt_once(delivery) == (204, None)  # a retry: acknowledged, stored once
    assert [e["type"] for e in app[example.EVENTS]] == ["room_started"]
    forged = dataclasses.replace(delivery, secret="whsec_" + "B" * 44)  # signed with another key
    assert await dispatcher.attempt_once(forged) == (400, "HTTP 400")
