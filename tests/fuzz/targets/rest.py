"""REST request bodies through the real handlers' validation (the first byte picks the endpoint, the rest is the
body), on a real app with its store: only ApiError (the middleware's documented error envelope) or aiohttp's HTTP
exceptions may come out, and every response body must be strict JSON. Recording start/stop are called on a room
that does not exist, so their bodies are validated without starting a recorder."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

INSTRUMENT = ("control.validation", "control.api.common", "control.api.rooms", "control.api.participants",
              "control.api.recordings", "control.recordings", "control.strictjson")
BOUND_MS = 200.0
STATELESS = False

_loop: asyncio.AbstractEventLoop | None = None
_app: Any = None
_org: Any = None
_endpoints: list[tuple[str, str, Any, dict[str, str]]] = []
_dir = ""
_parts: dict[str, Any] = {}  # the mocked connection objects, made once (unittest.mock objects are slow to make)


class _Reading:
    """The protocol a StreamReader pauses and resumes (a Mock would record every call and grow)."""

    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def setup() -> None:
    global _loop, _app, _org, _endpoints, _dir
    import atexit

    from aiohttp.test_utils import TestServer

    from control.api import participants, recordings, rooms
    from control.app import create_app
    from control.config import Config, TutorConfig
    from control.services import SERVICES

    _dir = tempfile.mkdtemp(prefix="classcast-fuzz-")
    atexit.register(shutil.rmtree, _dir, True)
    _loop = asyncio.new_event_loop()

    async def build() -> None:
        global _app, _org
        # sfu_workers=0: the REST API carries no media, and the fuzzer runs the event loop only during an input,
        # which worker links (read by the loop, watched for silence) do not expect
        config = Config(data_dir=Path(_dir) / "data", tutor=TutorConfig(llm_backend="fake"), sfu_workers=0)
        _app = await create_app(config, background=False)
        server = TestServer(_app, host="127.0.0.1")  # runs the app's startup: the recordings service
        await server.start_server()
        svc = _app[SERVICES]
        _org = await svc.store.create_org("Fuzz School", 10**9, svc.clock.now_ms())

    _loop.run_until_complete(build())
    room = {"roomId": "fuzz"}
    ghost = {"roomId": "ghost"}
    _endpoints = [
        ("POST", "/v1/room/create", rooms.create_room, {}),
        ("POST", "/v1/room/fuzz/join", rooms.join_room, room),
        ("POST", "/v1/participant/sessions", participants.participant_sessions, {}),
        ("POST", "/v1/room/fuzz/participants/s1/remove", participants.remove_participant, room | {"uid": "s1"}),
        ("POST", "/v1/room/fuzz/mute-all", participants.mute_all, room),
        ("POST", "/v1/room/ghost/recording/start", recordings.start_recording, ghost),
        ("POST", "/v1/room/ghost/recording/stop", recordings.stop_recording, ghost),
        ("DELETE", "/v1/room/ghost/recordings", recordings.delete_room_recordings, ghost),
        ("DELETE", "/v1/recordings", recordings.delete_recordings, {}),
    ]
    # The room the join and participant endpoints act on.
    _loop.run_until_complete(_call(0, b'{"roomId": "fuzz", "title": "Fuzz", "participant": '
                                      b'{"uid": "teacher", "name": "T", "role": "TEACHER"}}'))


async def _call(index: int, body: bytes) -> None:
    from aiohttp import web
    from aiohttp.streams import StreamReader
    from aiohttp.test_utils import make_mocked_request

    from control import strictjson
    from control.api.common import ORG
    from control.errors import ApiError

    method, path, handler, match_info = _endpoints[index]
    if not _parts:
        first = make_mocked_request("POST", "/")
        _parts.update(protocol=first.protocol, transport=first.transport, writer=first.writer,
                      reader=_Reading())
    payload = StreamReader(_parts["reader"], 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    request = make_mocked_request(method, path, headers={"Content-Type": "application/json"},
                                  match_info=match_info, app=_app, payload=payload, client_max_size=1 << 20,
                                  protocol=_parts["protocol"], transport=_parts["transport"],
                                  writer=_parts["writer"])
    request[ORG] = _org
    try:
        response = await handler(request)
    except (ApiError, web.HTTPException):
        return
    finally:
        _parts["calls"] = _parts.get("calls", 0) + 1
        if _parts["calls"] >= 500:
            _parts.clear()  # mocks record every call made on them: a million inputs would keep them all
    assert isinstance(response, web.Response) and response.status < 500, response
    if response.content_type == "application/json":
        strictjson.loads(response.body)  # what the integrator's client reads


def one_input(data: bytes) -> None:
    if not data:
        return
    assert _loop is not None
    _loop.run_until_complete(_call(data[0] % len(_endpoints), data[1:]))
