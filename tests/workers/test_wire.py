"""The worker link's schema (sfu/wire.py): what crosses is plain msgpack, a worker answers what it does not know with
a clear error, and the ICE configuration survives the trip."""

from __future__ import annotations

import ipaddress

from sfu import wire
from sfu.ice import IceConfig
from tests.sfu.conftest import Classroom
from tests.workers.conftest import pool_of


def test_ice_configuration_round_trips() -> None:
    ice = IceConfig(hosts=("127.0.0.1", "198.18.0.1"), port_min=0, port_max=0,
                    servers=({"urls": "stun:stun.example.org:3478"},),
                    allowed_networks=(ipaddress.ip_network("198.18.0.0/15"),), rtc_port=7990, announced="a.example",
                    reader_priority=3)
    decoder = wire.unpacker()  # what the worker reads the link with
    decoder.feed(wire.pack({"op": "config", "index": 0, "ice": wire.ice_to_wire(ice)}))
    (message,) = list(decoder)
    assert wire.ice_from_wire(message["ice"]) == ice


async def test_unknown_op_and_bad_arguments_are_answered_not_fatal(workers_room: Classroom) -> None:
    pool = pool_of(workers_room)
    worker = pool.workers[0]
    for op, args, code in (("explode", {}, "BAD_MESSAGE"),
                           ("handle", {"room": "RM_x", "key": "nobody", "m": {}}, "NOT_JOINED"),
                           ("pipe_connect", {"room": "RM_x", "peer": 1, "port": 9}, "NO_PIPE"),
                           ("pipe_open", {"room": "RM_x", "peer": "one"}, "BAD_MESSAGE"),
                           ("pipe_open", {"room": "RM_x"}, "BAD_MESSAGE")):
        try:
            await worker.request(op, **args)
            raise AssertionError(f"{op} was accepted")
        except Exception as exc:  # SignalingError with the worker's code
            assert getattr(exc, "code", None) == code, exc
    assert worker.alive and await worker.request("stats", room="RM_x") == {"participants": 0, "tracks": []}
