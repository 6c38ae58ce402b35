"""Room placement: which node hosts a room's WebSockets and media. One node hosts everything
(`LocalPlacement`); with several nodes the answer is in Redis (`control.shared.placement.RedisPlacement`), where
a room's placement lasts as long as its node's lease, which the node renews by a heartbeat: a node that dies
stops renewing, its lease lapses within `lease_s`, and the next join of its rooms places them on the node that
receives it. control/wiring.py picks one; the signaling Hub sees only this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    url: str  # how clients reach this node directly (CLASSCAST_NODE_URL), http(s)://host:port


class Placement(Protocol):
    node: Node  # this node

    async def start(self) -> None: ...

    async def place(self, room_sid: str) -> Node:
        """The room's host: the node holding a live placement, else this node, which holds it from now on."""

    async def host(self, room_sid: str) -> Node | None:
        """The room's live host, placing nothing."""

    async def release(self, room_sid: str) -> None:
        """This node stops hosting the room (the class ended); another node's placement is left alone."""

    async def nodes(self, fresh: bool = False) -> list[Node]:
        """Every node with a live lease, this one included; `fresh`: only those that renewed it lately (not one that
        missed two renewals, which is probably dead, and not one that drains: where to send a student)."""

    async def add_overflow(self, room_sid: str, node_id: str) -> None:
        """A lecture across nodes (control/relay.py): `node_id` takes the room's students its host has no room for."""

    async def overflow(self, room_sid: str) -> set[str]:
        """The nodes other than the host that serve the room's students; gone with the room's `release`."""

    async def set_draining(self) -> None:
        """This node drains (control/drain.py): from now `nodes(fresh=True)` leaves it out, so no host sends it a
        student of a lecture (it would refuse a new one); its own classes and its lease are unchanged."""

    async def close(self) -> None:
        """This node stops: its lease ends now, so its rooms are placed elsewhere at their next join."""


class LocalPlacement:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._overflow: dict[str, set[str]] = {}

    async def start(self) -> None:
        pass

    async def place(self, room_sid: str) -> Node:
        return self.node

    async def host(self, room_sid: str) -> Node | None:
        return self.node

    async def release(self, room_sid: str) -> None:
        self._overflow.pop(room_sid, None)

    async def nodes(self, fresh: bool = False) -> list[Node]:
        return [self.node]

    async def add_overflow(self, room_sid: str, node_id: str) -> None:
        self._overflow.setdefault(room_sid, set()).add(node_id)

    async def overflow(self, room_sid: str) -> set[str]:
        return set(self._overflow.get(room_sid, ()))

    async def set_draining(self) -> None:
        pass

    async def close(self) -> None:
        pass
