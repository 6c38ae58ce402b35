"""Raised hands, polls and chat: validated by role, persisted, announced on the event bus.

Everything is in the database so that a participant who reconnects is given the current state (queue, open
polls with their own answer, recent chat) in their `joined` message.
"""

from __future__ import annotations

from typing import Any

from control.clock import Clock, iso
from control.errors import ApiError
from control.events import Event, EventBus
from control.ids import new_id
from control.roles import Permission, Role, can
from control.store.records import Participant, Room
from control.store.store import Store
from control.validation import effective_customization

MAX_CHAT = 2000
MAX_OPTIONS = 10
CHAT_HISTORY = 50


def forbidden(what: str) -> ApiError:
    return ApiError(403, f"Your role may not {what}", "FORBIDDEN")


def bad(message: str) -> ApiError:
    return ApiError(400, message, "BAD_MESSAGE")


class Interaction:
    def __init__(self, store: Store, bus: EventBus, clock: Clock) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock

    def _require(self, room: Room, actor: Participant, permission: Permission, what: str) -> None:
        if not can(Role(actor.role), permission, effective_customization(room.customization, actor.customization)):
            raise forbidden(what)

    def _emit(self, type_: str, room: Room, **data: Any) -> None:
        self.bus.publish(Event(type=type_, org_id=room.org_id, room_id=room.room_id, room_sid=room.sid, data=data))

    # ---- hands -----------------------------------------------------------------------------------------------

    async def hands(self, room: Room) -> list[dict[str, Any]]:
        names = {p.uid: p.name for p in await self.store.list_participants(room.sid)}
        return [{"uid": uid, "name": names.get(uid, uid), "raisedAt": iso(at)}
                for uid, at in await self.store.hands(room.sid)]

    async def raise_hand(self, room: Room, actor: Participant) -> None:
        self._require(room, actor, Permission.RAISE_HAND, "raise a hand")
        if await self.store.raise_hand(room.sid, actor.uid, self.clock.now_ms()):
            self._emit("hand_raised", room, uid=actor.uid, name=actor.name, queue=await self.hands(room))

    async def lower_hand(self, room: Room, actor: Participant, uid: str | None) -> None:
        target = uid or actor.uid
        if target != actor.uid:
            self._require(room, actor, Permission.MODERATE, "lower another participant's hand")
        if await self.store.lower_hand(room.sid, target):
            self._emit("hand_lowered", room, uid=target, by=actor.uid, queue=await self.hands(room))

    # ---- polls -----------------------------------------------------------------------------------------------

    async def create_poll(self, room: Room, actor: Participant, question: Any, options: Any) -> dict[str, Any]:
        self._require(room, actor, Permission.CREATE_POLL, "create polls")
        if not isinstance(question, str) or not 1 <= len(question.strip()) <= 500:
            raise bad("question must be 1-500 characters")
        if (not isinstance(options, list) or not 2 <= len(options) <= MAX_OPTIONS
                or not all(isinstance(o, str) and 1 <= len(o.strip()) <= 200 for o in options)):
            raise bad(f"options must be a list of 2-{MAX_OPTIONS} strings of 1-200 characters")
        poll_id = new_id("PO_")
        options = [o.strip() for o in options]
        await self.store.create_poll(poll_id, room.sid, question.strip(), options, actor.uid, self.clock.now_ms())
        poll = await self._poll_view(room, poll_id, None)
        self._emit("poll_created", room, poll=poll)
        return poll

    async def _open_poll(self, room: Room, poll_id: Any) -> dict[str, Any]:
        poll = await self.store.get_poll(poll_id) if isinstance(poll_id, str) else None
        if poll is None or poll["room_sid"] != room.sid:
            raise ApiError(404, "Poll not found", "POLL_NOT_FOUND")
        if poll["closed_at"] is not None:
            raise ApiError(409, "Poll is closed", "POLL_CLOSED")
        return poll

    async def answer_poll(self, room: Room, actor: Participant, poll_id: Any, option: Any) -> None:
        self._require(room, actor, Permission.ANSWER_POLL, "answer polls")
        poll = await self._open_poll(room, poll_id)
        if isinstance(option, bool) or not isinstance(option, int) or not 0 <= option < len(poll["options"]):
            raise bad(f"option must be an index from 0 to {len(poll['options']) - 1}")
        if not await self.store.answer_poll(poll["id"], actor.uid, option, self.clock.now_ms()):
            raise ApiError(409, "You already answered this poll", "ALREADY_ANSWERED")
        self._emit("poll_answered", room, uid=actor.uid, pollId=poll["id"], option=option,
                   results=await self._results(poll))

    async def close_poll(self, room: Room, actor: Participant, poll_id: Any) -> dict[str, Any]:
        self._require(room, actor, Permission.CREATE_POLL, "close polls")
        poll = await self._open_poll(room, poll_id)
        await self.store.close_poll(poll["id"], self.clock.now_ms())
        view = await self._poll_view(room, poll["id"], None)
        self._emit("poll_closed", room, poll=view)
        return view

    async def _results(self, poll: dict[str, Any]) -> dict[str, Any]:
        answers = await self.store.poll_answers(poll["id"])
        counts = [0] * len(poll["options"])
        for option in answers.values():
            counts[option] += 1
        return {"counts": counts, "total": len(answers)}

    async def _poll_view(self, room: Room, poll_id: str, uid: str | None) -> dict[str, Any]:
        poll = await self.store.get_poll(poll_id)
        assert poll is not None
        view: dict[str, Any] = {
            "pollId": poll["id"], "question": poll["question"], "options": poll["options"],
            "createdBy": poll["created_by"], "createdAt": iso(poll["created_at"]),
            "closedAt": iso(poll["closed_at"]), "open": poll["closed_at"] is None,
        }
        if poll["closed_at"] is not None:
            view["results"] = await self._results(poll)
        if uid is not None:
            view["myAnswer"] = (await self.store.poll_answers(poll["id"])).get(uid)
        return view

    async def polls(self, room: Room, viewer: Participant) -> list[dict[str, Any]]:
        """Every poll of the room; moderators also see live results of open ones."""
        out = []
        moderator = can(Role(viewer.role), Permission.CREATE_POLL)
        for poll in await self.store.room_polls(room.sid):
            view = await self._poll_view(room, poll["id"], viewer.uid)
            if moderator and view["open"]:
                view["results"] = await self._results(poll)
            out.append(view)
        return out

    # ---- chat ------------------------------------------------------------------------------------------------

    async def chat(self, room: Room, actor: Participant, text: Any) -> dict[str, Any]:
        self._require(room, actor, Permission.CHAT, "chat")
        if room.customization.get("needChat") is False:
            raise forbidden("chat in this room")
        if not isinstance(text, str) or not 1 <= len(text.strip()) <= MAX_CHAT:
            raise bad(f"text must be 1-{MAX_CHAT} characters")
        now = self.clock.now_ms()
        row = {"id": new_id("CH_"), "room_sid": room.sid, "uid": actor.uid, "name": actor.name, "role": actor.role,
               "text": text.strip(), "created_at": now}
        await self.store.add_chat(row)
        message = chat_view(row)
        self._emit("chat", room, message=message)
        return message

    async def recent_chat(self, room: Room) -> list[dict[str, Any]]:
        return [chat_view(r) for r in await self.store.recent_chat(room.sid, CHAT_HISTORY)]


def chat_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "uid": row["uid"], "name": row["name"], "role": row["role"], "text": row["text"],
            "sentAt": iso(row["created_at"])}
