"""Validate documents written through `ctx.db` against their table's schema.

`compile_table(name, table_schema)` builds, once, two Structs (a full document for insert /
replace, a partial one for patch) and `validate_document(doc, partial=...)` runs one
`msgspec.convert` plus one `msgspec.to_builtins`. The result is ready for psycopg:

- only the columns the caller gave, in no particular order;
- `uuid` columns (and `uuid[]` items) as `uuid.UUID`, `date-time` as aware `datetime`,
  `date` as `date` (strings and the objects themselves are both accepted);
- `jsonb` columns as plain JSON values (dict/list/str/...; formats inside stay strings), which
  the database layer wraps in `Jsonb` (`TableModel.jsonb_columns`).

Rules: `_id` and `_creation_time` are the runtime's, never written; unknown columns are refused;
a required column may be omitted on insert only when it has a `default` (the database fills it);
a column that is not required accepts `None` (SQL NULL) so a document read back can be written
back; `partial=True` (patch) enforces no required column but still refuses `None` for NOT NULL
columns.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any, Union

import msgspec
from msgspec import UNSET, UnsetType

from runtime.errors import InvalidDocument, LoadError
from runtime.schema.compiler import Compiler, compile_type
from runtime.schema.tables import SYSTEM_COLUMNS, column_type, value_types

WRITE_BUILTINS: tuple[type, ...] = (uuid.UUID, datetime.datetime, datetime.date)

_MISSING = re.compile(r"^Object missing required field `(.+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(.+)`$")
_COLUMN = re.compile(r"^\$\.([A-Za-z0-9_]+)")


class DocumentValidator:
    """The compiled write validator of one table."""

    def __init__(self, table: str, table_schema: Mapping[str, Any]) -> None:
        self.table = table
        properties: dict[str, Any] = dict(table_schema.get("properties") or {})
        required = set(table_schema.get("required", ()))
        prefix = f"{table}__doc"
        full: list[Any] = []
        partial: list[Any] = []
        self.enums: dict[str, list[Any]] = {}
        self.json_columns: list[str] = []
        problems: list[str] = []
        for name, schema in properties.items():
            try:
                tp = compile_type(
                    schema, path=("tables", table, "properties", name), prefix=prefix, bigint=True
                )
            except LoadError as exc:
                problems += exc.problems
                continue
            _, nullable = value_types(schema)
            has_default = isinstance(schema, dict) and schema.get("default") is not None
            if has_default:
                try:  # the database applies it; it must still be a valid value
                    Compiler.default(tp, schema["default"], ("tables", table, "properties", name))
                except LoadError as exc:
                    problems += exc.problems
            if isinstance(schema, dict) and "enum" in schema:
                self.enums[name] = [v for v in schema["enum"] if v is not None]
            if column_type(schema) == "jsonb":
                self.json_columns.append(name)
            if name in required:
                full.append((name, tp, UNSET) if has_default else (name, tp))
                partial.append((name, Union[tp, UnsetType], UNSET))  # noqa: UP007
            else:
                optional = tp if nullable else Union[tp, None]  # noqa: UP007
                field = (name, Union[optional, UnsetType], UNSET)  # noqa: UP007
                full.append(field)
                partial.append(field)
        if problems:
            raise LoadError(problems)
        options: dict[str, Any] = {"kw_only": True, "forbid_unknown_fields": True, "gc": False}
        self.full: type[msgspec.Struct] = msgspec.defstruct(f"{prefix}_full", full, **options)
        self.partial: type[msgspec.Struct] = msgspec.defstruct(
            f"{prefix}_partial", partial, **options
        )

    def validate_document(self, doc: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
        """The write-ready document, or `InvalidDocument` naming the column."""
        try:
            obj = msgspec.convert(doc, self.partial if partial else self.full)
        except msgspec.ValidationError as exc:
            raise self._error(exc) from exc
        try:
            out: dict[str, Any] = msgspec.to_builtins(obj, builtin_types=WRITE_BUILTINS)
        except TypeError as exc:  # a value msgspec cannot encode, in an `{}` (Any) column
            raise self._unencodable(doc, exc) from exc
        for name in self.json_columns:  # JSON values only: UUIDs, datetimes become strings
            if name in out:
                out[name] = msgspec.to_builtins(out[name])
        return out

    def _unencodable(self, doc: Mapping[str, Any], exc: TypeError) -> InvalidDocument:
        for name in self.json_columns:
            try:
                msgspec.to_builtins(doc.get(name))
            except TypeError as column_exc:
                return InvalidDocument(
                    f"Invalid value for column {name!r} of table {self.table!r}: {column_exc}",
                    [{"path": f"$.{name}", "message": str(column_exc)}],
                )
        return InvalidDocument(f"Invalid document for table {self.table!r}: {exc}")

    def _error(self, exc: msgspec.ValidationError) -> InvalidDocument:
        text = str(exc)
        head, sep, tail = text.rpartition(" - at `")
        path, message = (tail[:-1], head) if sep and tail.endswith("`") else ("$", text)
        details = [{"path": path, "message": message}]
        table = self.table
        column = _COLUMN.match(path)
        if column:
            name = column.group(1)
            if message.startswith("Invalid enum value") and path == f"$.{name}":
                expected = ", ".join(repr(v) for v in self.enums.get(name, []))
                message = f"{message} (expected one of {expected})"
            return InvalidDocument(
                f"Invalid value for column {name!r} of table {table!r}: {message}", details
            )
        missing = _MISSING.match(message)
        if missing:
            return InvalidDocument(
                f"Missing required column {missing.group(1)!r} of table {table!r}", details
            )
        unknown = _UNKNOWN.match(message)
        if unknown:
            name = unknown.group(1)
            if name in SYSTEM_COLUMNS:
                return InvalidDocument(
                    f"Column {name!r} of table {table!r} is managed by the runtime and cannot "
                    "be written",
                    details,
                )
            return InvalidDocument(f"Unknown column {name!r} for table {table!r}", details)
        return InvalidDocument(f"Invalid document for table {table!r}: {message}", details)


def compile_table(name: str, table_schema: Mapping[str, Any]) -> DocumentValidator:
    """The write validator of table `name`; raises `LoadError` for what it cannot compile."""
    return DocumentValidator(name, table_schema)
