"""The recording service keeps names and roles only of who is present in a room being recorded (issue 13's
soak: it kept every uid that ever joined, per room, until the room ended)."""

from __future__ import annotations

import pytest

from control.api.recordings import RECORDINGS
from control.events import Event
from tests.conftest import Api

pytestmark = pytest.mark.both_databases  # and the store under them: SQLite and PostgreSQL


def _event(kind: str, uid: str) -> Event:
    return Event(type=kind, org_id="o", room_id="math-101", room_sid="RM_x",
                 data={"participant": {"uid": uid, "name": uid.upper(), "role": "STUDENT"}})


async def test_comings_and_goings_leave_nothing_behind(api: Api) -> None:
    recordings = api.client.server.app[RECORDINGS]
    for i in range(200):  # a room that is not being recorded: nothing is kept at all
        api.svc.bus.publish(_event("participant_joined", f"s{i}"))
    assert recordings.people.get("RM_x") is None
    people: dict[str, dict[str, str]] = {}
    recordings.people["RM_x"] = people  # what start() sets up for a recorded room (the tap reads this dict)
    for i in range(200):
        api.svc.bus.publish(_event("participant_joined", f"s{i}"))
        if i % 10:
            api.svc.bus.publish(_event("participant_left", f"s{i}"))
    assert set(people) == {f"s{i}" for i in range(0, 200, 10)}  # only who is still there
    assert people["s10"] == {"name": "S10", "role": "STUDENT"}
    api.svc.bus.publish(Event(type="class_ended", org_id="o", room_id="math-101", room_sid="RM_x"))
    assert "RM_x" not in recordings.people
