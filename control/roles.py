"""Roles and what each may do: the concepts seed's matrix, written once as data.

Every permission check in the server (REST, signaling, the classroom page, the recorder API) goes through `can`,
so the matrix below is the only place a rule lives. Customization flags (`allowScreenShare`, `allowRecording`,
`allowHandRaise`) can only take permissions away, never grant them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    TEACHER = "TEACHER"
    MODERATOR = "MODERATOR"
    STUDENT = "STUDENT"
    ADMIN = "ADMIN"


class Permission(StrEnum):
    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"  # camera and microphone
    SCREEN_SHARE = "screen_share"
    START_RECORDING = "start_recording"
    STOP_RECORDING = "stop_recording"
    MODERATE = "moderate"  # kick, mute, see the raised-hands queue
    END_CLASS = "end_class"
    CREATE_POLL = "create_poll"
    ANSWER_POLL = "answer_poll"
    RAISE_HAND = "raise_hand"
    CHAT = "chat"
    SET_TOPIC = "set_topic"


_P = Permission
_TEACHER = frozenset(
    {_P.SUBSCRIBE, _P.PUBLISH, _P.SCREEN_SHARE, _P.START_RECORDING, _P.STOP_RECORDING, _P.MODERATE,
     _P.END_CLASS, _P.CREATE_POLL, _P.CHAT, _P.SET_TOPIC}
)

PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.TEACHER: _TEACHER,
    # "Same as teacher, but can't end the class or start recordings."
    Role.MODERATOR: _TEACHER - {_P.END_CLASS, _P.START_RECORDING},
    # "Watch the stream, raise hand, participate in polls" (and the room chat).
    Role.STUDENT: frozenset({_P.SUBSCRIBE, _P.RAISE_HAND, _P.ANSWER_POLL, _P.CHAT}),
    # "Full control over the room and settings."
    Role.ADMIN: frozenset(Permission),
}

# Customization flag -> the permissions it withdraws when false.
FLAG_LIMITS: Mapping[str, frozenset[Permission]] = {
    "allowScreenShare": frozenset({_P.SCREEN_SHARE}),
    "allowRecording": frozenset({_P.START_RECORDING, _P.STOP_RECORDING}),
    "allowHandRaise": frozenset({_P.RAISE_HAND}),
}


def parse_role(value: Any) -> Role | None:
    """The role for an API string, or None: unknown roles are a 400 at the edge, never a silent STUDENT."""
    if isinstance(value, str):
        try:
            return Role(value)
        except ValueError:
            return None
    return None


def permissions(role: Role, customization: Mapping[str, Any] | None = None) -> frozenset[Permission]:
    granted = PERMISSIONS[role]
    if customization:
        for flag, limited in FLAG_LIMITS.items():
            if customization.get(flag) is False:
                granted = granted - limited
    return granted


def can(role: Role, permission: Permission, customization: Mapping[str, Any] | None = None) -> bool:
    return permission in permissions(role, customization)
