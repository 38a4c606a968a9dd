"""Table model, catalog parsing and migration plans: pure unit tests, DDL compared as text.

Catalog rows below are what PostgreSQL 18 returns for the DDL this module generates
(captured once against a real server), so "apply, read back, diff" is checked without one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from runtime.errors import DestructiveChange
from runtime.schema import (
    CATALOG_QUERIES,
    TableModel,
    actual_from_catalog,
    column_type,
    describe,
    desired_model,
    diff,
    load_schema,
    normalize_type,
    parse_indexdef,
    table_model,
)
from runtime.schema.ddl import defaults_equal
from runtime.schema.tables import MANAGED_COMMENT
from runtime.sql import parse

TSTZ = "timestamp with time zone"

SCHEMA: dict[str, Any] = {
    "tables": {
        "tickets": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 500},
                "state": {"enum": ["draft", "pending"], "default": "draft"},
                "priority": {"type": "integer", "default": -5},
                "project_id": {"type": "string", "format": "uuid", "x-references": "projects"},
                "depends_on": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "outputs": {"type": "object", "default": {"b": 1, "a": [1, 2]}},
            },
            "required": ["title", "state"],
            "indexes": {
                "by_state": ["state"],
                "by_depends_on": ["depends_on"],
                "by_title": {"columns": ["title", "_creation_time"], "unique": True},
            },
        },
        "projects": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
    "functions": {},
}

# What PostgreSQL reports after applying the plan for SCHEMA to an empty database.
CATALOG_COLUMNS = [
    ("projects", "_id", "uuid", False, "gen_random_uuid()"),
    ("projects", "_creation_time", TSTZ, False, "now()"),
    ("projects", "name", "text", True, None),
    ("tickets", "_id", "uuid", False, "gen_random_uuid()"),
    ("tickets", "_creation_time", TSTZ, False, "now()"),
    ("tickets", "title", "text", False, None),
    ("tickets", "state", "text", False, "'draft'::text"),
    ("tickets", "priority", "bigint", True, "'-5'::integer"),
    ("tickets", "project_id", "uuid", True, None),
    ("tickets", "depends_on", "uuid[]", True, None),
    ("tickets", "outputs", "jsonb", True, """'{"a": [1, 2], "b": 1}'::jsonb"""),
]
CATALOG_INDEXES = [
    (
        "projects",
        "projects_pkey",
        "CREATE UNIQUE INDEX projects_pkey ON public.projects USING btree (_id)",
    ),
    (
        "tickets",
        "tickets__by_depends_on",
        "CREATE INDEX tickets__by_depends_on ON public.tickets USING gin (depends_on)",
    ),
    (
        "tickets",
        "tickets__by_state",
        "CREATE INDEX tickets__by_state ON public.tickets USING btree (state)",
    ),
    (
        "tickets",
        "tickets__by_title",
        "CREATE UNIQUE INDEX tickets__by_title ON public.tickets USING btree "
        "(title, _creation_time)",
    ),
    (
        "tickets",
        "tickets_pkey",
        "CREATE UNIQUE INDEX tickets_pkey ON public.tickets USING btree (_id)",
    ),
]


def model(schema: dict[str, Any] = SCHEMA) -> dict[str, TableModel]:
    return desired_model(load_schema(schema))


def actual() -> dict[str, TableModel]:
    return actual_from_catalog(CATALOG_COLUMNS, CATALOG_INDEXES)


def changed(**tickets: Any) -> dict[str, Any]:
    schema = copy.deepcopy(SCHEMA)
    table = schema["tables"]["tickets"]
    for key, value in tickets.items():
        table[key] = value
    return schema


# -- type mapping and model ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "sql_type"),
    [
        ({"type": "string"}, "text"),
        ({"type": "string", "format": "email"}, "text"),
        ({"type": "string", "format": "uuid"}, "uuid"),
        ({"type": "string", "format": "date-time"}, TSTZ),
        ({"type": "string", "format": "date"}, "date"),
        ({"type": ["string", "null"]}, "text"),
        ({"enum": ["a", "b", None]}, "text"),
        ({"type": "string", "enum": ["a"]}, "text"),
        ({"enum": [1, 2]}, "bigint"),
        ({"enum": ["a", 1]}, "jsonb"),
        ({"type": "integer"}, "bigint"),
        ({"type": "number"}, "double precision"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "object"}, "jsonb"),
        ({}, "jsonb"),
        ({"type": ["string", "integer"]}, "jsonb"),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "text"),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "jsonb"),
        ({"type": "array", "items": {"type": "string", "format": "uuid"}}, "uuid[]"),
        ({"type": "array", "items": {"type": "string"}}, "text[]"),
        ({"type": "array", "items": {"type": "integer"}}, "bigint[]"),
        ({"type": "array", "items": {"type": ["string", "null"]}}, "text[]"),
        ({"type": "array", "items": {"type": "object"}}, "jsonb"),
        ({"type": "array", "items": {"type": "array"}}, "jsonb"),
        ({"type": "array"}, "jsonb"),
    ],
)
def test_column_types(schema: dict[str, Any], sql_type: str) -> None:
    assert column_type(schema) == sql_type


def test_table_model() -> None:
    tickets = model()["tickets"]
    columns = {
        c.name: (c.sql_type, c.not_null, c.default, c.primary_key) for c in tickets.columns.values()
    }
    assert columns == {
        "_id": ("uuid", True, "gen_random_uuid()", True),
        "_creation_time": (TSTZ, True, "now()", False),
        "title": ("text", True, None, False),
        "state": ("text", True, "'draft'", False),
        "priority": ("bigint", False, "-5", False),
        "project_id": ("uuid", False, None, False),
        "depends_on": ("uuid[]", False, None, False),
        "outputs": ("jsonb", False, """'{"b": 1, "a": [1, 2]}'::jsonb""", False),
    }
    assert tickets.columns["project_id"].references == "projects"
    assert {(i.name, i.columns, i.unique, i.method) for i in tickets.indexes.values()} == {
        ("tickets__by_state", ("state",), False, "btree"),
        ("tickets__by_depends_on", ("depends_on",), False, "gin"),
        ("tickets__by_title", ("title", "_creation_time"), True, "btree"),
    }
    assert tickets.jsonb_columns == frozenset({"outputs"})


def test_required_but_nullable_column_is_nullable() -> None:
    table = table_model("t", {"properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]})
    assert not table.columns["a"].not_null


# -- plans --------------------------------------------------------------------------------


def test_plan_for_an_empty_database() -> None:
    plan = diff(model(), {})
    assert plan.destructive == [] and plan.destructive_statements == []
    assert plan.descriptions == [
        "create table tickets",
        "create table projects",
        "create index tickets__by_state",
        "create index tickets__by_depends_on",
        "create index tickets__by_title",
    ]
    assert describe(plan.statements) == [
        'CREATE TABLE IF NOT EXISTS "tickets" ("_id" uuid PRIMARY KEY DEFAULT '
        'gen_random_uuid(), "_creation_time" timestamp with time zone NOT NULL DEFAULT now(), '
        '"title" text NOT NULL, "state" text NOT NULL DEFAULT \'draft\', "priority" bigint '
        'DEFAULT -5, "project_id" uuid, "depends_on" uuid[], "outputs" jsonb DEFAULT '
        '\'{"b": 1, "a": [1, 2]}\'::jsonb); COMMENT ON TABLE "tickets" IS \'swarm-runtime: '
        "schema.json table'",
        'CREATE TABLE IF NOT EXISTS "projects" ("_id" uuid PRIMARY KEY DEFAULT '
        'gen_random_uuid(), "_creation_time" timestamp with time zone NOT NULL DEFAULT now(), '
        '"name" text); COMMENT ON TABLE "projects" IS \'swarm-runtime: schema.json table\'',
        'CREATE INDEX IF NOT EXISTS "tickets__by_state" ON "tickets" USING btree ("state")',
        'CREATE INDEX IF NOT EXISTS "tickets__by_depends_on" ON "tickets" USING gin ("depends_on")',
        'CREATE UNIQUE INDEX IF NOT EXISTS "tickets__by_title" ON "tickets" USING btree '
        '("title", "_creation_time")',
    ]
    assert plan.to_apply() == plan.statements


def test_applied_schema_diffs_to_nothing() -> None:
    plan = diff(model(), actual())
    assert plan.is_empty, plan.descriptions + plan.destructive


def test_additive_changes() -> None:
    properties = copy.deepcopy(SCHEMA["tables"]["tickets"]["properties"])
    properties["note"] = {"type": "string"}
    properties["attempts"] = {"type": "integer", "default": 0}
    properties["state"] = {"enum": ["draft", "pending"], "default": "pending"}
    properties["priority"] = {"type": "integer"}
    schema = changed(
        properties=properties,
        required=["title", "state", "attempts"],
        indexes={"by_state": ["state", "priority"], "by_note": ["note"]},
    )
    schema["tables"]["tickets"]["required"].remove("title")
    plan = diff(model(schema), actual())
    assert plan.destructive == []
    assert plan.descriptions == [
        "drop index tickets__by_state (its definition changed)",
        "drop index tickets__by_depends_on",
        "drop index tickets__by_title",
        "drop NOT NULL on tickets.title",
        "set default of tickets.state to 'pending'",
        "drop default of tickets.priority",
        "add column tickets.note text",
        "add column tickets.attempts bigint NOT NULL",
        "create index tickets__by_state",
        "create index tickets__by_note",
    ]
    assert describe(plan.statements) == [
        'DROP INDEX IF EXISTS "tickets__by_state"',
        'DROP INDEX IF EXISTS "tickets__by_depends_on"',
        'DROP INDEX IF EXISTS "tickets__by_title"',
        'ALTER TABLE "tickets" ALTER COLUMN "title" DROP NOT NULL',
        'ALTER TABLE "tickets" ALTER COLUMN "state" SET DEFAULT \'pending\'',
        'ALTER TABLE "tickets" ALTER COLUMN "priority" DROP DEFAULT',
        'ALTER TABLE "tickets" ADD COLUMN IF NOT EXISTS "note" text',
        'ALTER TABLE "tickets" ADD COLUMN IF NOT EXISTS "attempts" bigint NOT NULL DEFAULT 0',
        'CREATE INDEX IF NOT EXISTS "tickets__by_state" ON "tickets" USING btree '
        '("state", "priority")',
        'CREATE INDEX IF NOT EXISTS "tickets__by_note" ON "tickets" USING btree ("note")',
    ]


def test_destructive_changes_are_separated_and_refused() -> None:
    properties = copy.deepcopy(SCHEMA["tables"]["tickets"]["properties"])
    del properties["project_id"]
    properties["priority"] = {"type": "string"}
    properties["depends_on"] = {"type": "array", "items": {"type": "object"}}
    properties["owner"] = {"type": "string"}
    schema = changed(properties=properties, required=["title", "state", "owner", "outputs"])
    del schema["tables"]["projects"]
    current = actual()
    plan = diff(model(schema), current)
    assert plan.destructive == [
        "drop table projects",
        "drop column tickets.project_id",
        "change type of tickets.priority from bigint to text",
        "change type of tickets.depends_on from uuid[] to jsonb",
        "set NOT NULL on tickets.outputs (fails if a row holds NULL)",
        "add NOT NULL column tickets.owner without default (fails if the table has rows)",
    ]
    assert describe(plan.destructive_statements) == [
        'DROP TABLE IF EXISTS "projects"',
        'ALTER TABLE "tickets" DROP COLUMN IF EXISTS "project_id"',
        'ALTER TABLE "tickets" ALTER COLUMN "priority" DROP DEFAULT',
        'ALTER TABLE "tickets" ALTER COLUMN "priority" TYPE text USING "priority"::text',
        'ALTER TABLE "tickets" ALTER COLUMN "depends_on" TYPE jsonb USING to_jsonb("depends_on")',
        'ALTER TABLE "tickets" ALTER COLUMN "outputs" SET NOT NULL',
        'ALTER TABLE "tickets" ADD COLUMN IF NOT EXISTS "owner" text NOT NULL',
    ]
    # the GIN index on the retyped column is rebuilt (safe)
    assert plan.descriptions == [
        "drop index tickets__by_depends_on (its definition changed)",
        "create index tickets__by_depends_on",
    ]
    with pytest.raises(DestructiveChange) as info:
        plan.to_apply()
    assert info.value.problems[0] == "schema.json would drop table projects"
    assert info.value.problems[-1] == (
        "these changes may lose data or fail on existing rows; review them and re-run with "
        "--allow-destructive to apply them"
    )
    assert describe(plan.to_apply(allow_destructive=True)) == [
        'DROP INDEX IF EXISTS "tickets__by_depends_on"',
        'DROP TABLE IF EXISTS "projects"',
        'ALTER TABLE "tickets" DROP COLUMN IF EXISTS "project_id"',
        'ALTER TABLE "tickets" ALTER COLUMN "priority" DROP DEFAULT',
        'ALTER TABLE "tickets" ALTER COLUMN "priority" TYPE text USING "priority"::text',
        'ALTER TABLE "tickets" ALTER COLUMN "depends_on" TYPE jsonb USING to_jsonb("depends_on")',
        'ALTER TABLE "tickets" ALTER COLUMN "outputs" SET NOT NULL',
        'ALTER TABLE "tickets" ADD COLUMN IF NOT EXISTS "owner" text NOT NULL',
        'CREATE INDEX IF NOT EXISTS "tickets__by_depends_on" ON "tickets" USING gin ("depends_on")',
    ]


def test_runtime_tables_are_never_touched() -> None:
    current = actual_from_catalog(
        [*CATALOG_COLUMNS, ("_runtime_jobs", "id", "bigint", False, None)], CATALOG_INDEXES
    )
    assert "_runtime_jobs" not in current
    current["_runtime_jobs"] = TableModel("_runtime_jobs")
    assert diff(model(), current).is_empty


def test_unmanaged_indexes_are_left_alone() -> None:
    indexes = [
        *CATALOG_INDEXES,
        (
            "tickets",
            "my_hand_made",
            "CREATE INDEX my_hand_made ON public.tickets USING btree (title)",
        ),
    ]
    assert diff(model(), actual_from_catalog(CATALOG_COLUMNS, indexes)).is_empty


def test_default_literals_with_braces_and_quotes() -> None:
    schema = changed(
        properties={
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a", "b c"]},
            "note": {"type": "string", "default": "it's {x} \\ y"},
        },
        required=[],
        indexes={},
    )
    plan = diff(model(schema), {})
    assert (
        describe(plan.statements)[0]
        .split("; COMMENT")[0]
        .endswith(
            "\"tags\" text[] DEFAULT '{a,\"b c\"}', \"note\" text DEFAULT E'it''s {x} \\\\ y')"
        )
    )


# -- defaults as PostgreSQL renders them --------------------------------------------------


@pytest.mark.parametrize(
    ("sql_type", "desired", "actual", "equal"),
    [
        ("text", "'draft'", "'draft'::text", True),
        ("text", "E'it''s a \\\\ back'", "'it''s a \\ back'::text", True),
        ("bigint", "-5", "'-5'::integer", True),
        ("bigint", "0", "0", True),
        ("bigint", "1", "2", False),
        ("double precision", "1e+20", "'100000000000000000000'::numeric", True),
        ("double precision", "1.5", "1.5", True),
        ("boolean", "false", "false", True),
        ("jsonb", """'{"b": 1, "a": [1, 2]}'::jsonb""", """'{"a": [1, 2], "b": 1}'::jsonb""", True),
        ("jsonb", """'{"b": 1}'::jsonb""", """'{"b": 2}'::jsonb""", False),
        ("text[]", "'{a,\"b c\"}'", "'{a,\"b c\"}'::text[]", True),
        ("bigint[]", "'{1,2}'::int2[]", "'{1,2}'::smallint[]", True),
        (
            TSTZ,
            "'2024-01-01T10:00:00+02:00'",
            "'2024-01-01 08:00:00+00'::timestamp with time zone",
            True,
        ),
        (
            "uuid",
            "'00000000-0000-0000-0000-00000000000A'",
            "'00000000-0000-0000-0000-00000000000a'::uuid",
            True,
        ),
        ("text", None, None, True),
        ("text", "'x'", None, False),
        ("bigint", "'x'", "'y'", False),
    ],
)
def test_defaults_equal(
    sql_type: str, desired: str | None, actual: str | None, equal: bool
) -> None:
    assert defaults_equal(sql_type, desired, actual) is equal


# -- catalog ------------------------------------------------------------------------------


def test_catalog_queries() -> None:
    assert set(CATALOG_QUERIES) == {"columns", "indexes"}
    for query in CATALOG_QUERIES.values():
        assert query.count("%s") == 1
        assert f"'{MANAGED_COMMENT}'" in query  # finds tables removed from schema.json
        assert "_runtime_" in query and "'public'" in query
        assert not query.endswith(";")


def test_parse_named_sql_sections() -> None:
    text = "-- header\n-- name: a\nSELECT 1;\n\n-- name: b\n-- a comment\nSELECT 2\n"
    assert parse(text) == {"a": "SELECT 1", "b": "SELECT 2"}  # comments document, not sent


def test_actual_from_catalog_accepts_dict_rows_and_information_schema_spellings() -> None:
    rows: list[dict[str, Any]] = [
        {
            "table_name": "t",
            "column_name": "a",
            "data_type": "_uuid",
            "is_nullable": "YES",
            "column_default": None,
        },
        {
            "table_name": "t",
            "column_name": "b",
            "data_type": "timestamptz",
            "is_nullable": "NO",
            "column_default": "now()",
        },
    ]
    index_rows = [
        {
            "tablename": "t",
            "indexname": "t__by_a",
            "indexdef": "CREATE INDEX t__by_a ON public.t USING gin (a)",
        }
    ]
    (table,) = actual_from_catalog(rows, index_rows).values()
    assert table.columns["a"].sql_type == "uuid[]" and not table.columns["a"].not_null
    assert table.columns["b"].sql_type == TSTZ and table.columns["b"].not_null
    assert table.indexes["t__by_a"].method == "gin"


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("int8", "bigint"),
        ("_text", "text[]"),
        ("float8", "double precision"),
        ("bool", "boolean"),
        ("BIGINT", "bigint"),
        ("timestamptz[]", f"{TSTZ}[]"),
    ],
)
def test_normalize_type(name: str, normalized: str) -> None:
    assert normalize_type(name) == normalized


def test_parse_indexdef() -> None:
    assert parse_indexdef('CREATE UNIQUE INDEX "t__x" ON public.t USING btree ("order", b)') == (
        True,
        "btree",
        ("order", "b"),
    )
    assert parse_indexdef(
        "CREATE INDEX t__x ON public.t USING btree (a) WHERE (a IS NOT NULL)"
    ) == (False, "btree", ("a", "WHERE (a IS NOT NULL)"))
    assert parse_indexdef("CREATE INDEX t__x ON public.t USING btree (lower(a), b)") == (
        False,
        "btree",
        ("lower(a)", "b"),
    )
    assert parse_indexdef("nonsense") is None
    # an index whose definition cannot be read is rebuilt
    indexes = [row for row in CATALOG_INDEXES if row[1] != "tickets__by_state"]
    indexes.append(("tickets", "tickets__by_state", "nonsense"))
    tables = actual_from_catalog(CATALOG_COLUMNS, indexes)
    assert diff(model(), tables).descriptions == [
        "drop index tickets__by_state (its definition changed)",
        "create index tickets__by_state",
    ]
