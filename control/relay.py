"""A lecture across nodes (issue 18 req 4): the room's audience past one node's capacity, its tracks relayed once per
node over SRTP-protected UDP.

A room is hosted by one node (control/placement.py). Once the host serves `CLASSCAST_NODE_CAPACITY` of the room's
participants, a new student's join there is answered with a REDIRECT to an overflow node instead
(`overflow_target`), which the host records in the placement (`Placement.add_overflow`). That node takes the
student's socket and session like a host would, but first it makes sure its router of the room is piped to every
node serving the room (`ensure`): mediasoup's pipeToRouter carried between machines, the pipe of sfu/pipe.py (the one
SFU workers of a node use) with its peer a node id, its socket on this node's relay address and every packet
SRTP-protected. So each of the host's published tracks crosses to a node once, whatever its number of students
there; layers, NACKs and keyframe requests flow back over the same pipe (SRTCP), and a student on the far node gets
NACKs answered from that node's own engine cache.

The nodes agree over authenticated HTTP calls between each other (`/internal/relay/...`, each signed with an HMAC
of the node secret, CLASSCAST_SECRET: `Signer`): the newer node opens its end and asks the other to open and
connect its own (`open`: one round trip, the host also names the room's other serving nodes, which the newer node
pipes to as well, a mesh as between workers); then each side tells the other the tracks published on it that
appear, disappear or mute (`track`, in order per peer node), and a node left with no participant of a room it does
not host closes its pipes (`close`). A peer node whose lease lapsed (control/placement.py) has its pipes closed
here. The pipe's SRTP keys are never sent: each end derives both directions' keys (HKDF-SHA256) from the shared
secret and the pipe's random id, which the opening call carries.

With media in SFU worker processes (control/workers.py) a room's pipes to other nodes sit on its origin worker, the
node's gateway: a track published on another worker of the node reaches the gateway by its worker pipe and crosses
to the other nodes from there, and a track from another node goes on from the gateway to the node's other workers
(sfu/router.py `_crosses`), so each track reaches each node once and each worker once. When the gateway dies, the
host opens its relays again (the students elsewhere keep their sockets), and an overflow node's students reconnect
and pipe the room again with their join.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from control.background import stop_tasks
from control.errors import ApiError
from control.placement import LocalPlacement, Node, Placement
from control.presence import Presence
from control.roles import Role
from control.workers import WorkerPool
from sfu.errors import SignalingError
from sfu.pipe import SRTP_KEY_BYTES
from sfu.router import Sfu

log = logging.getLogger("classcast.relay")

HEADER = "X-Classcast-Relay"
WINDOW_MS = 60_000  # a signed call older (or newer) than this is refused
TIMEOUT_S = 10.0
JOIN_WINDOW_S = 10.0  # an overflow node keeps a room's pipes this long after a join needed them, even if empty
AUDIENCE = frozenset({Role.STUDENT.value})  # who may be served by an overflow node; the others join the host


def _hkdf(secret: bytes, salt: bytes, info: str, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info.encode()).derive(secret)


def pipe_keys(secret: bytes, pipe_id: str, me: str, peer: str) -> tuple[bytes, bytes]:
    """(this end's sending key, its receiving key) of pipe `pipe_id` between nodes `me` and `peer`: one key per
    direction, so the two ends never encrypt under one key."""
    salt = pipe_id.encode()
    return (_hkdf(secret, salt, f"classcast relay srtp {me}>{peer}", SRTP_KEY_BYTES),
            _hkdf(secret, salt, f"classcast relay srtp {peer}>{me}", SRTP_KEY_BYTES))


class Signer:
    """Calls between nodes carry `X-Classcast-Relay: <unix ms>.<nonce>.<HMAC-SHA256 hex>` over the time, nonce,
    method, path and body, keyed by a key derived from the node secret: only nodes of the district can open, feed or
    close a pipe, and a call seen once is refused again (a replayed `open` would replace a live pipe with a dead
    one)."""

    def __init__(self, secret: bytes) -> None:
        self.key = _hkdf(secret, b"classcast", "classcast relay control", 32)
        self._seen: dict[str, int] = {}  # nonce -> its call's time, kept while the call would still be accepted

    def _mac(self, at: int, nonce: str, method: str, path_qs: str, body: bytes) -> str:
        message = f"{at}\n{nonce}\n{method.upper()}\n{path_qs}\n".encode() + body
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path_qs: str, body: bytes, now_ms: int | None = None) -> str:
        at = int(time.time() * 1000) if now_ms is None else now_ms
        nonce = secrets.token_hex(8)
        return f"{at}.{nonce}.{self._mac(at, nonce, method, path_qs, body)}"

    def verify(self, header: str, method: str, path_qs: str, body: bytes) -> None:
        at_text, nonce, mac = [*header.split(".", 2), "", ""][:3]
        try:
            at = int(at_text)
        except ValueError:
            raise ApiError(401, "Not a signed call between nodes", "Unauthorized") from None
        now = int(time.time() * 1000)
        if abs(now - at) > WINDOW_MS or not nonce or \
                not hmac.compare_digest(mac, self._mac(at, nonce, method, path_qs, body)):
            raise ApiError(401, "Not a signed call between nodes", "Unauthorized")
        if nonce in self._seen:
            raise ApiError(401, "This call was made already", "Unauthorized")
        if len(self._seen) > 10_000:
            self._seen = {n: t for n, t in self._seen.items() if now - t <= WINDOW_MS}
        self._seen[nonce] = at


def relay_host(node_url: str, configured: str = "") -> str:
    """The address this node's relay sockets bind and give other nodes: CLASSCAST_RELAY_HOST, else the host of the
    node's URL (resolved), else loopback."""
    if configured:
        return configured
    host = urlsplit(node_url).hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    with contextlib.suppress(OSError):
        if host:
            return socket.gethostbyname(host)
    return "127.0.0.1"


class _InProcess:
    """The relay's view of media in this process (`Sfu`), the same calls as WorkerPool's relay_* ones."""

    def __init__(self, sfu: Sfu) -> None:
        self.sfu = sfu

    async def relay_open(self, room_sid: str, peer: str, loss: float, host: str, keys: tuple[bytes, bytes]) -> int:
        return self.sfu.open_pipe(room_sid, peer, loss, host, keys)

    async def relay_connect(self, room_sid: str, peer: str, port: int, host: str) -> list[dict[str, Any]]:
        return self.sfu.connect_pipe(room_sid, peer, port, host)

    def relay_track(self, room_sid: str, peer: str, event: dict[str, Any]) -> None:
        self.sfu.pipe_track(room_sid, peer, event)

    def relay_close(self, room_sid: str, peer: str) -> None:
        self.sfu.close_pipe(room_sid, peer)

    def relay_held(self, room_sid: str) -> bool:
        router = self.sfu.routers.get(room_sid)
        return router is not None and bool(router.participants)

    async def room_stats(self, room_sid: str, worker_index: int | None = None) -> dict[str, Any]:
        return self.sfu.stats(room_sid)


class NodeRelay:
    """This node's side of the rooms it shares with other nodes (one per process, made with the Hub)."""

    def __init__(self, sfu: Any, placement: Placement, presence: Presence, secret: bytes, capacity: int,
                 host: str, loss: float = 0.0, lease_s: float = 5.0) -> None:
        self.sfu = sfu
        self.placement = placement
        self.presence = presence
        self.node = placement.node
        self.secret = secret
        self.signer = Signer(secret)
        self.capacity = capacity  # participants of one room on this node before students go elsewhere; 0: never
        self.host = host
        self.loss = loss  # tests only: a share of the relayed RTP this node's pipes drop
        self.lease_s = lease_s
        self.media: Any = _InProcess(sfu) if isinstance(sfu, Sfu) else sfu
        # several nodes (a shared placement), media this process can pipe, a capacity: else all of it is idle
        self.enabled = isinstance(sfu, Sfu | WorkerPool) and capacity > 0 and not isinstance(placement, LocalPlacement)
        self.peers: dict[str, dict[str, Node]] = {}  # room sid -> peer node id -> the node
        self._locks: dict[str, asyncio.Lock] = {}
        self._pipe_ids: dict[tuple[str, str], str] = {}  # (room sid, peer id) -> the id of the pipe open now
        self._ensured: dict[str, float] = {}  # room sid -> when a join last needed its pipes (joins take a moment)
        self._outbox: dict[str, asyncio.Queue[tuple[Node, str, dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if not self.enabled:
            return
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        if isinstance(self.sfu, Sfu):
            self.sfu.on_track = self._on_track  # the routers' own tracks, told to the nodes their pipes reach
        else:
            self.sfu.on_relay_track = self._on_track
            self.sfu.on_relay_lost = self._lost
        self._spawn(self._watch())

    async def close(self) -> None:
        await stop_tasks(*self._tasks)
        if self.http is not None:
            await self.http.close()
            self.http = None

    # ---- who goes where -----------------------------------------------------------------------------------

    async def overflow_target(self, room_sid: str, role: str, here: int) -> Node | None:
        """On the host, for a joining participant of `role` while `here` of the room's connections are on this node:
        the node to redirect it to, or None to serve it here. A node already serving the room with room left comes
        first, then the live node holding fewest of the room's participants; with no other live node the host takes
        it anyway (a full node is better than no class)."""
        if not self.enabled or role not in AUDIENCE or here < self.capacity:
            return None
        others = [n for n in await self.placement.nodes(fresh=True) if n.id != self.node.id]
        if not others:
            return None
        counts: dict[str, int] = {}
        for entry in (await self.presence.room(room_sid)).values():
            if entry.conn is not None:
                counts[entry.node] = counts.get(entry.node, 0) + 1
        serving = await self.placement.overflow(room_sid)
        free = [n for n in others if counts.get(n.id, 0) < self.capacity]
        if not free:
            return None
        target = min(free, key=lambda n: (n.id not in serving, counts.get(n.id, 0), n.id))
        await self.placement.add_overflow(room_sid, target.id)
        log.info("room %s: %d participants on this node (capacity %d): a student goes to node %s", room_sid, here,
                 self.capacity, target.id)
        return target

    async def serves(self, room_sid: str, role: str, here: int) -> bool:
        """On a node that does not host the room, holding `here` of its connections: whether it takes this participant
        as an overflow node (one with room left; a full one sends it to the host, which picks another)."""
        return self.enabled and role in AUDIENCE and here < self.capacity and \
            self.node.id in await self.placement.overflow(room_sid)

    # ---- pipes --------------------------------------------------------------------------------------------

    async def ensure(self, room_sid: str, host: Node) -> None:
        """Before an overflow student's join: this node's router of the room is piped to the host and to every other
        node the host pipes it to."""
        self._ensured[room_sid] = time.monotonic()
        async with self._locks.setdefault(room_sid, asyncio.Lock()):
            if host.id in self.peers.get(room_sid, {}):
                return
            others = await self._handshake(room_sid, host)
            live = {n.id for n in await self.placement.nodes()} if others else set()
            for peer in others:
                # Only live peers, never this node's own URL: a node that died is named by the host until its lease
                # lapses, and a restarted node has its predecessor's URL (a call to itself would wait on this lock).
                if peer.id in live and peer.id != self.node.id and peer.url != self.node.url and \
                        peer.id not in self.peers.get(room_sid, {}):
                    try:
                        await self._handshake(room_sid, peer)
                    except SignalingError as exc:  # that node's students miss this node's tracks; the lecture goes on
                        log.warning("room %s: no pipe to node %s: %s", room_sid, peer.id, exc.message)

    async def _handshake(self, room_sid: str, peer: Node) -> list[Node]:
        pipe_id = secrets.token_hex(16)
        keys = pipe_keys(self.secret, pipe_id, self.node.id, peer.id)
        port = await self.media.relay_open(room_sid, peer.id, self.loss, self.host, keys)
        # known from now on: the peer's track events may arrive before its answer (they feed the open pipe end)
        self.peers.setdefault(room_sid, {})[peer.id] = peer
        self._pipe_ids[room_sid, peer.id] = pipe_id
        try:
            answer = await self._call(peer, "open", {"room": room_sid, "node": self.node.id, "url": self.node.url,
                                                     "host": self.host, "port": port, "pipe": pipe_id})
            mine = await self.media.relay_connect(room_sid, peer.id, int(answer["port"]), str(answer["host"]))
        except BaseException:
            self.peers.get(room_sid, {}).pop(peer.id, None)
            self._pipe_ids.pop((room_sid, peer.id), None)
            self.media.relay_close(room_sid, peer.id)
            raise
        for track in answer.get("tracks") or []:
            self.media.relay_track(room_sid, peer.id, {"f": "added", "track": track})
        for track in mine:
            self._tell(peer, "track", {"room": room_sid, "f": "added", "track": track})
        log.info("room %s relayed with node %s (%s:%s <-> %s:%s, SRTP): %d tracks from it, %d to it", room_sid,
                 peer.id, self.host, port, answer["host"], answer["port"], len(answer.get("tracks") or []),
                 len(mine))
        return [Node(str(p["id"]), str(p["url"])) for p in answer.get("peers") or []]

    async def room_left(self, room_sid: str) -> None:
        """This node holds no participant of the room any more: unless it hosts it, its pipes close at both ends."""
        peers = self.peers.get(room_sid)
        if not peers:
            return
        host = await self.placement.host(room_sid)
        if host is not None and host.id == self.node.id:
            return  # the host keeps the room's pipes while other nodes' students watch (its teacher may return)
        wait = self._ensured.get(room_sid, 0.0) + JOIN_WINDOW_S - time.monotonic()
        if wait > 0:  # a student's join piped the room a moment ago and may not have reached the SFU yet: later
            async def later() -> None:
                await asyncio.sleep(wait)
                await self.room_left(room_sid)

            self._spawn(later())
            return
        async with self._locks.setdefault(room_sid, asyncio.Lock()):
            if self._held(room_sid):
                return  # a participant joined again meanwhile
            for peer in list(self.peers.pop(room_sid, {}).values()):
                self.media.relay_close(room_sid, peer.id)
                self._tell_close(room_sid, peer)
            self._locks.pop(room_sid, None)
            self._ensured.pop(room_sid, None)
        log.info("room %s: no participant left on this node, its relays closed", room_sid)

    def _held(self, room_sid: str) -> bool:
        return bool(self.media.relay_held(room_sid))

    def _lost(self, room_sid: str) -> None:
        """The worker holding the room's relays died (media in workers): the far ends are told; the host opens them
        again once the room is on a live worker, an overflow node when its students come back (ensure)."""
        peers = self.peers.pop(room_sid, {})
        if not peers:
            return
        for peer in peers.values():
            self._tell_close(room_sid, peer)  # names the dead pipe: a new one opened meanwhile is not closed

        async def reopen() -> None:
            host = await self.placement.host(room_sid)
            if host is None or host.id != self.node.id:
                return
            await asyncio.sleep(0.5)  # the worker restarts meanwhile; the room is placed on a live one
            async with self._locks.setdefault(room_sid, asyncio.Lock()):
                for peer in peers.values():
                    if peer.id in self.peers.get(room_sid, {}):
                        continue
                    try:
                        await self._handshake(room_sid, peer)
                    except SignalingError as exc:
                        log.warning("room %s: relay to node %s not reopened: %s", room_sid, peer.id, exc.message)

        self._spawn(reopen())

    def _tell_close(self, room_sid: str, peer: Node) -> None:
        """The peer closes its end of this pipe, and only of this one (the close is queued; a newer pipe's open is
        not, and may get there first)."""
        self._tell(peer, "close", {"room": room_sid, "pipe": self._pipe_ids.pop((room_sid, peer.id), "")})

    def forget(self, room_sid: str) -> None:
        """The class ended (every node hears it on the bus and closes its router, pipes included)."""
        for peer_id in self.peers.get(room_sid, {}):
            self._pipe_ids.pop((room_sid, peer_id), None)
        self.peers.pop(room_sid, None)
        self._locks.pop(room_sid, None)
        self._ensured.pop(room_sid, None)

    def _on_track(self, room_sid: str, event: dict[str, Any]) -> None:
        if event.get("scope") == "workers":
            return  # a track that came from another node (only a worker pipe's business)
        event = {k: v for k, v in event.items() if k != "scope"}
        for peer in self.peers.get(room_sid, {}).values():
            self._tell(peer, "track", {"room": room_sid, **event})

    async def _watch(self) -> None:
        """Every second: a peer node that died (its lease lapsed) has its pipes closed here, its tracks leave the
        rooms; and a room this node serves students of but does not host is piped to its host again when the host
        changed (the old one died or stopped and the class was placed on another node at a join)."""
        while True:
            await asyncio.sleep(1.0)
            if not self.peers:
                continue
            try:
                live = {n.id for n in await self.placement.nodes()}
            except Exception as exc:
                log.warning("relay: live nodes unknown (%s)", exc)
                continue
            for room_sid, peers in list(self.peers.items()):
                for peer_id in [p for p in peers if p not in live]:
                    log.warning("room %s: node %s is gone, its relay closes", room_sid, peer_id)
                    peers.pop(peer_id, None)
                    self._pipe_ids.pop((room_sid, peer_id), None)
                    self.media.relay_close(room_sid, peer_id)
                try:
                    host = await self.placement.host(room_sid)
                    if host is not None and host.id != self.node.id and host.id not in peers and \
                            self._held(room_sid):
                        log.info("room %s: its host is node %s now, piped again", room_sid, host.id)
                        await self.ensure(room_sid, host)
                except SignalingError as exc:  # the next look tries again
                    log.warning("room %s: no relay to its new host: %s", room_sid, exc.message)
                except Exception:
                    log.exception("room %s: no relay to its new host", room_sid)

    # ---- calls between nodes --------------------------------------------------------------------------------

    def _tell(self, peer: Node, op: str, body: dict[str, Any]) -> None:
        """An ordered, unanswered call to a peer node (track events, close): one sender per peer keeps the order."""
        queue = self._outbox.get(peer.id)
        if queue is None:
            queue = self._outbox[peer.id] = asyncio.Queue()
            self._spawn(self._send_loop(queue))
        queue.put_nowait((peer, op, body))

    async def _send_loop(self, queue: asyncio.Queue[tuple[Node, str, dict[str, Any]]]) -> None:
        while True:
            peer, op, body = await queue.get()
            try:
                await self._call(peer, op, body)
            except SignalingError as exc:
                log.warning("relay %s to node %s failed: %s", op, peer.id, exc.message)
            except Exception:  # the sender goes on: a later call of this peer must not wait forever
                log.exception("relay %s to node %s failed", op, peer.id)

    async def _call(self, peer: Node, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            raise SignalingError("NODE_UNAVAILABLE", "the relay is not running")
        path = f"/internal/relay/{op}"
        data = json.dumps(body | {"node": self.node.id}).encode()
        headers = {HEADER: self.signer.sign("POST", path, data), "Content-Type": "application/json"}
        try:
            async with self.http.post(peer.url + path, data=data, headers=headers) as reply:
                payload = await reply.json(content_type=None)
                if reply.status != 200:
                    raise SignalingError("NODE_UNAVAILABLE", f"node {peer.id} answered {reply.status}: {payload}")
                return dict(payload)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignalingError("NODE_UNAVAILABLE", f"node {peer.id} did not answer: {exc!r}") from None

    # ---- this node's side of those calls ----------------------------------------------------------------------

    async def _verified(self, request: web.Request) -> dict[str, Any]:
        if not self.enabled:
            raise ApiError(404, "This node relays no media between nodes", "NOT_FOUND")
        body = await request.read()
        self.signer.verify(request.headers.get(HEADER, ""), request.method, request.rel_url.path_qs, body)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, "not JSON", "BAD_REQUEST") from None
        if not isinstance(data, dict) or not isinstance(data.get("room"), str) or not isinstance(data.get("node"), str):
            raise ApiError(400, "room and node are strings", "BAD_REQUEST")
        return data

    async def on_open(self, data: dict[str, Any]) -> dict[str, Any]:
        room_sid, caller = data["room"], Node(str(data["node"]), str(data["url"]))
        host = await self.placement.host(room_sid)
        if (host is None or host.id != self.node.id) and self.node.id not in await self.placement.overflow(room_sid):
            raise ApiError(409, "This node does not serve that class", "NOT_SERVED")
        async with self._locks.setdefault(room_sid, asyncio.Lock()):
            self.media.relay_close(room_sid, caller.id)  # the caller's earlier pipe, if any: replaced
            keys = pipe_keys(self.secret, str(data["pipe"]), self.node.id, caller.id)
            peers = self.peers.setdefault(room_sid, {})
            live = {n.id for n in await self.placement.nodes()}
            others = [{"id": p.id, "url": p.url} for p in peers.values()
                      if p.id != caller.id and p.id in live and p.url != caller.url]
            peers[caller.id] = caller  # before the pipe exists: a track published meanwhile is told to the caller
            self._pipe_ids[room_sid, caller.id] = str(data["pipe"])
            try:
                port = await self.media.relay_open(room_sid, caller.id, self.loss, self.host, keys)
                tracks = await self.media.relay_connect(room_sid, caller.id, int(data["port"]), str(data["host"]))
            except (SignalingError, OSError, ValueError) as exc:
                peers.pop(caller.id, None)
                self._pipe_ids.pop((room_sid, caller.id), None)
                self.media.relay_close(room_sid, caller.id)
                raise ApiError(400, f"cannot reach the caller's relay: {exc!r}", "BAD_REQUEST") from None
        log.info("room %s relayed with node %s at its call (%d tracks to it)", room_sid, caller.id, len(tracks))
        return {"host": self.host, "port": port, "tracks": tracks, "peers": others}

    async def on_track(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["node"] in self.peers.get(data["room"], {}):
            self.media.relay_track(data["room"], data["node"], data)
        return {}

    async def on_close(self, data: dict[str, Any]) -> dict[str, Any]:
        room_sid, caller = data["room"], data["node"]
        if self._pipe_ids.get((room_sid, caller)) != data.get("pipe"):
            return {}  # an older pipe's close, overtaken by the open of the one in use now
        self._pipe_ids.pop((room_sid, caller), None)
        if self.peers.get(room_sid, {}).pop(caller, None) is not None:
            self.media.relay_close(room_sid, caller)
        return {}

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def setup_routes(app: web.Application, relay_of: Callable[[web.Application], NodeRelay]) -> None:
    """`/internal/relay/{open,track,close}` (signed calls between nodes) and `GET /internal/relay/stats` (signed
    too: what the room's pipes here carried, for operators and the tests)."""

    def route(handler: Callable[[NodeRelay, dict[str, Any]], Awaitable[dict[str, Any]]]) -> Any:
        async def serve(request: web.Request) -> web.Response:
            relay = relay_of(request.app)
            try:
                return web.json_response(await handler(relay, await relay._verified(request)))
            except ApiError as exc:
                return web.json_response({"code": exc.code, "message": exc.message}, status=exc.status)
            except (KeyError, TypeError, ValueError) as exc:  # a signed call from a node of another version
                return web.json_response({"code": "BAD_REQUEST", "message": repr(exc)}, status=400)
        return serve

    async def stats(request: web.Request) -> web.Response:
        relay = relay_of(request.app)
        try:
            if not relay.enabled:
                raise ApiError(404, "This node relays no media between nodes", "NOT_FOUND")
            relay.signer.verify(request.headers.get(HEADER, ""), "GET", request.rel_url.path_qs, b"")
        except ApiError as exc:
            return web.json_response({"code": exc.code, "message": exc.message}, status=exc.status)
        room_sid = request.query.get("room", "")
        if not room_sid and request.query.get("roomId"):  # by the integrator's room id in an organization
            from control.services import SERVICES

            room = await request.app[SERVICES].store.get_room(request.query.get("org", ""), request.query["roomId"])
            room_sid = room.sid if room is not None else ""
        worker = request.query.get("worker")  # one worker's view of a room spread over several
        stats = await relay.media.room_stats(room_sid, int(worker) if worker and worker.isdigit() else None)
        return web.json_response(stats | {"node": relay.node.id, "peers": sorted(relay.peers.get(room_sid, {}))})

    app.router.add_post("/internal/relay/open", route(NodeRelay.on_open))
    app.router.add_post("/internal/relay/track", route(NodeRelay.on_track))
    app.router.add_post("/internal/relay/close", route(NodeRelay.on_close))
    app.router.add_get("/internal/relay/stats", stats)
