"""Hub._fan_out: one event to a room's connections is printed once, and every connection writes that text."""

from __future__ import annotations

import json
import math
from typing import Any

from control.signaling import Connection, Hub


def _conns(n: int) -> list[Connection]:
    return [Connection(ws=None, grant=None) for _ in range(n)]  # type: ignore[arg-type]  # queues only


def test_one_text_for_the_whole_room() -> None:
    conns = _conns(3)
    message: dict[str, Any] = {"type": "participant_joined", "participant": {"uid": "s1", "name": "Ada"}}
    Hub._fan_out(conns, message)
    texts = [c.queue.get_nowait() for c in conns]
    assert all(isinstance(t, str) for t in texts)
    assert texts[0] is texts[1] is texts[2]  # printed once
    assert json.loads(texts[0]) == message


def test_a_message_that_is_not_strict_json_reaches_nobody() -> None:
    conns = _conns(2)
    Hub._fan_out(conns, {"type": "chat", "level": math.nan})
    assert all(c.queue.empty() for c in conns)
