"""Signaling messages as the hub's handler takes them (`Hub._on_text`) from a joined student on a real app (real
store on SQLite, the SFU in process). Every reply must be strict JSON and none may be SERVER_ERROR (that code means
an exception nothing expected); nothing may raise out of the handler."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

INSTRUMENT = ("control.signaling", "control.strictjson", "control.interaction", "control.validation",
              "sfu.participant", "sfu.router")
BOUND_MS = 200.0
STATELESS = False

_loop: asyncio.AbstractEventLoop | None = None
_hub: Any = None
_conn: Any = None
_strict: Any = None
_dir = ""


def setup() -> None:
    global _loop, _hub, _conn, _strict, _dir
    import atexit

    from aiohttp.test_utils import TestServer

    from control import strictjson
    from control.app import create_app
    from control.config import Config, TutorConfig
    from control.services import SERVICES
    from control.signaling import HUB, Connection

    _strict = strictjson
    _dir = tempfile.mkdtemp(prefix="classcast-fuzz-")
    atexit.register(shutil.rmtree, _dir, True)
    _loop = asyncio.new_event_loop()

    async def build() -> None:
        global _hub, _conn
        # sfu_workers=0: the SFU in this process, whose modules are instrumented (INSTRUMENT); the fuzzer runs the
        # event loop only during an input, which worker links (read by the loop) do not expect
        config = Config(data_dir=Path(_dir) / "data", tutor=TutorConfig(llm_backend="fake"), sfu_workers=0)
        app = await create_app(config, background=False)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        svc = app[SERVICES]
        org = await svc.store.create_org("Fuzz School", 10**9, svc.clock.now_ms())
        import aiohttp

        async with aiohttp.ClientSession() as session:
            base = str(server.make_url("")).rstrip("/")
            headers = {"VF-ORG-ID": org.id}
            async with session.post(base + "/v1/room/create", headers=headers, json={
                    "roomId": "fuzz", "title": "Fuzz",
                    "participant": {"uid": "teacher", "name": "T", "role": "TEACHER"}}) as resp:
                assert resp.status == 200, await resp.text()
            async with session.post(base + "/v1/room/fuzz/join", headers=headers, json={
                    "participant": {"uid": "student", "name": "S", "role": "STUDENT"}}) as resp:
                token = (await resp.json())["data"]["token"]
        _hub = app[HUB]
        grant = await svc.auth.validate(token)
        _conn = Connection(ws=None, grant=grant)  # type: ignore[arg-type]  # the handler never writes to it
        _conn.allow = lambda: True  # the rate limit is not what is fuzzed
        await _hub._on_text(_conn, '{"type": "join"}', "127.0.0.1")
        reply = _conn.queue.get_nowait()
        assert reply["type"] == "joined", reply

    _loop.run_until_complete(build())


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")  # a WebSocket text frame is valid UTF-8
    assert _loop is not None
    _loop.run_until_complete(_hub._on_text(_conn, text, "127.0.0.1"))
    _conn.ending = None
    while not _conn.queue.empty():
        message = _conn.queue.get_nowait()
        if message is None:
            continue
        if isinstance(message, str):  # a room's event, printed once for every connection (Hub._fan_out)
            message = _strict.loads(message)
        _strict.dumps(message)  # ValueError (NaN) or TypeError: the client could not read it
        assert message.get("code") != "SERVER_ERROR", (text[:200], message)
