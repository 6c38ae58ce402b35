"""The store: migrations applied once and in order, WAL and foreign keys on, tables as schema.py says."""

from __future__ import annotations

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
