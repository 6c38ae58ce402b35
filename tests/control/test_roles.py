"""The permission matrix of the concepts seed."""

from __future__ import annotations

from control.roles import Permission as P
from control.roles import Role, can, parse_role


def test_matrix_matches_the_concepts_seed() -> None:
    assert can(Role.TEACHER, P.PUBLISH) and can(Role.TEACHER, P.END_CLASS) and can(Role.TEACHER, P.START_RECORDING)
    assert can(Role.MODERATOR, P.PUBLISH) and can(Role.MODERATOR, P.MODERATE)
    assert not can(Role.MODERATOR, P.END_CLASS)
    assert not can(Role.MODERATOR, P.START_RECORDING)
    assert not can(Role.STUDENT, P.PUBLISH) and not can(Role.STUDENT, P.SCREEN_SHARE)
    assert can(Role.STUDENT, P.RAISE_HAND) and can(Role.STUDENT, P.ANSWER_POLL)
    assert all(can(Role.ADMIN, p) for p in P)


def test_customization_only_takes_permissions_away() -> None:
    assert not can(Role.TEACHER, P.SCREEN_SHARE, {"allowScreenShare": False})
    assert not can(Role.TEACHER, P.START_RECORDING, {"allowRecording": False})
    assert not can(Role.STUDENT, P.RAISE_HAND, {"allowHandRaise": False})
    assert not can(Role.STUDENT, P.SCREEN_SHARE, {"allowScreenShare": True})


def test_unknown_roles_are_not_guessed() -> None:
    assert parse_role("TEACHER") is Role.TEACHER
    for value in ("teacher", "GUEST", "", None, 3):
        assert parse_role(value) is None
