"""WHIP ingest (RFC 9725) and WHEP playback: WebRTC over plain HTTP for encoders (OBS, GStreamer, hardware) and
players that speak no classcast protocol.

`POST /v1/whip/:roomId` with `Authorization: Bearer <join token>` of a TEACHER, MODERATOR or ADMIN and an SDP offer
publishes like a browser teacher (camera with simulcast when offered, microphone, a second video as the screen):
students receive it, recordings and the transcriber tap it. The room's `allowIngress` (customization, default false)
must be on. `POST /v1/whep/:roomId` with any participant's token answers a receive-only offer with the teacher's
camera (else screen) and microphone, layer selection as for a student (`?quality=`). Each returns 201, the answer
and a `Location` naming the session; `PATCH` there trickles candidates, `DELETE` ends it.

ICE restart (`PATCH` with `If-Match: *`) is answered 422, as RFC 9725 4.3.2 asks of a session that supports trickle
but not restarts: aiortc cannot restart ICE in place. The client POSTs again instead.

Sessions are SFU participants of sfu/oneway.py under keys of their own, with a participant session in the store
(roster, billing) opened at POST and closed at DELETE, at the end of the class, at a kick, or when the connection
fails or closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control.api.common import GRANT, room_id_param, services
from control.auth import Grant
from control.errors import ApiError
from control.events import Event
from control.roles import Role, permissions
from control.signaling import HUB, Hub
from control.validation import effective_customization, read_limited
from sfu.errors import SignalingError
from sfu.participant import MAX_SDP

log = logging.getLogger("classcast.whip")

SDP_TYPE = "application/sdp"
FRAG_TYPE = "application/trickle-ice-sdpfrag"
PUBLISHERS = (Role.TEACHER, Role.MODERATOR, Role.ADMIN)
QUALITIES = ("auto", "low", "medium", "high")
# A session whose connection never came up (no m-section to connect, a DTLS that never finished) ends after this
# long: nothing else would end it, and it would bill and stay in the roster for good. ICE's own budget is 30 s.
CONNECT_DEADLINE_S = 45.0
MAX_SESSIONS_PER_UID = 4  # live WHIP or WHEP sessions of one participant in one room, each kind
STATUS_OF = {"FORBIDDEN": 403, "BAD_SDP": 400, "BAD_MESSAGE": 400, "NEGOTIATION": 409, "NOTHING_PUBLISHED": 409,
             "MEDIA_UNAVAILABLE": 503, "MEDIA_WORKER_LOST": 503}


@dataclass(eq=False)
class OneWay:
    """One WHIP or WHEP session."""

    id: str
    kind: str  # "whip" | "whep"
    room_sid: str
    room_id: str
    uid: str
    key: str
    session_id: str
    etag: str
    ufrag: str
    connected: bool = False


class OneWaySessions:
    """The live WHIP/WHEP sessions of this process; ends them when their class, participant or connection does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sessions: dict[str, OneWay] = {}
        self.opening: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (room, uid, kind)
        self._unsubscribe = hub.svc.bus.subscribe(self._on_event)
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: Event) -> None:
        if event.type == "class_ended":
            for s in [s for s in self.sessions.values() if s.room_sid == event.room_sid]:
                self._spawn(self.end(s, "class_ended"))
        elif event.type == "participant_removed":
            uid = event.data.get("participant", {}).get("uid")
            for s in [s for s in self.sessions.values() if s.room_sid == event.room_sid and s.uid == uid]:
                self._spawn(self.end(s, "removed"))

    def on_signal(self, session_id: str, message: dict[str, Any]) -> None:
        if message.get("type") != "connection_state":
            return
        session = self.sessions.get(session_id)
        if session is None:
            return
        if message.get("state") == "connected":
            session.connected = True
        elif message.get("state") in ("failed", "closed"):
            self._spawn(self.end(session, "disconnected"))

    def add(self, session: OneWay) -> None:
        """A new session, ended unless its connection comes up within CONNECT_DEADLINE_S."""
        self.sessions[session.id] = session
        asyncio.get_running_loop().call_later(CONNECT_DEADLINE_S, self._deadline, session)

    def _deadline(self, session: OneWay) -> None:
        if not session.connected and self.sessions.get(session.id) is session:
            log.info("%s session %s never connected: ended", session.kind.upper(), session.id)
            self._spawn(self.end(session, "disconnected"))  # the reason webhooks document for a lost client

    @contextlib.contextmanager
    def slot(self, room_sid: str, uid: str, kind: str) -> Iterator[None]:
        """A place among the participant's MAX_SESSIONS_PER_UID, held while its session opens (an await away
        from being counted in `sessions`: concurrent POSTs all passed a count that ignored them), or 409."""
        key = (room_sid, uid, kind)
        live = sum(1 for s in self.sessions.values() if (s.room_sid, s.uid, s.kind) == key)
        if live + self.opening[key] >= MAX_SESSIONS_PER_UID:
            raise ApiError(409, f"At most {MAX_SESSIONS_PER_UID} live {kind.upper()} sessions per participant: "
                                "DELETE one first", "TOO_MANY_SESSIONS")
        self.opening[key] += 1
        try:
            yield
        finally:
            self.opening[key] -= 1
            if not self.opening[key]:
                del self.opening[key]

    async def end(self, session: OneWay, reason: str) -> None:
        """Idempotent: the SFU participant leaves and the store session closes (unless the class closed it)."""
        if self.sessions.pop(session.id, None) is None:
            return
        # The record first: a dead worker makes the SFU's leave wait for its restart, and the session's end (what
        # credits count) is now, not then.
        if reason not in ("class_ended", "removed"):
            await self.hub.svc.classroom.close_session(session.session_id, reason)
        await self.hub.sfu.leave(session.room_sid, session.key)

    async def close(self) -> None:
        self._unsubscribe()
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await self.end(session, "left")


SESSIONS = web.AppKey("oneway_sessions", OneWaySessions)


def _grant(request: web.Request) -> Grant:
    grant = request.get(GRANT)
    if grant is None:
        raise ApiError(401, "Authorization: Bearer <join token> is required", "UNAUTHORIZED")
    if grant.room.room_id != room_id_param(request):
        raise ApiError(403, "The token is for another room", "FORBIDDEN")
    return grant


async def _sdp(request: web.Request, expected: str) -> str:
    if request.content_type != expected:
        raise ApiError(415, f"Content-Type must be {expected}", "UNSUPPORTED_MEDIA_TYPE")
    raw = await read_limited(request, MAX_SDP)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The SDP is not UTF-8", "BAD_SDP") from None


def _ufrag(sdp: str) -> str:
    return next((line[12:].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")), "")


def offered_sources(sdp: str) -> list[dict[str, str]]:
    """A publisher's m-sections as classcast sources: its first sending video is the camera, a second one the
    screen, its first sending audio the microphone; anything else is answered inactive."""
    out: list[dict[str, str]] = []
    kind, mid, direction = None, None, "sendrecv"

    def close_section() -> None:
        if kind is None or mid is None or direction not in ("sendonly", "sendrecv"):
            return
        taken = {t["source"] for t in out}
        if kind == "video":
            source = "camera" if "camera" not in taken else "screen" if "screen" not in taken else None
        elif kind == "audio":
            source = "microphone" if "microphone" not in taken else None
        else:
            source = None
        if source is not None:
            out.append({"source": source, "mid": mid})

    for line in sdp.splitlines():
        if line.startswith("m="):
            close_section()
            kind, mid, direction = line[2:].split(" ", 1)[0], None, "sendrecv"
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line[2:] in ("sendonly", "sendrecv", "recvonly", "inactive") and line.startswith("a="):
            direction = line[2:]
    close_section()
    return out


def _created(request: web.Request, session: OneWay, answer: str) -> web.Response:
    location = f"/v1/{session.kind}/{session.room_id}/{session.id}"
    headers = {"Location": location, "ETag": session.etag, "Accept-Patch": FRAG_TYPE,
               "Cache-Control": "no-store"}
    links = _ice_links(request)
    if links:
        headers["Link"] = links
    return web.Response(status=201, body=answer.encode(), content_type=SDP_TYPE, headers=headers)


def _ice_links(request: web.Request) -> str:
    """The configured STUN/TURN servers as RFC 9725 4.6 Link headers (the answer's candidates need no more)."""
    links = []
    for server in services(request).config.ice.servers:
        urls = server.get("urls")
        for url in [urls] if isinstance(urls, str) else list(urls or ()):
            link = f'<{url}>; rel="ice-server"'
            if server.get("username") and server.get("credential"):
                link += f'; username="{server["username"]}"; credential="{server["credential"]}"'
                link += '; credential-type="password"'
            links.append(link)
    return ", ".join(links)


def _signaling_error(exc: SignalingError) -> ApiError:
    return ApiError(STATUS_OF.get(exc.code, 400), exc.message, exc.code)


async def _open(request: web.Request, grant: Grant, kind: str, offer: str, tracks: list[dict[str, str]],
                quality: str) -> tuple[OneWay, str]:
    """The SFU side first (in this process or a worker: `open_one_way` is one call either way), then the store
    session, so a refused offer or an empty room leaves no session behind."""
    svc = services(request)
    hub = request.app[HUB]
    registry = request.app[SESSIONS]
    room, me = grant.room, grant.participant
    host = await hub.placement.place(room.sid)
    if host.id != hub.node.id:
        # Several nodes: the class's media is on its host. RFC 9725 4.5 lets the endpoint redirect (307 keeps the
        # method and the offer); the session's Location then names the host.
        raise web.HTTPTemporaryRedirect(host.url + request.rel_url.path_qs)
    with registry.slot(room.sid, me.uid, kind):  # held until the session is in `sessions`
        customization = effective_customization(room.customization, me.customization)
        perms = permissions(Role(me.role), customization)
        session_id = secrets.token_urlsafe(12)

        def signal(message: dict[str, Any]) -> None:
            registry.on_signal(session_id, message)

        key = f"{kind.upper()}_{secrets.token_hex(6)}"
        info = {"uid": me.uid, "name": me.name, "role": me.role, "permissions": sorted(p.value for p in perms)}
        try:
            answer = await hub.sfu.open_one_way(room.sid, key, info, signal, kind, offer, tracks, quality)
        except SignalingError as exc:
            raise _signaling_error(exc) from None
        try:
            session_row = await svc.classroom.open_session(room.sid, me.uid, request.remote)
        except BaseException:
            await hub.sfu.leave(room.sid, key)
            raise
        session = OneWay(id=session_id, kind=kind, room_sid=room.sid, room_id=room.room_id, uid=me.uid, key=key,
                         session_id=session_row.id, etag=f'"{secrets.token_hex(8)}"', ufrag=_ufrag(offer))
        registry.add(session)
        return session, answer


async def whip_create(request: web.Request) -> web.Response:
    grant = _grant(request)
    if Role(grant.participant.role) not in PUBLISHERS:
        raise ApiError(403, "Only a teacher, a moderator or an admin may publish over WHIP", "FORBIDDEN")
    customization = effective_customization(grant.room.customization, grant.participant.customization)
    if not customization["allowIngress"]:
        raise ApiError(403, "Ingest is off in this room: create it with customization.allowIngress true",
                       "INGRESS_NOT_ALLOWED")
    offer = await _sdp(request, SDP_TYPE)
    tracks = offered_sources(offer)
    if not tracks:
        raise ApiError(400, "The offer sends no audio or video", "BAD_SDP")
    session, answer = await _open(request, grant, "whip", offer, tracks, "auto")
    log.info("WHIP session %s publishes %s in %s", session.id, [t["source"] for t in tracks], session.room_id)
    return _created(request, session, answer)


async def whep_create(request: web.Request) -> web.Response:
    grant = _grant(request)
    quality = request.query.get("quality", "auto")
    if quality not in QUALITIES:
        raise ApiError(400, f"Validation failed: quality must be one of {', '.join(QUALITIES)}", "VALIDATION_ERROR")
    offer = await _sdp(request, SDP_TYPE)
    session, answer = await _open(request, grant, "whep", offer, [], quality)
    return _created(request, session, answer)


def _session(request: web.Request, kind: str) -> OneWay:
    grant = _grant(request)
    session = request.app[SESSIONS].sessions.get(request.match_info["sessionId"])
    if session is None or session.kind != kind or session.room_sid != grant.room.sid:
        raise ApiError(404, "No such session", "SESSION_NOT_FOUND")
    if session.uid != grant.participant.uid:
        raise ApiError(403, "The session belongs to another participant", "FORBIDDEN")
    return session


async def _patch(request: web.Request, kind: str) -> web.Response:
    session = _session(request, kind)
    if_match = request.headers.get("If-Match")
    if if_match == "*":
        raise ApiError(422, "ICE restart is not supported: end the session and POST a new offer",
                       "ICE_RESTART_UNSUPPORTED")
    if if_match is not None and if_match != session.etag:
        raise ApiError(412, "The session's ETag does not match If-Match", "PRECONDITION_FAILED")
    fragment = await _sdp(request, FRAG_TYPE)
    ufrag = _ufrag(fragment)
    if ufrag and session.ufrag and ufrag != session.ufrag:
        raise ApiError(422, "New ICE credentials (an ICE restart) are not supported", "ICE_RESTART_UNSUPPORTED")
    mid = None
    try:
        for line in fragment.splitlines():
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=candidate:"):
                await request.app[HUB].sfu.handle(session.room_sid, session.key, {"type": "candidate", "candidate": {
                    "candidate": line[2:].strip(), "sdpMid": mid, "sdpMLineIndex": 0}})
    except SignalingError as exc:
        raise _signaling_error(exc) from None
    return web.Response(status=204)


async def _delete(request: web.Request, kind: str) -> web.Response:
    session = _session(request, kind)
    await request.app[SESSIONS].end(session, "left")
    return web.Response(status=200)


async def whip_patch(request: web.Request) -> web.Response:
    return await _patch(request, "whip")


async def whip_delete(request: web.Request) -> web.Response:
    return await _delete(request, "whip")


async def whep_patch(request: web.Request) -> web.Response:
    return await _patch(request, "whep")


async def whep_delete(request: web.Request) -> web.Response:
    return await _delete(request, "whep")


def setup(app: web.Application) -> None:
    """After signaling.setup: the sessions live beside the Hub and end before it stops."""

    async def start(app: web.Application) -> None:
        app[SESSIONS] = OneWaySessions(app[HUB])

    async def stop(app: web.Application) -> None:
        await app[SESSIONS].close()

    app.on_startup.append(start)
    app.on_shutdown.insert(0, stop)
    r = app.router
    r.add_post("/v1/whip/{roomId:[^/]*}", whip_create)
    r.add_patch("/v1/whip/{roomId:[^/]*}/{sessionId}", whip_patch)
    r.add_delete("/v1/whip/{roomId:[^/]*}/{sessionId}", whip_delete)
    r.add_post("/v1/whep/{roomId:[^/]*}", whep_create)
    r.add_patch("/v1/whep/{roomId:[^/]*}/{sessionId}", whep_patch)
    r.add_delete("/v1/whep/{roomId:[^/]*}/{sessionId}", whep_delete)
