"""The control plane's database work for a class joining at once, without media: `python -m bench.join_db`.

100 participants hold tokens; all open their sessions at once (control/classroom.py `open_session`) and each reads
the roster its `joined` message carries (control/signaling.py). Prints the process CPU seconds per wave, three
waves on fresh SQLite databases. Run it from two trees to compare (issue 14 req 5: join CPU).

`--database-url postgresql+asyncpg://...` runs the waves on that (empty or classcast's) PostgreSQL database
instead, each wave in an organization of its own; `--pg` starts a private cluster for the run (tests/pg.py).
The CPU is this process's only: PostgreSQL's own work is in its server processes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from control.auth import Auth
from control.classroom import Classroom, ParticipantSpec, RoomSpec
from control.clock import Clock
from control.config import Config
from control.events import EventBus
from control.store.store import Store


async def wave(n: int, url: str | None = None) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = await Store.open(url or f"sqlite+aiosqlite:///{d}/db.sqlite")
        try:
            clock = Clock()
            classroom = Classroom(Config.from_env({}), store, Auth(b"x" * 32, clock, store), EventBus(), clock)
            org = await store.create_org("bench", 100_000, clock.now_ms())
            await classroom.create_room(org, RoomSpec("r1", "t", None, {}), ParticipantSpec("teacher", "T", "TEACHER"),
                                        {}, 3600)
            room = await store.get_room(org.id, "r1")
            assert room is not None
            for i in range(n):
                await classroom.join(org, "r1", ParticipantSpec(f"s{i}", f"S{i}", "STUDENT"), {}, 3600)

            async def one(i: int) -> None:
                await classroom.open_session(room.sid, f"s{i}", "127.0.0.1")
                await store.active_participants(room.sid)

            cpu0 = time.process_time()
            await asyncio.gather(*(one(i) for i in range(n)))
            cpu = time.process_time() - cpu0
            assert len(await store.active_participants(room.sid)) == n
            return cpu
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="participants joining at once")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL URL (default: a fresh SQLite file per wave)")
    parser.add_argument("--pg", action="store_true", help="start a private PostgreSQL for the run")
    args = parser.parse_args()
    cluster = None
    url = args.database_url
    if args.pg:
        from tests.pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        url = cluster.url(asyncio.run(cluster.create_database()))
    try:
        cpu = [asyncio.run(wave(args.n, url)) for _ in range(args.waves)]
    finally:
        if cluster is not None:
            cluster.stop()
    where = "PostgreSQL" if url else "SQLite"
    print(f"CPU s per {args.n} session opens + roster reads ({where}):", " ".join(f"{c:.3f}" for c in cpu))


if __name__ == "__main__":
    main()
