"""The store: migrations applied once and in order, WAL and foreign keys on, tables as schema.py says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from control.store import schema as t
from control.store.migrations import MIGRATIONS
from control.store.store import Store


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    await s.close()


async def test_migrations_apply_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    s = await Store.open(url)
    assert await s.schema_version() == MIGRATIONS[-1][0]
    assert await s.migrate() == []  # nothing left to apply
    await s.close()
    s = await Store.open(url)  # a restart applies nothing either
    assert await s.migrate() == []
    await s.close()


async def test_recording_gaps_migration_keeps_existing_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 6 (recordings.gaps) on a database made before it: existing recordings read back with no gap, and a
    gap list written afterwards round-trips."""
    from control.store import store as store_module
    from control.store.records import Recording

    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 6])
    s = await Store.open(url)
    org = await s.create_org("School", 0, 1)
    async with s.engine.begin() as conn:
        await conn.execute(t.rooms.insert().values(sid="RM_old", org_id=org.id, room_id="r", title="r",
                                                   max_participants=10, empty_timeout=60, created_at=1))
        await conn.execute(text("INSERT INTO recordings (id, room_sid, status, options, started_at) "
                                "VALUES ('EG_old', 'RM_old', 'EGRESS_COMPLETE', '{}', 5)"))
    assert await s.schema_version() == 5
    await s.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    s = await Store.open(url)
    assert await s.schema_version() == 6
    old = await s.get_recording("EG_old")
    assert old is not None and old.gaps == []
    gap = {"started_at": 10, "ended_at": 20, "reason": "sfu_worker_lost"}
    await s.update_recording("EG_old", gaps=json.dumps([gap]))
    await s.insert_recording(Recording(id="EG_new", room_sid="RM_old", status="EGRESS_STARTING", options={},
                                       started_at=30, ended_at=None, file_path=None, size=None, duration=None,
                                       error=None))
    assert (await s.get_recording("EG_old")).gaps == [gap]  # type: ignore[union-attr]
    assert (await s.get_recording("EG_new")).gaps == []  # type: ignore[union-attr]
    await s.close()


async def test_wal_and_foreign_keys(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(t.participants.insert().values(
                id="PA_x", room_sid="RM_missing", uid="u", name="n", role="STUDENT", customization="{}",
                muted=False, created_at=0, updated_at=0))


async def test_schema_module_matches_the_migrated_database(store: Store) -> None:
    async with store.engine.connect() as conn:
        def columns(sync_conn):  # type: ignore[no-untyped-def]
            insp = inspect(sync_conn)
            return {name: {c["name"] for c in insp.get_columns(name)} for name in insp.get_table_names()}

        actual = await conn.run_sync(columns)
    for table in t.metadata.sorted_tables:
        assert table.name in actual, table.name
        assert {c.name for c in table.columns} == actual[table.name], table.name


async def test_ledger_follows_every_balance_change(store: Store) -> None:
    org = await store.create_org("School", 150, 1)
    assert await store.add_credits(org.id, -200, "usage", 2) == -50
    assert await store.add_credits(org.id, 75, "topup", 3) == 25
    ledger = await store.ledger(org.id)
    assert [(e["delta"], e["balance_after"]) for e in ledger] == [(150, 150), (-200, -50), (75, 25)]
