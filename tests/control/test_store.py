"""The store: migrations applied once and in order, WAL and foreign keys on, tables as schema.py says, and the
same schema on SQLite and PostgreSQL (the module's tests run on both: `both_databases`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from control.config import Config
from control.store import schema as t
from control.store.migrations import MIGRATIONS
from control.store.store import RoomIdTaken, Store
from tests.pg import PostgresCluster

pytestmark = pytest.mark.both_databases


@pytest.fixture
def url(config: Config) -> str:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return config.db_url


@pytest.fixture
async def store(url: str):  # type: ignore[no-untyped-def]
    s = await Store.open(url)
    yield s
    await s.close()


async def test_migrations_apply_once(url: str) -> None:
    s = await Store.open(url)
    assert await s.schema_version() == MIGRATIONS[-1][0]
    assert await s.migrate() == []  # nothing left to apply
    await s.close()
    s = await Store.open(url)  # a restart applies nothing either
    assert await s.migrate() == []
    await s.close()


async def test_recording_gaps_migration_keeps_existing_rows(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 6 (recordings.gaps) on a database made before it: existing recordings read back with no gap, and a
    gap list written afterwards round-trips."""
    from control.store import store as store_module
    from control.store.records import Recording

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
    assert await s.schema_version() == MIGRATIONS[-1][0]
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


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    await store.close()


async def test_foreign_keys_are_enforced(store: Store) -> None:
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


def _schema(sync_conn: Any) -> dict[str, Any]:
    """The migrated schema in engine-neutral terms: per table its columns (generic type, NOT NULL, default), primary
    key, foreign keys (with ON DELETE), unique constraints, and named indexes (columns, unique, partial on which
    values). SQLite lets a non-integer PRIMARY KEY column hold NULL (a legacy quirk the application never uses),
    so key columns count as NOT NULL on both."""
    insp = inspect(sync_conn)
    sqlite = sync_conn.dialect.name == "sqlite"
    out: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        pk = tuple(insp.get_pk_constraint(name)["constrained_columns"])
        columns = {}
        for c in insp.get_columns(name):
            default = c.get("default")
            if default is not None:  # '{}'::text, FALSE, false -> '{}', false
                default = re.sub(r"::[a-z ]+$", "", str(default)).lower()
            kind = type(c["type"].as_generic()).__name__
            kind = {"Double": "Float"}.get(kind, kind)  # DOUBLE PRECISION: SQLite says Float (REAL, 8 bytes)
            columns[c["name"]] = (kind, not c["nullable"] or c["name"] in pk, default)
        if sqlite:  # SQLAlchemy's SQLite reflection drops ON DELETE: ask SQLite itself
            rows = sync_conn.exec_driver_sql(f"PRAGMA foreign_key_list('{name}')").all()
            fks = {((r[3],), r[2], (r[4],), r[6].upper()) for r in rows}
        else:
            fks = {(tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                    (f["options"].get("ondelete") or "NO ACTION").upper()) for f in insp.get_foreign_keys(name)}
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(name)}
        indexes = {}
        for i in insp.get_indexes(name):
            if i.get("duplicates_constraint"):
                continue  # PostgreSQL's index behind a UNIQUE constraint: compared as the constraint
            where = next((str(v) for k, v in i.get("dialect_options", {}).items() if k.endswith("_where")), None)
            indexes[i["name"]] = (tuple(i["column_names"]), bool(i["unique"]),
                                  tuple(sorted(re.findall(r"'([^']*)'", where))) if where else None)
        out[name] = {"columns": columns, "pk": pk, "fks": fks, "uniques": uniques, "indexes": indexes}
    return out


async def test_sqlite_and_postgresql_end_with_the_same_schema(tmp_path: Path,
                                                              postgres_cluster: PostgresCluster) -> None:
    """Every migration runs on both engines, and what they leave is one schema: same tables, columns, types,
    nullability, defaults, keys, ON DELETE rules, unique constraints and indexes (partial ones on the same
    values)."""
    name = await postgres_cluster.create_database()
    schemas = []
    try:
        for url in (f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", postgres_cluster.url(name)):
            s = await Store.open(url)
            assert await s.schema_version() == MIGRATIONS[-1][0]
            async with s.engine.connect() as conn:
                schemas.append(await conn.run_sync(_schema))
            await s.close()
    finally:
        await postgres_cluster.drop_database(name)
    on_sqlite, on_postgres = schemas
    assert sorted(on_sqlite) == sorted(on_postgres)
    for table in on_sqlite:
        assert on_sqlite[table] == on_postgres[table], (table, on_sqlite[table], on_postgres[table])
    # The comparison is not vacuous: it sees what the migrations declare.
    assert on_sqlite["recordings"]["indexes"]["recordings_one_live"] == (
        ("room_sid",), True, ("EGRESS_ACTIVE", "EGRESS_STARTING"))
    assert ((("org_id",), "organizations", ("id",), "CASCADE") in on_sqlite["rooms"]["fks"])
    assert on_sqlite["rooms"]["columns"]["auto_close"] == ("Boolean", True, "false")
    assert ("org_id", "room_id") in on_sqlite["rooms"]["uniques"]


async def test_one_live_recording_per_room_migration_keeps_the_newest(url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 7 on a database where two starts raced (two live recordings in one room): the newest stays live,
    the other becomes EGRESS_ENDING (settled at start-up like any interrupted one), other rooms are untouched;
    afterwards the database refuses a second live recording."""
    from control.store import store as store_module
    from control.store.records import Recording
    from control.store.store import RecordingAlreadyLive

    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 7])
    s = await Store.open(url)
    org = await s.create_org("School", 0, 1)
    async with s.engine.begin() as conn:
        for sid in ("RM_a", "RM_b"):
            await conn.execute(t.rooms.insert().values(sid=sid, org_id=org.id, room_id=sid, title=sid,
                                                       max_participants=10, empty_timeout=60, created_at=1))
        for rec_id, sid, status, started in (
                ("EG_1", "RM_a", "EGRESS_ACTIVE", 10), ("EG_2", "RM_a", "EGRESS_ACTIVE", 20),
                ("EG_3", "RM_a", "EGRESS_COMPLETE", 30), ("EG_4", "RM_b", "EGRESS_STARTING", 5)):
            await conn.execute(t.recordings.insert().values(id=rec_id, room_sid=sid, status=status, options="{}",
                                                            started_at=started))
    await s.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    s = await Store.open(url)
    try:
        status = {r.id: r.status for sid in ("RM_a", "RM_b") for r in await s.room_recordings(sid)}
        assert status == {"EG_1": "EGRESS_ENDING", "EG_2": "EGRESS_ACTIVE", "EG_3": "EGRESS_COMPLETE",
                          "EG_4": "EGRESS_STARTING"}
        with pytest.raises(RecordingAlreadyLive):
            await s.insert_recording(Recording(id="EG_5", room_sid="RM_a", status="EGRESS_STARTING", options={},
                                               started_at=40, ended_at=None, file_path=None, size=None,
                                               duration=None, error=None))
        assert [r.id for r in await s.live_recordings("RM_a")] == ["EG_2"]
    finally:
        await s.close()


async def test_writes_that_meet_an_existing_row_leave_the_transaction_usable(store: Store) -> None:
    """A second raised hand, answer, domain, meta value, topic or transcription switch, all inside one transaction:
    each is an ON CONFLICT (a unique violation would abort a whole PostgreSQL transaction), so the block commits
    and every later write in it lands."""
    from control.store.records import Room
    from control.store.tutor import TutorStore

    org = await store.create_org("School", 0, 1)
    await store.insert_room(Room(sid="RM_1", org_id=org.id, room_id="r", title="r", description=None,
                                 customization={}, max_participants=5, empty_timeout=60, auto_close=False,
                                 created_at=1))
    tutor = TutorStore(store)
    async with store.atomic():
        assert await store.raise_hand("RM_1", "u1", 10) is True
        assert await store.raise_hand("RM_1", "u1", 11) is False
        await store.create_poll("PO_1", "RM_1", "?", ["a", "b"], "t", 12)
        assert await store.answer_poll("PO_1", "u1", 0, 13) is True
        assert await store.answer_poll("PO_1", "u1", 1, 14) is False
        await store.add_domain(org.id, "school.example", 15)
        await store.add_domain(org.id, "school.example", 16)
        await store.set_meta("k", "1")
        await store.set_meta("k", "2")
        await store.set_meta("after", "the conflicts")
    await tutor.set_topic("RM_1", "Fractions", "t", 17)
    await tutor.set_topic("RM_1", "Decimals", "t", 18)
    await tutor.set_transcription(org.id, "r", True, 19)
    await tutor.set_transcription(org.id, "r", False, 20)
    assert await store.hands("RM_1") == [("u1", 10)]  # the first raise keeps its place
    assert await store.poll_answers("PO_1") == {"u1": 0}
    assert (await store.get_org(org.id)).domains == ["school.example"]  # type: ignore[union-attr]
    assert (await store.get_meta("k"), await store.get_meta("after")) == ("2", "the conflicts")
    assert await tutor.topic("RM_1") == "Decimals"
    assert await tutor.transcription(org.id, "r") is False
    with pytest.raises(RoomIdTaken):
        await store.insert_room(Room(sid="RM_2", org_id=org.id, room_id="r", title="again", description=None,
                                     customization={}, max_participants=5, empty_timeout=60, auto_close=False,
                                     created_at=2))
