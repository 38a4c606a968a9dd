"""`swarm-runtime backup` and `restore`: every row round-trips, the counts are checked, and a
restore never goes into a database that holds tables."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime.backup import BackupError, PgTool, backup, backups_in, choose
from runtime.cli import main
from tests.conftest import _with_dbname

TABLES = """
CREATE TABLE projects (
    _id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    _creation_time timestamptz NOT NULL DEFAULT now(),
    name text NOT NULL, settings jsonb, state text
);
CREATE TABLE tickets (
    _id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    _creation_time timestamptz NOT NULL DEFAULT now(),
    project_id uuid REFERENCES projects(_id), title text NOT NULL, priority bigint,
    score double precision, done boolean, depends_on jsonb, due timestamptz
);
CREATE INDEX tickets_by_project ON tickets (project_id, priority);
CREATE TABLE "Mixed Case" (id bigserial PRIMARY KEY, note text);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id bigserial PRIMARY KEY, body jsonb NOT NULL);
"""


def fill(conn: psycopg.Connection[Any]) -> None:
    conn.execute(TABLES)
    conn.execute(
        "INSERT INTO projects (name, settings, state) SELECT 'p' || i,"
        " jsonb_build_object('n', i, 'tags', jsonb_build_array('a', 'ü')), 'active'"
        " FROM generate_series(1, 20) i"
    )
    conn.execute(
        "INSERT INTO tickets (project_id, title, priority, score, done, depends_on, due)"
        " SELECT (SELECT _id FROM projects ORDER BY name OFFSET i % 20 LIMIT 1),"
        " 'Ticket ' || i || E' \\u00e9\\n\"quoted\"', i % 5, i / 7.0, i % 2 = 0,"
        " '[]'::jsonb, now() + i * interval '1 hour'"
        " FROM generate_series(1, 1500) i"
    )
    conn.execute('INSERT INTO "Mixed Case" (note) SELECT NULL FROM generate_series(1, 3)')
    conn.execute('INSERT INTO audit.events (body) VALUES (\'{"k": [1, 2, {"x": null}]}\')')


def everything(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("projects", "tickets", '"Mixed Case"', "audit.events")
        }


@pytest.fixture
def source(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        fill(conn)
    return database_url


@pytest.fixture
def empty_db(pg_server: str) -> Iterator[Callable[[], str]]:
    names: list[str] = []

    def make() -> str:
        name = f"swarm_restore_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return _with_dbname(pg_server, name)

    yield make
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_backup_then_restore_round_trips_every_row(
    source: str, empty_db: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup", "--database-url", source, "--dir", str(tmp_path)]) == 0
    (dump,) = tmp_path.glob("*.dump")
    assert capsys.readouterr().out.strip() == str(dump)
    with dump.open("rb") as handle:
        assert handle.read(5) == b"PGDMP", "pg_dump's custom format"
    meta = json.loads(dump.with_name(dump.name + ".json").read_text())
    assert meta["tables"] == {
        "audit.events": 1,
        "public.Mixed Case": 3,
        "public.projects": 20,
        "public.tickets": 1500,
    }
    assert meta["pg_dump_major"] >= int(meta["server_version"].split(".")[0])

    target = empty_db()
    assert main(["restore", str(dump), "--database-url", target]) == 0
    out = capsys.readouterr().out
    assert "public.tickets" in out and "MISMATCH" not in out
    assert everything(target) == everything(source)
    with psycopg.connect(target) as conn:  # indexes and constraints came along
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'tickets_by_project'"
        ).fetchone() == (1,)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO tickets (project_id, title) VALUES (gen_random_uuid(), 'orphan')"
            )


def test_restore_refuses_a_database_with_tables(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "x.dump"
    assert main(["backup", str(dump), "--database-url", source]) == 0
    before = everything(source)
    assert main(["restore", str(dump), "--database-url", source]) == 2
    err = capsys.readouterr().err
    assert "is not empty (4 tables: audit.events, public.Mixed Case, public.projects" in err
    assert "CREATE DATABASE" in err
    assert everything(source) == before


def test_restore_checks_checksum_and_row_counts(
    source: str, empty_db: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "x.dump"
    assert main(["backup", str(dump), "--database-url", source]) == 0
    sidecar = dump.with_name("x.dump.json")
    meta = json.loads(sidecar.read_text())

    meta["tables"]["public.tickets"] = 1499  # the dump no longer matches what was recorded
    sidecar.write_text(json.dumps(meta))
    assert main(["restore", str(dump), "--database-url", empty_db()]) == 1
    captured = capsys.readouterr()
    assert "1 table(s) differ" in captured.err
    assert "public.tickets" in captured.out and "MISMATCH" in captured.out

    damaged = tmp_path / "damaged.dump"
    damaged.write_bytes(dump.read_bytes()[:-100])
    damaged.with_name("damaged.dump.json").write_text(json.dumps(meta))
    target = empty_db()
    assert main(["restore", str(damaged), "--database-url", target]) == 2
    assert "does not match the SHA-256" in capsys.readouterr().err
    with psycopg.connect(target) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)

    sidecar.unlink()
    assert main(["restore", str(dump), "--database-url", empty_db()]) == 2
    assert "--no-verify" in capsys.readouterr().err
    target = empty_db()
    assert main(["restore", str(dump), "--no-verify", "--database-url", target]) == 0
    assert everything(target) == everything(source)


def test_counts_are_those_of_the_dump_while_writes_go_on(
    source: str, empty_db: Callable[[], str], tmp_path: Path
) -> None:
    """The counts are taken in the snapshot pg_dump uses: concurrent inserts change neither."""
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(source, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit.events (body) VALUES ('{}')")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.05)
        result = backup(source, file=tmp_path / "busy.dump")
    finally:
        stop.set()
        writer.join(timeout=10)
    target = empty_db()
    assert main(["restore", str(result.dump), "--database-url", target]) == 0
    with psycopg.connect(target) as conn:
        restored = conn.execute("SELECT count(*) FROM audit.events").fetchone()
    assert restored == (result.tables["audit.events"],)
    with psycopg.connect(source) as conn:
        now = conn.execute("SELECT count(*) FROM audit.events").fetchone()
    assert now is not None and now[0] > result.tables["audit.events"], "writes went on"


def test_retention_keeps_the_newest(source: str, tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for day in range(4):
        result = backup(
            source, folder=tmp_path, keep=2, now=lambda d=day: start + timedelta(days=d)
        )
        made.append(result.dump)
    other = tmp_path / "notes.dump"  # not ours: never deleted
    other.write_text("x")
    backup(source, folder=tmp_path, keep=2, now=lambda: start + timedelta(days=9))
    kept = backups_in(tmp_path, made[0].name.rsplit("-", 1)[0])
    assert [p.name[-24:] for p in kept] == ["20260104T000000000Z.dump", "20260110T000000000Z.dump"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(f"{p.name}.json" for p in kept)
    assert other.exists()
    with pytest.raises(BackupError, match="at least 1"):
        backup(source, folder=tmp_path, keep=0)


def test_tools_are_chosen_by_server_version() -> None:
    def tool(major: int) -> PgTool:
        return PgTool(Path(f"/pg{major}/bin/pg_dump"), major, f"{major}.1")

    assert choose([tool(18), tool(15), tool(16)], 15, "pg_dump").major == 15
    assert choose([tool(18), tool(16)], 15, "pg_dump").major == 16  # the oldest newer one
    with pytest.raises(BackupError, match=r"No pg_dump of PostgreSQL 17 or newer.*client-17"):
        choose([tool(15), tool(16)], 17, "pg_dump")
