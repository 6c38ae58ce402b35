"""WebSocket signaling at /v1/rtc?token=JWT: JSON messages between participants, the control plane and the SFU.

One `Hub` per process. It validates the token with the control plane's one validator, opens the participant's
session, hands media messages to the SFU (plain dicts across the boundary) and everything else to the control
plane, and fans control-plane events out to the room. Nothing a client sends can raise out of here: every
failure becomes `{"type": "error", "code", "message"}` on that connection. The protocol is docs/signaling.md.

Across nodes (issue 18) the Hub asks two interfaces control/wiring.py chose: `Placement` (which node hosts the
room: a join that reaches another node is answered with an error REDIRECT naming the host's URL, and the SDK and
the Python client connect there) and `Presence` (which session a uid holds and its reconnect grace, so a
participant who comes back on another node keeps its session). A lecture past one node's capacity
(control/relay.py): the host redirects new students to an overflow node, which serves them with the host's tracks
relayed to it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from control import strictjson, turn
from control.auth import Grant, token_secret
from control.classroom import participant_public
from control.errors import ApiError
from control.events import Event
from control.interaction import Interaction
from control.placement import Node, Placement
from control.presence import Entry, Presence
from control.recordings import Recordings, parse_options
from control.relay import NodeRelay, relay_host, setup_routes
from control.roles import Permission, Role, can, permissions
from control.room_brief import RoomBrief, RoomBriefs
from control.services import SERVICES, Services
from control.store.records import Participant, Room
from control.validation import effective_customization
from control.workers import WorkerPool
from sfu.errors import SignalingError
from sfu.router import Sfu

log = logging.getLogger("classcast.signaling")

MEDIA_TYPES = {"publish", "offer", "answer", "candidate", "unpublish", "mute", "set_quality", "restart"}
MAX_MESSAGE = 256 * 1024
QUEUE_LIMIT = 2000
RATE_PER_S, RATE_BURST = 50.0, 200.0
# A join that follows the socket's token check this soon uses it as is: the join opens the session in one
# transaction that checks the room and the participant again (ended, removed), so a second read is redundant.
FRESH_GRANT_S = 1.0
CLOSE_S = 2.0  # a stopping server waits this long for each WebSocket's close handshake (all at once)


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    grant: Grant
    validated_at: float = field(default_factory=time.monotonic)  # when `grant` was read from the store
    key: str = field(default_factory=lambda: "C_" + secrets.token_hex(6))
    joined: bool = False
    ending: str | None = None  # why the server is closing it: replaced, removed, class_ended, left
    # messages to write: a dict, or the text of one printed once for a whole room (`Hub._fan_out`)
    queue: asyncio.Queue[dict[str, Any] | str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    tokens: float = RATE_BURST
    refilled: float = field(default_factory=time.monotonic)

    @property
    def uid(self) -> str:
        return self.grant.participant.uid

    @property
    def room_sid(self) -> str:
        return self.grant.room.sid

    def send(self, message: dict[str, Any] | str) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("signaling queue full for %s, closing", self.uid)
            self.ending = self.ending or "slow_client"
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(RATE_BURST, self.tokens + (now - self.refilled) * RATE_PER_S)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def node_socket_url(node: Node) -> str:
    """The node's signaling URL (no token: the client adds its own)."""
    return node.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/rtc"


class Hub:
    def __init__(self, svc: Services, sfu: Sfu | WorkerPool) -> None:
        self.svc = svc
        self.sfu = sfu
        self.interaction = Interaction(svc.store, svc.bus, svc.clock)
        self.briefs = RoomBriefs(self._read_brief)
        self.rooms: dict[str, dict[str, Connection]] = {}
        live = svc.live  # control/wiring.py chose them: this node's memory or Redis
        assert live is not None, "Services come from control.app.build_services, which wires what is live"
        self.node: Node = live.placement.node
        self.presence: Presence = live.presence
        self.placement: Placement = live.placement
        config = svc.config
        self.relay = NodeRelay(sfu, live.placement, live.presence, token_secret(config), config.room_node_capacity,
                               relay_host(config.node_base_url, config.relay_host), config.relay_test_loss,
                               config.node_lease_s)
        # This node's connection for each (room, uid) whose session it holds, and the grace timers it runs.
        self.owned: dict[tuple[str, str], Connection] = {}
        self._graces: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._unsubscribe = svc.bus.subscribe(self._events.put_nowait)
        self.recordings: Recordings | None = None  # set by control/api/recordings.py at start
        # Set by control/app.py: while the server drains (control/drain.py) nobody new joins; a participant
        # already in the class may still reconnect.
        self.draining: Callable[[], bool] = lambda: False
        self._stopping = False
        self._dispatching = True  # the event loop's own end (see _dispatch_events)

    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch_events())
        await self.relay.start()

    async def stop(self) -> None:
        self._stopping = True  # from here a closed connection starts no grace timer (see _disconnect)
        self._unsubscribe()
        closing = [conn for conns in self.rooms.values() for conn in conns.values()]
        for conn in closing:
            conn.ending = conn.ending or "server_shutdown"
        # All at once, each bounded: aiohttp's close waits up to 10 s for the peer's answer (and, unbounded, for
        # its socket to drain), so one by one, a few silent peers held a stopping node for minutes.
        await asyncio.gather(*(self._close(conn.ws) for conn in closing))
        for grace in self._graces.values():
            grace.cancel()
        self._graces.clear()
        if self._dispatcher is not None:
            self._dispatching = False
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        await self.relay.close()
        await self.sfu.close()

    @staticmethod
    async def _close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(ws.close(code=1001, message=b"server shutdown"), CLOSE_S)

    # ---- the WebSocket ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        try:
            grant = await self.svc.auth.validate(request.query.get("token", ""))
        except ApiError as exc:
            await ws.send_json({"type": "error", "code": exc.code, "message": exc.message}, dumps=strictjson.dumps)
            await ws.close(code=4000 + exc.status, message=exc.code.encode())
            return ws
        conn = Connection(ws=ws, grant=grant)
        writer = asyncio.create_task(self._writer(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(conn, msg.data, request.remote)
                elif msg.type == WSMsgType.BINARY:
                    conn.send(_error("BAD_MESSAGE", "messages are JSON text"))
                elif msg.type == WSMsgType.ERROR:
                    break
                if conn.ending is not None:
                    break
        finally:
            # Shielded: aiohttp may cancel this handler when the peer vanishes, and a half-done cleanup would
            # leave the participant's tracks published in the SFU.
            await asyncio.shield(self._cleanup(conn, writer))
        return ws

    async def _cleanup(self, conn: Connection, writer: asyncio.Task[None]) -> None:
        try:
            await self._disconnect(conn)
        except Exception:
            log.exception("disconnect of %s failed", conn.uid)
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 2)
        await conn.ws.close()

    async def _writer(self, conn: Connection) -> None:
        while True:
            message = await conn.queue.get()
            if message is None or conn.ws.closed:
                break
            text = message if isinstance(message, str) else _printed(message)
            if text is None:
                continue
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                break
        if conn.ending is not None and not conn.ws.closed:
            await conn.ws.close(code=4000, message=conn.ending.encode())

    async def _on_text(self, conn: Connection, text: str, remote: str | None) -> None:
        ref = None
        try:
            if not conn.allow():
                raise SignalingError("RATE_LIMITED", "too many messages")
            try:
                message = strictjson.loads(text)
            except ValueError as exc:
                raise SignalingError("BAD_MESSAGE", f"not JSON: {exc}") from None
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise SignalingError("BAD_MESSAGE", "a message is a JSON object with a string 'type'")
            ref = message.get("type")
            await self._dispatch(conn, message, remote)
        except SignalingError as exc:
            conn.send(exc.as_message() | ({"ref": ref} if ref else {}))
        except ApiError as exc:
            conn.send(_error(exc.code, exc.message) | ({"ref": ref} if ref else {}))
        except Exception:
            log.exception("signaling message failed for %s", conn.uid)
            conn.send(_error("SERVER_ERROR", "internal error") | ({"ref": ref} if ref else {}))

    async def _dispatch(self, conn: Connection, message: dict[str, Any], remote: str | None) -> None:
        kind = message["type"]
        if kind == "ping":
            conn.send({"type": "pong", "ts": message.get("ts")})
            return
        if kind == "join":
            await self._join(conn, remote)
            return
        if not conn.joined:
            raise SignalingError("NOT_JOINED", "send join first")
        if kind in MEDIA_TYPES:
            await self.sfu.handle(conn.room_sid, conn.key, message)
            return
        room, me = await self._current(conn)
        ia = self.interaction
        if kind == "leave":
            conn.ending = "left"
        elif kind == "raise_hand":
            await ia.raise_hand(room, me)
        elif kind == "lower_hand":
            await ia.lower_hand(room, me, _opt_str(message, "uid"))
        elif kind == "poll_create":
            await ia.create_poll(room, me, message.get("question"), message.get("options"))
        elif kind == "poll_answer":
            await ia.answer_poll(room, me, message.get("pollId"), message.get("option"))
        elif kind == "poll_close":
            await ia.close_poll(room, me, message.get("pollId"))
        elif kind == "chat":
            await ia.chat(room, me, message.get("text"))
        elif kind == "set_topic":
            if not can(Role(me.role), Permission.SET_TOPIC) or self.svc.tutor is None:
                raise ApiError(403, "Only a teacher, a moderator or an admin may set the topic", "FORBIDDEN")
            await self.svc.tutor.set_topic(room, message.get("topic"), me.uid)  # fanned out as topic_set
        elif kind in ("kick", "mute_participant", "unmute_participant"):
            await self._moderate(conn, me, kind, message)
        elif kind in ("recording_start", "recording_stop"):
            await self._record(room, me, kind, message)
        elif kind == "end_class":
            if not can(Role(me.role), Permission.END_CLASS):
                raise ApiError(403, "Only a teacher or an admin may end the class", "FORBIDDEN")
            await self.svc.classroom.end_room(room, "ended_by_teacher")
        else:
            raise SignalingError("UNKNOWN_TYPE", f"unknown message type {kind!r}")

    async def _current(self, conn: Connection) -> tuple[Any, Participant]:
        room = await self.svc.store.get_room_by_sid(conn.room_sid)
        me = await self.svc.store.get_participant(conn.room_sid, conn.uid)
        if room is None or me is None or room.ended:
            raise SignalingError("ROOM_ENDED", "the class has ended")
        return room, me

    async def _moderate(self, conn: Connection, me: Participant, kind: str, message: dict[str, Any]) -> None:
        if not can(Role(me.role), Permission.MODERATE):
            raise ApiError(403, "Your role may not manage participants", "FORBIDDEN")
        uid = _opt_str(message, "uid")
        if not uid or uid == me.uid:
            raise SignalingError("BAD_MESSAGE", "uid must name another participant")
        org = await self.svc.store.get_org(conn.grant.room.org_id)
        assert org is not None
        room_id = conn.grant.room.room_id
        if kind == "kick":
            await self.svc.classroom.remove_participant(org, room_id, uid, _opt_str(message, "reason"))
        else:
            await self.svc.classroom.set_muted(org, room_id, uid, kind == "mute_participant")

    async def _record(self, room: Any, me: Participant, kind: str, message: dict[str, Any]) -> None:
        """The record button: the participant's role and allowRecording decide (MODERATOR may stop, not start)."""
        start = kind == "recording_start"
        customization = effective_customization(room.customization, me.customization)
        if not can(Role(me.role), Permission.START_RECORDING if start else Permission.STOP_RECORDING, customization):
            raise ApiError(403, f"You may not {'start' if start else 'stop'} recordings", "FORBIDDEN")
        if self.recordings is None:
            raise SignalingError("UNAVAILABLE", "recording is not available")
        if start:
            org = await self.svc.store.get_org(room.org_id)
            assert org is not None
            await self.recordings.start(org, room, parse_options(message.get("options")), by=me.uid)
        else:
            await self.recordings.stop(room, by=me.uid)

    # ---- join and leave -----------------------------------------------------------------------------------

    def _turn_secret(self) -> str:
        """coturn's shared secret, read once (the data dir file is made on first use): control/turn.py."""
        cfg = self.svc.config
        if not cfg.turn.enabled:
            return ""
        if not hasattr(self, "_turn_secret_value"):
            self._turn_secret_value = turn.load_or_create_secret(cfg.turn, cfg.data_dir)
        return self._turn_secret_value

    async def _join(self, conn: Connection, remote: str | None) -> None:
        if conn.joined:
            raise SignalingError("ALREADY_JOINED", "already joined")
        if time.monotonic() - conn.validated_at > FRESH_GRANT_S:  # the room may have ended meanwhile
            conn.grant = await self.svc.auth.validate_claims(conn.grant.claims)
            conn.validated_at = time.monotonic()
        grant = conn.grant
        if self.draining() and await self.placement.host(conn.room_sid) is None:
            # A draining node takes no class it does not host already: the next join reaches another node.
            conn.ending = "server_draining"
            raise SignalingError("SERVER_DRAINING", "this server is draining for a restart; join again shortly")
        host = await self.placement.place(conn.room_sid)
        role, here = grant.participant.role, len(self.rooms.get(conn.room_sid, {}))
        if host.id != self.node.id and await self.relay.serves(conn.room_sid, role, here):
            # an overflow node of a lecture across nodes: the room's tracks are relayed here before the join
            await self.relay.ensure(conn.room_sid, host)
        elif host.id != self.node.id or (target := await self.relay.overflow_target(conn.room_sid, role, here)):
            # Redirect, not proxy: the room's media is on its host anyway (ICE candidates are the host's), and a
            # proxy would tie the class to this node's life too (docs/operations.md, "Running several nodes"). A
            # full host sends students to an overflow node instead (control/relay.py).
            to = host if host.id != self.node.id else target
            assert to is not None
            conn.ending = "redirected"
            conn.send(_error("REDIRECT", "this class is served by another node: connect there")
                      | {"ref": "join", "url": node_socket_url(to)})
            return
        key = (conn.room_sid, conn.uid)
        entry = await self.presence.take(conn.room_sid, conn.uid, self.node.id, conn.key)
        if entry is not None:  # a reconnect (here or from another node), or a second tab: the session goes on
            self._cancel_grace(key)
            old = self.owned.get(key)
            self.owned[key] = conn
            if old is not None and old is not conn:
                await self._replace(old)
            elif entry.conn is not None and entry.node != self.node.id:
                self.svc.bus.publish(Event(type="connection_replaced", org_id=grant.room.org_id,
                                           room_id=grant.room.room_id, room_sid=conn.room_sid,
                                           data={"uid": conn.uid, "conn": entry.conn}))
            if entry.node != self.node.id:  # this node holds the session now: a restart elsewhere leaves it open
                await self.svc.store.move_session(entry.session_id, self.node.id)
        else:
            if self.draining():
                conn.ending = "server_draining"
                raise SignalingError("SERVER_DRAINING", "this server is draining for a restart; join again shortly")
            session = await self.svc.classroom.open_session(conn.room_sid, conn.uid, remote)
            self.owned[key] = conn
            await self.presence.put(conn.room_sid, conn.uid, Entry(session.id, self.node.id, conn.key))
        room, me = grant.room, grant.participant
        customization = effective_customization(room.customization, me.customization)
        perms = permissions(Role(me.role), customization)
        self.rooms.setdefault(conn.room_sid, {})[conn.key] = conn
        conn.joined = True
        tracks = await self.sfu.join(conn.room_sid, conn.key, {
            "uid": me.uid, "name": me.name, "role": me.role, "permissions": sorted(p.value for p in perms),
        }, conn.send)
        roster = [participant_public(p) for p in await self.svc.store.active_participants(room.sid)]
        brief = await self.briefs.get(room)
        joined: dict[str, Any] = {
            "type": "joined",
            "room": {"roomId": room.room_id, "title": room.title, "description": room.description,
                     "status": "finished" if room.ended else "live", "topic": brief.topic},
            "participant": participant_public(me) | {"permissions": sorted(p.value for p in perms),
                                                     "customization": customization},
            "roster": roster,
            "tracks": tracks,
            "polls": await self.interaction.polls(room, me) if brief.has_polls else [],
            "chat": brief.chat,
            # A late joiner's captions: the last few minutes of the live transcript (control/tutor/service.py).
            "captions": brief.captions,
            "recording": {"active": brief.recording},
            # Static servers, then the relay with this participant's own credential, valid as long as its token.
            "iceServers": turn.ice_servers(self.svc.config.turn, self.svc.config.ice, self._turn_secret(), me.uid,
                                           grant.claims.exp),
        }
        if Permission.MODERATE in perms:
            joined["hands"] = await self.interaction.hands(room)
        conn.send(joined)

    async def _read_brief(self, room: Room) -> RoomBrief:
        """What every joiner of `room` is told besides the roster (control/room_brief.py keeps it)."""
        tutor, store = self.svc.tutor, self.svc.store
        return RoomBrief(topic=await tutor.db.topic(room.sid) if tutor else None,
                         chat=await self.interaction.recent_chat(room),
                         captions=await tutor.recent_captions(room) if tutor else [],
                         recording=bool(await store.live_recordings(room.sid)),
                         has_polls=bool(await store.room_polls(room.sid)))

    async def _replace(self, old: Connection) -> None:
        old.ending = "replaced"
        old.send(_error("REPLACED", "you joined from another connection"))
        await self._leave_media(old)
        with contextlib.suppress(asyncio.QueueFull):
            old.queue.put_nowait(None)

    async def _leave_media(self, conn: Connection) -> None:
        conns = self.rooms.get(conn.room_sid, {})
        if conns.pop(conn.key, None) is not None:
            await self.sfu.leave(conn.room_sid, conn.key)
        if not conns:
            self.rooms.pop(conn.room_sid, None)
            await self.relay.room_left(conn.room_sid)

    async def _disconnect(self, conn: Connection) -> None:
        if not conn.joined:
            return
        try:
            await self._leave_media(conn)
        except Exception:  # the session and the presence entry still end: a media error must not bill on
            log.exception("%s: leaving the media of room %s failed", conn.uid, conn.room_sid)
        key = (conn.room_sid, conn.uid)
        if self.owned.get(key) is not conn:
            return  # replaced by a newer connection, which owns the session now
        del self.owned[key]
        if conn.ending in ("removed", "class_ended") or self._stopping:
            # removed, ended: the control plane closed the session already. Stopping: the session stays open and
            # the next start closes it as server_restart, or the participant reconnects to another node within
            # the grace (a grace timer here could fire while the SFU workers stop, closing it as disconnected).
            return
        at = self.svc.clock.now_ms()
        # Compare-and-set on the shared entry: if another node took it meanwhile, there is nothing to end here.
        if not await self.presence.drop(conn.room_sid, conn.uid, conn.key, at):
            return
        if conn.ending == "left":
            entry = await self.presence.expire(conn.room_sid, conn.uid, at)
            if entry is not None:
                await self.svc.classroom.close_session(entry.session_id, "left")
        else:
            self._cancel_grace(key)
            self._graces[key] = asyncio.create_task(self._expire(key, at))

    async def _expire(self, key: tuple[str, str], dropped_at: int) -> None:
        await asyncio.sleep(self.svc.config.reconnect_grace_s)
        if self._graces.get(key) is asyncio.current_task():
            del self._graces[key]
        entry = await self.presence.expire(key[0], key[1], dropped_at)  # None: it came back (on any node)
        if entry is not None:
            await self.svc.classroom.close_session(entry.session_id, "disconnected", at=dropped_at)

    def _cancel_grace(self, key: tuple[str, str]) -> None:
        grace = self._graces.pop(key, None)
        if grace is not None:
            grace.cancel()

    def media_lost(self, keys: list[str]) -> None:
        """A media worker died with these connections on it: each is told `reconnecting` and its socket closes, so
        the SDK and the Python client join again (placed on a live worker) and publish again. The session stays
        open through the reconnect grace, so rooms, sessions and credits do not see a leave."""
        wanted = set(keys)
        for conns in list(self.rooms.values()):
            for conn in list(conns.values()):
                if conn.key in wanted:
                    conn.send({"type": "reconnecting", "reason": "media_worker_lost"})
                    conn.ending = conn.ending or "reconnecting"
                    with contextlib.suppress(asyncio.QueueFull):
                        conn.queue.put_nowait(None)

    # ---- control-plane events -----------------------------------------------------------------------------

    async def _dispatch_events(self) -> None:
        # Ends when the stop says so, not on the task's cancel count: a stop's cancel that landed inside a Redis
        # command of the last event (presence, placement) can be swallowed by redis-py (the loop then waited for
        # the next event forever, and so did the stop), and a count left over by a library's timeout that did not
        # undo its own cancel (aiohttp's, when the cancel became another error) must not end the node's events.
        while self._dispatching:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except Exception:
                log.exception("event %s failed", event.type)

    def _room(self, room_sid: str) -> list[Connection]:
        return list(self.rooms.get(room_sid, {}).values())

    @staticmethod
    def _can(conn: Connection, permission: Permission) -> bool:
        return can(Role(conn.grant.participant.role), permission)

    async def _on_event(self, event: Event) -> None:
        self.briefs.on_event(event.room_sid, event.type)
        conns = self._room(event.room_sid)
        data, kind = event.data, event.type
        if kind in ("participant_joined", "participant_left"):
            uid = data["participant"]["uid"]
            self._fan_out([c for c in conns if c.uid != uid], {"type": kind, **data})
        elif kind == "participant_removed":
            uid = data["participant"]["uid"]
            for c in conns:
                c.send({"type": kind, **data, "self": c.uid == uid})
                if c.uid == uid:
                    c.ending = "removed"
                    await self._end_connection(c)
            self._cancel_grace((event.room_sid, uid))
            await self.presence.remove(event.room_sid, uid)  # every node does it: idempotent
        elif kind == "class_ended":
            for c in conns:
                c.send({"type": kind, **data})
                c.ending = "class_ended"
                await self._end_connection(c)
            for key in [k for k in self._graces if k[0] == event.room_sid]:
                self._cancel_grace(key)
            await self.sfu.close_room(event.room_sid)  # first: the shared state below may fail while Redis is away
            self.relay.forget(event.room_sid)
            await self.presence.remove_room(event.room_sid)
            await self.placement.release(event.room_sid)  # only the host's placement goes
        elif kind == "connection_replaced":  # the uid joined on another node: its old socket here ends
            for c in conns:
                if c.key == data["conn"]:
                    await self._replace(c)
        elif kind in ("participant_muted", "participant_unmuted"):
            await self.sfu.set_blocked(event.room_sid, data["participant"]["uid"], kind == "participant_muted")
            for c in conns:
                c.send({"type": kind, **data})
        elif kind in ("hand_raised", "hand_lowered"):
            queue = data.get("queue", [])
            for c in conns:
                c.send({"type": kind, "uid": data["uid"], **({"name": data["name"]} if "name" in data else {})})
                if self._can(c, Permission.MODERATE):
                    c.send({"type": "hands", "queue": queue})
        elif kind == "poll_answered":
            for c in conns:
                if c.uid == data["uid"]:
                    c.send({"type": "poll_answered", "pollId": data["pollId"], "option": data["option"]})
                if self._can(c, Permission.CREATE_POLL):
                    c.send({"type": "poll_results", "pollId": data["pollId"], "results": data["results"]})
        else:  # chat, caption, poll_created, poll_closed, recording_started, recording_stopped, ...
            self._fan_out(conns, {"type": kind, **data})

    @staticmethod
    def _fan_out(conns: list[Connection], message: dict[str, Any]) -> None:
        """One message to many: printed once, not once per connection (a class of 100 joining at once is 5,000
        `participant_joined` messages)."""
        text = _printed(message) if conns else None
        if text is None:
            return
        for c in conns:
            c.send(text)

    async def _end_connection(self, conn: Connection) -> None:
        """Kick and end class: media stops now, the socket closes as soon as the last message is written."""
        await self._leave_media(conn)
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait(None)


def _printed(message: dict[str, Any]) -> str | None:
    """The message as strict JSON, or None (logged) for one a browser could not read (NaN, a non-JSON value)."""
    try:
        return strictjson.dumps(message)
    except (ValueError, TypeError):
        log.error("dropped a signaling message that is not strict JSON: %r", message.get("type"))
        return None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def _opt_str(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise SignalingError("BAD_MESSAGE", f"{key} must be a string")
    return value


HUB = web.AppKey("hub", Hub)


def setup(app: web.Application) -> None:
    async def start(app: web.Application) -> None:
        config = app[SERVICES].config
        if config.sfu_workers > 0:  # media in worker processes (control/workers.py); 0 = in this process
            pool = WorkerPool(config.sfu_workers, config.ice, capacity=config.sfu_worker_capacity)
            await pool.start()
            hub = Hub(app[SERVICES], pool)
            pool.on_lost = hub.media_lost
        else:
            hub = Hub(app[SERVICES], Sfu(config.ice))
        app[HUB] = hub
        await hub.start()

    async def stop(app: web.Application) -> None:
        await app[HUB].stop()

    async def rtc(request: web.Request) -> web.StreamResponse:
        return await request.app[HUB].handle(request)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.router.add_get("/v1/rtc", rtc)
    setup_routes(app, lambda app: app[HUB].relay)
