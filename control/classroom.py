"""Room lifecycle, participants, sessions and credits: the control plane's rules in one place.

REST handlers and the signaling layer both call this service; it owns the ordering of side effects (database
first, then events) so that an event never announces something the database does not hold. Webhooks go further:
their outbox rows are written in the same transaction (`Store.atomic`) as the change they announce.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from control import credits as cr
from control.auth import Auth
from control.clock import Clock, iso
from control.config import Config
from control.errors import ApiError, insufficient_credits, participant_not_found, room_ended, room_not_found
from control.events import Event, EventBus
from control.ids import new_id
from control.store.records import Org, Participant, Room, Session
from control.store.store import RoomIdTaken, Store
from control.store.webhooks import WebhookStore
from control.webhooks.outbox import Outbox

log = logging.getLogger("classcast.classroom")

DEFAULT_MAX_PARTICIPANTS = 1000
MAX_MAX_PARTICIPANTS = 5000
DEFAULT_EMPTY_TIMEOUT_S = 300  # the docs' value; the SDK comment's 1200 s is not what the docs promise
MAX_EMPTY_TIMEOUT_S = 1800
HEARTBEAT_KEY = "heartbeat_ms"


@dataclass(frozen=True, slots=True)
class ParticipantSpec:
    uid: str
    name: str
    role: str
    photo_url: str | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class RoomSpec:
    room_id: str
    title: str
    description: str | None
    customization: dict[str, Any]
    max_participants: int = DEFAULT_MAX_PARTICIPANTS
    empty_timeout: int = DEFAULT_EMPTY_TIMEOUT_S
    auto_close: bool = False


def participant_public(p: Participant) -> dict[str, Any]:
    """How a participant is shown to integrators and to other participants (both photo spellings: reference 3.1)."""
    return {
        "uid": p.uid, "name": p.name, "role": p.role, "photoURL": p.photo_url, "photoUrl": p.photo_url,
        "muted": p.muted,
    }



def room_state(room: Room) -> str:
    """One answer for status (`isActive`), summary and list (`status`), after the reference's life cycle:
    "created" until the class starts (the first participant connects), "live" until it ends, then "finished"."""
    if room.ended:
        return "finished"
    return "live" if room.started_at is not None else "created"

def _require_seat(room: Room, present: int, already_present: bool) -> None:
    """ROOM_FULL unless there is a seat; one already present (a second tab, a reconnect) always has one."""
    if present >= room.max_participants and not already_present:
        raise ApiError(403, f"Room is full (maxParticipants {room.max_participants})", "ROOM_FULL")


class Classroom:
    def __init__(self, config: Config, store: Store, auth: Auth, bus: EventBus, clock: Clock,
                 outbox: Outbox | None = None, node_id: str | None = None) -> None:
        self.config = config
        self.node_id = node_id  # written on the sessions this node opens (control/wiring.py's node id)
        self.store = store
        self.auth = auth
        self.bus = bus
        self.clock = clock
        self.outbox = outbox or Outbox(WebhookStore(store), clock)
        self._room_locks: dict[str, asyncio.Lock] = {}
        store.credits_moved = self._credits_moved

    def _lock(self, room_sid: str) -> asyncio.Lock:
        """Queues this process's session changes of one room, so they wait here, in order, instead of each holding
        a pooled connection while it waits on the database (SQLite's busy handler polls). Correctness does not
        rest on it: each such change runs in one transaction that starts with `Store.lock_room`, which is what
        keeps two nodes (or two processes on one SQLite file) from both taking the last seat."""
        lock = self._room_locks.get(room_sid)
        if lock is None:
            lock = self._room_locks[room_sid] = asyncio.Lock()
        return lock

    def _emit(self, type_: str, room: Room, **data: Any) -> None:
        self.bus.publish(Event(type=type_, org_id=room.org_id, room_id=room.room_id, room_sid=room.sid, data=data))

    async def _webhook(self, type_: str, room: Room, **data: Any) -> None:
        """The outbox row; call inside the `store.atomic()` block of the change it announces."""
        await self.outbox.record(type_, room.org_id, {"roomId": room.room_id, "roomSid": room.sid, **data},
                                 room_sid=room.sid)

    async def _webhook_left(self, room: Room, closed: list[Session], reason: str) -> None:
        """participant_left for each participant whose last open session `closed` holds."""
        still = {s.participant_id for s in await self.store.room_sessions(room.sid, active_only=True)}
        seen: set[str] = set()
        for s in closed:
            if s.participant_id in still or s.participant_id in seen:
                continue
            seen.add(s.participant_id)
            participant = await self.store.get_participant_by_id(s.participant_id)
            if participant is not None:
                await self._webhook("participant_left", room, participant=participant_public(participant),
                                    reason=reason, leftAt=iso(s.left_at))

    # ---- rooms -----------------------------------------------------------------------------------------------

    async def get_room(self, org: Org, room_id: str) -> Room:
        room = await self.store.get_room(org.id, room_id)
        if room is None:
            raise room_not_found()
        return room

    def _require_start_credits(self, org: Org) -> None:
        if org.credits < self.config.min_credits_to_start:
            raise insufficient_credits()

    def _token_reply(self, token: str, exp_ms: int) -> dict[str, Any]:
        return {
            "token": token,
            "iframeUrl": f"{self.config.base_url}/iframe/live?token={token}",
            "expiresAt": iso(exp_ms),
        }

    async def create_room(
        self, org: Org, spec: RoomSpec, participant: ParticipantSpec, participant_customization: dict[str, Any],
        ttl_s: int,
    ) -> dict[str, Any]:
        self._require_start_credits(org)
        room = Room(
            sid=new_id("RM_"), org_id=org.id, room_id=spec.room_id, title=spec.title, description=spec.description,
            customization=spec.customization, max_participants=spec.max_participants,
            empty_timeout=spec.empty_timeout, auto_close=spec.auto_close, created_at=self.clock.now_ms(),
        )
        try:
            await self.store.insert_room(room)
        except RoomIdTaken:
            raise ApiError(
                409, f"Room ID '{spec.room_id}' already exists. A roomId cannot be reused, even after the room "
                "ended.", "ROOM_ALREADY_EXISTS",
            ) from None
        p = await self._upsert(room, participant, participant_customization)
        token, exp_ms = self.auth.issue(org.id, room, p, ttl_s)
        reply = self._token_reply(token, exp_ms)
        # Both shapes: the docs read data.room.roomId, the official SDK reads data.roomId (reference 2.1).
        reply["roomId"] = room.room_id
        reply["room"] = {"roomId": room.room_id, "sid": room.sid}
        return reply

    async def _upsert(self, room: Room, spec: ParticipantSpec, customization: dict[str, Any]) -> Participant:
        return await self.store.upsert_participant(
            room.sid, spec.uid, spec.name, spec.role, spec.photo_url, customization, spec.metadata,
            self.clock.now_ms(),
        )

    async def join(
        self, org: Org, room_id: str, spec: ParticipantSpec, customization: dict[str, Any], ttl_s: int
    ) -> dict[str, Any]:
        room = await self.get_room(org, room_id)
        if room.ended:
            raise room_not_found()  # join-room: "No such room ID, or the room has ended."
        existing = await self.store.get_participant(room.sid, spec.uid)
        if existing is not None and existing.removed:
            raise ApiError(403, "Participant was removed from this room", "PARTICIPANT_REMOVED")
        await self._check_capacity(room, spec.uid)
        if room.started_at is None:
            self._require_start_credits(org)
        p = await self._upsert(room, spec, customization)
        token, exp_ms = self.auth.issue(org.id, room, p, ttl_s)
        return self._token_reply(token, exp_ms)

    async def _check_capacity(self, room: Room, uid: str) -> None:
        _require_seat(room, *await self.store.presence(room.sid, uid))

    async def status(self, org: Org, room_id: str) -> dict[str, Any]:
        room = await self.store.get_room(org.id, room_id)
        if room is None:
            return {"exists": False, "isActive": False, "roomId": room_id}
        active = await self.store.active_participants(room.sid)
        recording = bool(await self.store.live_recordings(room.sid)) if not room.ended else False
        return {
            "exists": True,
            "isActive": room_state(room) == "live",
            "roomId": room.room_id,
            "title": room.title,
            "participantCount": len(active),
            "hasTeacher": any(p.role == "TEACHER" for p in active),
            "isRecording": recording,
            "createdAt": iso(room.created_at),
            "startedAt": iso(room.started_at),
            "endedAt": iso(room.ended_at),
        }

    async def end_room(self, room: Room, reason: str) -> dict[str, Any]:
        """DELETE /v1/room/:roomId, the teacher's End Class, and the empty-room timeout all end a room here."""
        async with self._lock(room.sid), self.store.atomic():
            await self.store.lock_room(room.sid)
            now = self.clock.now_ms()
            if not await self.store.finish_room(room.sid, now, reason):
                raise room_ended()
            closed = await self.store.close_sessions(now, "class_ended", room_sid=room.sid)
            recordings = await self.store.live_recordings(room.sid)
            if recordings:
                # The recorder finalizes them; EGRESS_ENDING until it reports the file (issue: recorder).
                await self.store.set_recording_status([r.id for r in recordings], "EGRESS_ENDING")
            room.ended_at, room.end_reason = now, reason
            await self._bill(room, now)
            await self._webhook_left(room, closed, "class_ended")
            await self._webhook("room_finished", room, reason=reason, startedAt=iso(room.started_at),
                                endedAt=iso(now), creditsUsed=room.credits_debited, wasRecording=bool(recordings))
        self._room_locks.pop(room.sid, None)
        self._emit("class_ended", room, reason=reason, endedAt=iso(now), wasRecording=bool(recordings))
        return {
            "roomId": room.room_id,
            "participantsDisconnected": len({s.participant_id for s in closed}),
            "wasRecording": bool(recordings),
            "endedAt": iso(now),
        }

    async def list_rooms(self, org: Org, status: str, page: int, limit: int) -> dict[str, Any]:
        rooms, total = await self.store.list_rooms(org.id, status, (page - 1) * limit, limit)
        items = []
        for room in rooms:
            active = [] if room.ended else await self.store.active_participants(room.sid)
            items.append({
                "roomId": room.room_id, "sid": room.sid, "title": room.title, "description": room.description,
                "status": room_state(room), "participantCount": len(active),
                "createdAt": iso(room.created_at), "startedAt": iso(room.started_at), "endedAt": iso(room.ended_at),
                "settings": {"maxParticipants": room.max_participants, "emptyTimeout": room.empty_timeout,
                             "autoClose": room.auto_close},
            })
        return {
            "rooms": items,
            "pagination": {"page": page, "limit": limit, "total": total, "totalPages": -(-total // limit)},
        }

    # ---- summary and credits ---------------------------------------------------------------------------------

    async def summary(self, org: Org, room_id: str) -> dict[str, Any]:
        room = await self.get_room(org, room_id)
        sessions = await self.store.room_sessions(room.sid)
        now = self.clock.now_ms()
        total_ms = sum(s.duration_ms(now) for s in sessions)
        unique = len({s.uid for s in sessions})
        return {
            "roomId": room.room_id,
            "roomName": room.title,
            "totalCredits": cr.credits_for(total_ms),
            "totalParticipants": unique,
            "avgStay": cr.avg_stay_s(total_ms, unique),
            "timestamps": {"startedAt": iso(room.started_at), "endedAt": iso(room.ended_at)},
            "status": room_state(room),
        }

    async def _bill(self, room: Room, now: int) -> int:
        """Debit the organization up to the room's credits so far; the room's debits always equal its summary."""
        sessions = await self.store.room_sessions(room.sid)
        total_ms = sum(s.duration_ms(now) for s in sessions)
        return await self.store.bill_room(room, cr.credits_for(total_ms), now)

    async def _credits_moved(self, org_id: str, before: int, after: int, reason: str, room_sid: str | None) -> None:
        """Any debit (a class, the AI tutor) that takes the balance below `credits_low` writes that webhook, in the
        debit's own transaction (the store calls this from inside it)."""
        threshold = self.config.credits_low
        if not after < threshold <= before:
            return
        room = await self.store.get_room_by_sid(room_sid) if room_sid else None
        await self.outbox.record("credits_low", org_id, {
            "remainingCredits": after, "threshold": threshold, "reason": reason,
            "roomId": room.room_id if room else None, "at": iso(self.clock.now_ms())})

    # ---- sessions (called by signaling) ----------------------------------------------------------------------

    async def open_session(self, room_sid: str, uid: str, ip_address: str | None = None) -> Session:
        """A participant's connection starts: the class starts with the first one."""
        async with self._lock(room_sid), self.store.atomic():
            # Lock, reads, check and write in one transaction: another node's join of this room waits at the lock
            # and then counts this one. One query reads the room, the participant, how many are present and
            # whether this uid is (no roster build: a class joining at once was O(room^2)).
            await self.store.lock_room(room_sid)
            room, participant, present, already_present = await self.store.join_view(room_sid, uid)
            if room is None:
                raise room_not_found()
            if room.ended:
                raise ApiError(410, "Class has ended", "ROOM_ENDED")
            if participant is None:
                raise participant_not_found()
            if participant.removed:
                raise ApiError(403, "Participant was removed from this room", "PARTICIPANT_REMOVED")
            _require_seat(room, present, already_present)
            now = self.clock.now_ms()
            if room.started_at is None:
                org = await self.store.get_org(room.org_id)
                if org is None:
                    raise room_not_found()
                self._require_start_credits(org)
                room.started_at = now
                await self.store.update_room(room.sid, started_at=now, emptied_at=None)
                await self._webhook("room_started", room, title=room.title, startedAt=iso(now))
            elif room.emptied_at is not None:
                await self.store.update_room(room.sid, emptied_at=None)
            session = Session(
                id=new_id("SE_"), participant_id=participant.id, room_sid=room_sid, org_id=room.org_id, uid=uid,
                joined_at=now, left_at=None, leave_reason=None, ip_address=ip_address, node=self.node_id,
            )
            await self.store.insert_session(session)
            if not already_present:
                await self._webhook("participant_joined", room, participant=participant_public(participant),
                                    joinedAt=iso(now))
        if not already_present:
            self._emit("participant_joined", room, participant=participant_public(participant))
        return session

    async def close_session(self, session_id: str, reason: str = "left", at: int | None = None) -> Session | None:
        """A connection ends (leave, drop, kick). Idempotent: closing a closed session does nothing.

        `at` backdates the end: a dropped connection ends when it dropped, not when its reconnect grace ran out.
        """
        session = await self.store.get_session(session_id)
        if session is None or not session.active:
            return None
        async with self._lock(session.room_sid), self.store.atomic():
            await self.store.lock_room(session.room_sid)
            end = self.clock.now_ms() if at is None else max(session.joined_at, min(at, self.clock.now_ms()))
            closed = await self.store.close_sessions(end, reason, session_id=session_id)
            if not closed:
                return None
            room = await self.store.get_room_by_sid(session.room_sid)
            assert room is not None
            now = closed[0].left_at or self.clock.now_ms()
            remaining = await self.store.room_sessions(room.sid, active_only=True)
            if not remaining and not room.ended:
                await self.store.update_room(room.sid, emptied_at=now)
            await self._bill(room, now)
            if not room.ended:
                await self._webhook_left(room, closed, reason)
        if not room.ended and all(s.uid != session.uid for s in remaining):
            participant = await self.store.get_participant_by_id(session.participant_id)
            if participant is not None:
                self._emit("participant_left", room, participant=participant_public(participant), reason=reason)
        return closed[0]

    async def close_lost(self, closes: list[tuple[Session, int, str]]) -> int:
        """Sessions whose connections went with a node that is gone (a restart's previous run, a node killed in a
        cluster: control/failover.py decides which, and when): each (session, at, reason) ends at `at`, its last
        proof of life, one transaction per room. Conditional like every close (`close_sessions` closes only what
        is still open, under the room's lock), so two nodes closing one dead node's sessions at once bill them and
        write their participant_left webhooks once."""
        by_room: dict[str, list[tuple[Session, int, str]]] = {}
        for close in closes:
            by_room.setdefault(close[0].room_sid, []).append(close)
        total = 0
        for sid in sorted(by_room):
            async with self._lock(sid), self.store.atomic():
                await self.store.lock_room(sid)
                closed: list[Session] = []
                groups: dict[tuple[int, str], list[str]] = {}
                for s, at, reason in by_room[sid]:
                    groups.setdefault((max(s.joined_at, min(at, self.clock.now_ms())), reason), []).append(s.id)
                for (at, reason), ids in sorted(groups.items()):
                    closed += await self.store.close_sessions(at, reason, session_ids=ids)
                room = await self.store.get_room_by_sid(sid)
                remaining: list[Session] = []
                if closed and room is not None and not room.ended:
                    at = max(s.left_at or 0 for s in closed)
                    remaining = await self.store.room_sessions(sid, active_only=True)
                    if not remaining:
                        await self.store.update_room(sid, emptied_at=at)
                    await self._bill(room, at)
                    for reason in sorted({s.leave_reason or "" for s in closed}):
                        await self._webhook_left(room, [s for s in closed if s.leave_reason == reason], reason)
            total += len(closed)
            if closed and room is not None and not room.ended:
                still = {s.uid for s in remaining}
                for s in closed:
                    if s.uid in still:
                        continue
                    still.add(s.uid)  # once per participant
                    participant = await self.store.get_participant_by_id(s.participant_id)
                    if participant is not None:
                        self._emit("participant_left", room, participant=participant_public(participant),
                                   reason=s.leave_reason)
        return total

    async def tick(self) -> None:
        """Periodic: bill running classes (at least once a minute) and end rooms empty for emptyTimeout."""
        now = self.clock.now_ms()
        await self.store.set_meta(HEARTBEAT_KEY, str(now))
        if self.node_id:  # several nodes: a dead one's sessions end at its own last beat
            await self.store.set_meta(f"{HEARTBEAT_KEY}:{self.node_id}", str(now))
        for room in await self.store.unfinished_started_rooms():
            try:
                async with self._lock(room.sid):
                    await self._bill(room, now)
                if room.emptied_at is not None and now - room.emptied_at >= room.empty_timeout * 1000:
                    await self.end_room(room, "empty_timeout")
            except ApiError:
                continue  # ended concurrently
            except Exception:
                log.exception("tick failed for room %s", room.sid)

    # ---- moderation ------------------------------------------------------------------------------------------

    async def _live_participant(self, org: Org, room_id: str, uid: str) -> tuple[Room, Participant]:
        room = await self.get_room(org, room_id)
        if room.ended:
            raise room_ended()
        participant = await self.store.get_participant(room.sid, uid)
        if participant is None:
            raise participant_not_found()
        return room, participant

    async def remove_participant(self, org: Org, room_id: str, uid: str, reason: str | None) -> dict[str, Any]:
        room, participant = await self._live_participant(org, room_id, uid)
        async with self._lock(room.sid), self.store.atomic():
            await self.store.lock_room(room.sid)
            now = self.clock.now_ms()
            if not participant.removed:
                await self.store.update_participant(participant.id, removed_at=now, updated_at=now)
                participant.removed_at = now
            closed = await self.store.close_sessions(now, "removed", participant_id=participant.id)
            if closed:
                if not await self.store.room_sessions(room.sid, active_only=True):
                    await self.store.update_room(room.sid, emptied_at=now)
                await self._bill(room, now)
                await self._webhook_left(room, closed, "removed")
        self._emit("participant_removed", room, participant=participant_public(participant), reason=reason)
        return {"roomId": room.room_id, "uid": uid, "removed": True, "sessionsClosed": len(closed)}

    async def set_muted(self, org: Org, room_id: str, uid: str, muted: bool) -> dict[str, Any]:
        room, participant = await self._live_participant(org, room_id, uid)
        if participant.removed:  # gone for good: a mute would announce a change nobody can see
            raise ApiError(403, "Participant was removed from this room", "PARTICIPANT_REMOVED")
        await self._apply_mute(room, participant, muted)
        return {"roomId": room.room_id, "uid": uid, "muted": muted}

    async def _apply_mute(self, room: Room, participant: Participant, muted: bool) -> None:
        now = self.clock.now_ms()
        await self.store.update_participant(participant.id, muted=muted, updated_at=now)
        participant.muted = muted
        self._emit("participant_muted" if muted else "participant_unmuted", room,
                   participant=participant_public(participant), muted=muted)

    async def mute_all(self, org: Org, room_id: str, except_uids: set[str]) -> dict[str, Any]:
        room = await self.get_room(org, room_id)
        if room.ended:
            raise room_ended()
        muted = []
        for p in await self.store.list_participants(room.sid):
            if p.uid in except_uids or p.removed or p.muted:
                continue
            await self._apply_mute(room, p, True)
            muted.append(p.uid)
        return {"roomId": room.room_id, "mutedCount": len(muted), "muted": muted}

    # ---- billing ---------------------------------------------------------------------------------------------

    def balance(self, org: Org) -> dict[str, Any]:
        remaining = org.credits
        over = remaining < 0
        display = abs(remaining)
        message = (
            f"Account has overconsumed {display} credits. Please add more credits."
            if over else f"Account has {display} credits remaining."
        )
        return {
            "type": org.billing_type,
            "status": "OVERCONSUMED" if over else "ACTIVE",
            "remainingCredits": remaining,
            "displayCredits": display,
            "isOverconsumed": over,
            "creditRate": self.config.credit_rate,
            "estimatedValue": round(display * self.config.credit_rate, 2),
            "currency": self.config.currency,
            "message": message,
        }
