"""Read the database's actual tables back into the model `tables.py` describes.

The integrator runs the two named queries of `catalog.sql` (`CATALOG_QUERIES["columns"]`,
`CATALOG_QUERIES["indexes"]`, each with one parameter: the list of table names to inspect) and
hands the rows to `actual_from_catalog`;
`ddl.diff(desired, actual)` then plans the migration. Only indexes named `<table>__*` are
managed; others (primary keys, hand-made ones) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from runtime.schema.tables import (
    RUNTIME_TABLE_PREFIX,
    Column,
    Index,
    TableModel,
    normalize_type,
)
from runtime.sql import parse

COLUMN_FIELDS = ("table_name", "column_name", "data_type", "is_nullable", "column_default")
INDEX_FIELDS = ("tablename", "indexname", "indexdef")

_INDEXDEF = re.compile(
    r"^CREATE (?P<unique>UNIQUE )?INDEX (?P<name>\S+) ON (?P<table>\S+) "
    r"USING (?P<method>\w+) \("
)


CATALOG_QUERIES: dict[str, str] = parse(
    resources.files("runtime.schema").joinpath("catalog.sql").read_text(encoding="utf-8")
)


def _row(row: Sequence[Any] | Mapping[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...]:
    if isinstance(row, Mapping):
        return tuple(row[f] for f in fields)
    return tuple(row[: len(fields)])


def _nullable(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().upper() in ("YES", "TRUE", "T")
    return bool(value)


def unquote(identifier: str) -> str:
    identifier = identifier.strip()
    if len(identifier) >= 2 and identifier[0] == identifier[-1] == '"':
        return identifier[1:-1].replace('""', '"')
    return identifier


def _split_columns(text: str) -> tuple[list[str], str]:
    """The top-level comma-separated items up to the closing parenthesis, and the rest."""
    parts, depth, quoted, current = [], 0, False, ""
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            if depth == 0:
                parts.append(current)
                return [p.strip() for p in parts], text[i + 1 :]
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p.strip() for p in parts], ""


def parse_indexdef(indexdef: str) -> tuple[bool, str, tuple[str, ...]] | None:
    """`CREATE UNIQUE INDEX x ON public.t USING btree (a, "order")` -> (True, "btree",
    ("a", "order")). Anything after the column list (WHERE, INCLUDE, ...) is kept as an extra
    pseudo-column so the index never equals a managed one and gets rebuilt."""
    text = indexdef.strip()
    match = _INDEXDEF.match(text)
    if match is None:
        return None
    items, rest = _split_columns(text[match.end() :])
    columns = tuple(unquote(c) for c in items)
    rest = rest.strip()
    if rest:
        columns = (*columns, rest)
    return bool(match.group("unique")), match.group("method").lower(), columns


def actual_from_catalog(
    columns_rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    index_rows: Iterable[Sequence[Any] | Mapping[str, Any]],
) -> dict[str, TableModel]:
    """The actual model from the rows of `CATALOG_QUERIES["columns"]` and `["indexes"]`.

    Rows are tuples in the order of the queries or dicts (psycopg `dict_row`); `is_nullable`
    may be a bool or information_schema's 'YES'/'NO', `data_type` a `format_type()` or
    `udt_name` spelling.
    """
    tables: dict[str, TableModel] = {}
    for row in columns_rows:
        table, column, data_type, is_nullable, default = _row(row, COLUMN_FIELDS)
        if table.startswith(RUNTIME_TABLE_PREFIX):
            continue
        model = tables.setdefault(table, TableModel(table))
        model.columns[column] = Column(
            column,
            normalize_type(data_type),
            not_null=not _nullable(is_nullable),
            default=default,
        )
    for row in index_rows:
        table, name, indexdef = _row(row, INDEX_FIELDS)
        if table not in tables or not name.startswith(f"{table}__"):
            continue
        parsed = parse_indexdef(indexdef)
        if parsed is None:
            index = Index(name, table, (indexdef,), False, "unknown")
        else:
            index = Index(name, table, parsed[2], parsed[0], parsed[1])
        tables[table].indexes[name] = index
    return tables
