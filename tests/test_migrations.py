"""schema.json becomes real tables; additive changes apply, destructive ones are refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from runtime.db.migrate import migrate_once
from runtime.errors import DestructiveChange
from runtime.schema import load_schema

BASE: dict[str, Any] = {
    "tables": {
        "tickets": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 500},
                "state": {"enum": ["draft", "pending"]},
                "priority": {"type": "integer"},
                "project_id": {"type": "string", "format": "uuid"},
                "due": {"type": "string", "format": "date-time"},
                "done": {"type": "boolean"},
                "score": {"type": "number"},
                "outputs": {},
                "depends_on": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            },
            "required": ["title", "state"],
            "indexes": {"by_state": ["state"], "by_project_state": ["project_id", "state"]},
        }
    },
    "functions": {},
}


def migrate(url: str, schema: dict[str, Any], tmp_path: Any, **kwargs: Any) -> list[str]:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    return asyncio.run(migrate_once(url, load_schema(path), **kwargs))


def columns(url: str, table: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    return {name: (dtype, nullable) for name, dtype, nullable in rows}


def indexes(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,)
        ).fetchall()
    return {r[0] for r in rows}


def test_tables_get_typed_columns_and_indexes(database_url: str, tmp_path: Any) -> None:
    applied = migrate(database_url, BASE, tmp_path)
    assert applied
    cols = columns(database_url, "tickets")
    assert cols["_id"] == ("uuid", "NO")
    assert cols["_creation_time"] == ("timestamp with time zone", "NO")
    assert cols["title"] == ("text", "NO")
    assert cols["priority"] == ("bigint", "YES")
    assert cols["project_id"][0] == "uuid"
    assert cols["due"][0] == "timestamp with time zone"
    assert cols["done"][0] == "boolean"
    assert cols["score"][0] == "double precision"
    assert cols["outputs"][0] == "jsonb"
    assert cols["depends_on"][0] == "ARRAY"
    names = indexes(database_url, "tickets")
    assert {"tickets__by_state", "tickets__by_project_state"} <= names
    # applying the same schema again changes nothing
    assert migrate(database_url, BASE, tmp_path) == []


def test_additive_change_applies(database_url: str, tmp_path: Any) -> None:
    migrate(database_url, BASE, tmp_path)
    changed = json.loads(json.dumps(BASE))
    changed["tables"]["tickets"]["properties"]["note"] = {"type": "string"}
    changed["tables"]["tickets"]["indexes"]["by_priority"] = ["priority"]
    changed["tables"]["projects"] = {"type": "object", "properties": {"name": {"type": "string"}}}
    applied = migrate(database_url, changed, tmp_path)
    assert len(applied) == 3
    assert columns(database_url, "tickets")["note"] == ("text", "YES")
    assert "tickets__by_priority" in indexes(database_url, "tickets")
    assert "name" in columns(database_url, "projects")
    with psycopg.connect(database_url) as conn:
        versions = conn.execute("SELECT count(*) FROM _runtime_migrations").fetchone()
    assert versions == (2,)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["tables"]["tickets"]["properties"].pop("score"), "score"),
        (
            lambda s: s["tables"]["tickets"]["properties"].update(priority={"type": "string"}),
            "priority",
        ),
        (lambda s: s["tables"].pop("tickets"), "tickets"),
        (
            lambda s: (
                s["tables"]["tickets"]["properties"].update(must={"type": "string"}),
                s["tables"]["tickets"]["required"].append("must"),
            ),
            "must",
        ),
    ],
    ids=["drop-column", "change-type", "drop-table", "not-null-without-default"],
)
def test_destructive_change_is_refused_then_forced(
    database_url: str, tmp_path: Any, change: Any, expected: str
) -> None:
    migrate(database_url, BASE, tmp_path)
    changed = json.loads(json.dumps(BASE))
    change(changed)
    with pytest.raises(DestructiveChange) as info:
        migrate(database_url, changed, tmp_path, allow_destructive=False)
    message = str(info.value)
    assert expected in message and "--allow-destructive" in message
    assert migrate(database_url, changed, tmp_path, allow_destructive=True)
    assert migrate(database_url, changed, tmp_path, allow_destructive=False) == []
