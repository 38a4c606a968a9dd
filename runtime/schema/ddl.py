"""Plan the DDL that turns the actual database into schema.json's desired model.

`diff(desired, actual)` compares two `dict[table, TableModel]` (from `tables.desired_model` and
`catalog.actual_from_catalog`) and returns a `Plan`:

- safe (in `statements`, applied at start-up and on reload): CREATE TABLE, ADD COLUMN that is
  nullable or has a default, DROP NOT NULL, SET/DROP DEFAULT, and every index change (CREATE,
  DROP, or DROP + CREATE when the definition changed) — indexes hold no data, so dropping one
  loses nothing;
- destructive (`destructive` describes them, `destructive_statements` holds the SQL, applied
  only with `--allow-destructive`): DROP TABLE, DROP COLUMN, a column type change (ALTER TYPE
  ... USING a cast, which may fail or lose precision), SET NOT NULL on an existing column, and a
  new NOT NULL column without a default (fails on a non-empty table).

Tables named `_runtime_*` are the runtime's own and never touched. Tables created from
schema.json carry a table comment (`tables.MANAGED_COMMENT`) through which the catalog
queries still find them once removed from schema.json; other tables are never dropped.
Renames are not detected (a rename is a drop plus an add). Every statement is idempotent
(IF [NOT] EXISTS) so two workers racing at start-up do no harm; the caller still applies a
plan in one transaction.
`Plan.to_apply(allow_destructive=...)` gives all statements in a safe order (index drops, table
drops, table creates, column changes, index creates) or raises `DestructiveChange`.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from psycopg import sql

from runtime.errors import DestructiveChange
from runtime.schema.tables import (
    MANAGED_COMMENT,
    RUNTIME_TABLE_PREFIX,
    Column,
    Index,
    TableModel,
)

# Phases: the order statements run in when a plan is applied.
DROP_INDEX, DROP_TABLE, CREATE_TABLE, DROP_COLUMN, ALTER_COLUMN, CREATE_INDEX = range(6)


@dataclass(frozen=True)
class Change:
    description: str
    statements: tuple[sql.Composed, ...]
    destructive: bool
    phase: int


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    def _ordered(self, destructive: bool | None) -> list[Change]:
        chosen = [c for c in self.changes if destructive is None or c.destructive == destructive]
        return sorted(chosen, key=lambda c: c.phase)  # stable: keeps table/column order

    @property
    def statements(self) -> list[sql.Composed]:
        """The safe (additive) statements, in order."""
        return [s for c in self._ordered(False) for s in c.statements]

    @property
    def descriptions(self) -> list[str]:
        """What the safe statements do, for logs: "create table tickets", ..."""
        return [c.description for c in self._ordered(False)]

    @property
    def destructive(self) -> list[str]:
        """Human descriptions of the changes that may lose data or fail on existing rows."""
        return [c.description for c in self._ordered(True)]

    @property
    def destructive_statements(self) -> list[sql.Composed]:
        return [s for c in self._ordered(True) for s in c.statements]

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def to_apply(self, *, allow_destructive: bool = False) -> list[sql.Composed]:
        """Every statement to run, in order; raises `DestructiveChange` when the plan has
        destructive changes and they are not allowed (then nothing should be applied)."""
        if self.destructive and not allow_destructive:
            raise DestructiveChange(
                [f"schema.json would {d}" for d in self.destructive]
                + [
                    "these changes may lose data or fail on existing rows; review them and "
                    "re-run with --allow-destructive to apply them"
                ]
            )
        return [s for c in self._ordered(None) for s in c.statements]


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def column_definition(column: Column) -> sql.Composed:
    """`"name" type [PRIMARY KEY] [NOT NULL] [DEFAULT ...]`."""
    parts: list[sql.Composable] = [_ident(column.name), sql.SQL(" " + column.sql_type)]
    if column.primary_key:
        parts.append(sql.SQL(" PRIMARY KEY"))
    elif column.not_null:
        parts.append(sql.SQL(" NOT NULL"))
    if column.default is not None:
        parts.append(sql.SQL(" DEFAULT " + column.default))
    return sql.Composed(parts)


def create_table(table: TableModel) -> sql.Composed:
    """CREATE TABLE plus the comment that marks it as the runtime's (two statements in one,
    so run it without parameters)."""
    columns = sql.SQL(", ").join(column_definition(c) for c in table.columns.values())
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}); COMMENT ON TABLE {} IS {}").format(
        _ident(table.name), columns, _ident(table.name), sql.Literal(MANAGED_COMMENT)
    )


def create_index(index: Index) -> sql.Composed:
    return sql.SQL("CREATE {}INDEX IF NOT EXISTS {} ON {} USING {} ({})").format(
        sql.SQL("UNIQUE " if index.unique else ""),
        _ident(index.name),
        _ident(index.table),
        sql.SQL(index.method),
        sql.SQL(", ").join(_ident(c) for c in index.columns),
    )


def drop_index(index: Index) -> sql.Composed:
    return sql.SQL("DROP INDEX IF EXISTS {}").format(_ident(index.name))


def _alter(table: str, action: sql.Composable) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} {}").format(_ident(table), action)


def _alter_column(table: str, column: str, action: str) -> sql.Composed:
    # `action` may hold a default literal with braces: compose, never `.format()` it.
    return _alter(
        table, sql.Composed([sql.SQL("ALTER COLUMN "), _ident(column), sql.SQL(" " + action)])
    )


# -- default comparison -------------------------------------------------------------------

_CAST = re.compile(r"::[a-z0-9_ ]+(\[\])*$|::\"[^\"]+\"(\[\])*$", re.IGNORECASE)


def _literal_text(expression: str) -> str:
    """`'x'::text` -> `x`; `E'a\\\\b'` -> `a\\b`; `(-5)` -> `-5`; other expressions as they are."""
    text = expression.strip()
    while True:
        stripped = _CAST.sub("", text).strip()
        if stripped.startswith("(") and stripped.endswith(")"):
            stripped = stripped[1:-1].strip()
        if stripped == text:
            break
        text = stripped
    escaped = text[:2] in ("E'", "e'")
    if escaped:
        text = text[1:]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1].replace("''", "'")
        if escaped:
            text = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    return text


def defaults_equal(sql_type: str, desired: str | None, actual: str | None) -> bool:
    """Whether two default expressions mean the same value (PostgreSQL re-renders defaults:
    `'x'` comes back as `'x'::text`, jsonb is re-serialised, timestamps are normalised)."""
    if desired is None or actual is None:
        return desired is actual
    if desired.strip() == actual.strip():
        return True
    left, right = _literal_text(desired), _literal_text(actual)
    if left == right:
        return True
    try:
        if sql_type == "jsonb":
            return bool(json.loads(left) == json.loads(right))
        if sql_type.startswith("timestamp"):
            return datetime.datetime.fromisoformat(left) == datetime.datetime.fromisoformat(right)
        if sql_type in ("bigint", "integer", "smallint", "double precision", "real", "numeric"):
            return float(left) == float(right)
        if sql_type == "uuid":
            return left.lower() == right.lower()
    except ValueError:
        return False
    return False


# -- the diff -----------------------------------------------------------------------------


def _describe_column(column: Column) -> str:
    return f"{column.sql_type}{' NOT NULL' if column.not_null else ''}"


def _column_changes(table: str, want: Column, have: Column, plan: Plan) -> bool:
    """Add the changes for one existing column; True when its type changes."""
    where = f"{table}.{want.name}"
    if want.sql_type != have.sql_type:
        statements = []
        if have.default is not None:
            statements.append(_alter_column(table, want.name, "DROP DEFAULT"))
        using = (
            sql.Composed([sql.SQL("to_jsonb("), _ident(want.name), sql.SQL(")")])
            if want.sql_type == "jsonb"
            else sql.Composed([_ident(want.name), sql.SQL("::" + want.sql_type)])
        )
        statements.append(
            _alter(
                table,
                sql.Composed(
                    [
                        sql.SQL("ALTER COLUMN "),
                        _ident(want.name),
                        sql.SQL(f" TYPE {want.sql_type} USING "),
                        using,
                    ]
                ),
            )
        )
        if want.default is not None:
            statements.append(_alter_column(table, want.name, "SET DEFAULT " + want.default))
        plan.changes.append(
            Change(
                f"change type of {where} from {have.sql_type} to {want.sql_type}",
                tuple(statements),
                True,
                ALTER_COLUMN,
            )
        )
    elif not defaults_equal(want.sql_type, want.default, have.default):
        if want.default is None:
            plan.changes.append(
                Change(
                    f"drop default of {where}",
                    (_alter_column(table, want.name, "DROP DEFAULT"),),
                    False,
                    ALTER_COLUMN,
                )
            )
        else:
            plan.changes.append(
                Change(
                    f"set default of {where} to {want.default}",
                    (_alter_column(table, want.name, "SET DEFAULT " + want.default),),
                    False,
                    ALTER_COLUMN,
                )
            )
    if want.not_null and not have.not_null and not want.primary_key:
        plan.changes.append(
            Change(
                f"set NOT NULL on {where} (fails if a row holds NULL)",
                (_alter_column(table, want.name, "SET NOT NULL"),),
                True,
                ALTER_COLUMN,
            )
        )
    elif have.not_null and not want.not_null:
        plan.changes.append(
            Change(
                f"drop NOT NULL on {where}",
                (_alter_column(table, want.name, "DROP NOT NULL"),),
                False,
                ALTER_COLUMN,
            )
        )
    return want.sql_type != have.sql_type


def _add_column(table: str, column: Column, plan: Plan) -> None:
    statement = _alter(
        table, sql.SQL("ADD COLUMN IF NOT EXISTS {}").format(column_definition(column))
    )
    where = f"{table}.{column.name}"
    if column.not_null and column.default is None:
        plan.changes.append(
            Change(
                f"add NOT NULL column {where} without default (fails if the table has rows)",
                (statement,),
                True,
                ALTER_COLUMN,
            )
        )
    else:
        plan.changes.append(
            Change(
                f"add column {where} {_describe_column(column)}", (statement,), False, ALTER_COLUMN
            )
        )


def _index_changes(want: TableModel, have: TableModel, retyped: set[str], plan: Plan) -> None:
    for name, index in want.indexes.items():
        current = have.indexes.get(name)
        if current is None:
            plan.changes.append(
                Change(f"create index {name}", (create_index(index),), False, CREATE_INDEX)
            )
        elif (current.columns, current.unique, current.method) != (
            index.columns,
            index.unique,
            index.method,
        ) or retyped & set(index.columns):
            plan.changes.append(
                Change(
                    f"drop index {name} (its definition changed)",
                    (drop_index(current),),
                    False,
                    DROP_INDEX,
                )
            )
            plan.changes.append(
                Change(f"create index {name}", (create_index(index),), False, CREATE_INDEX)
            )
    for name, index in have.indexes.items():
        if name not in want.indexes:
            plan.changes.append(
                Change(f"drop index {name}", (drop_index(index),), False, DROP_INDEX)
            )


def diff(desired: Mapping[str, TableModel], actual: Mapping[str, TableModel]) -> Plan:
    """The plan that makes `actual` look like `desired` (see the module docstring)."""
    plan = Plan()
    for name, want in desired.items():
        have = actual.get(name)
        if have is None:
            plan.changes.append(
                Change(f"create table {name}", (create_table(want),), False, CREATE_TABLE)
            )
            for index in want.indexes.values():
                plan.changes.append(
                    Change(
                        f"create index {index.name}", (create_index(index),), False, CREATE_INDEX
                    )
                )
            continue
        retyped: set[str] = set()
        for column in want.columns.values():
            if column.name not in have.columns:
                _add_column(name, column, plan)
            elif _column_changes(name, column, have.columns[column.name], plan):
                retyped.add(column.name)
        for column in have.columns.values():
            if column.name not in want.columns:
                plan.changes.append(
                    Change(
                        f"drop column {name}.{column.name}",
                        (
                            _alter(
                                name,
                                sql.SQL("DROP COLUMN IF EXISTS {}").format(_ident(column.name)),
                            ),
                        ),
                        True,
                        DROP_COLUMN,
                    )
                )
        _index_changes(want, have, retyped, plan)
    for name in actual:
        if name not in desired and not name.startswith(RUNTIME_TABLE_PREFIX):
            plan.changes.append(
                Change(
                    f"drop table {name}",
                    (sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(name)),),
                    True,
                    DROP_TABLE,
                )
            )
    return plan


def describe(statements: list[sql.Composed]) -> list[str]:
    """Statements as SQL text (no connection needed), for logs, `migrate --dry-run` and tests."""
    return [s.as_string(None) for s in statements]
