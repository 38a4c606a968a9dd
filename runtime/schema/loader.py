"""Load schema.json: parse, validate against the meta-schema, check, compile — all at once.

`load_schema(path_or_dict)` returns a `SchemaDoc` whose functions carry their compiled
argument Struct, decoder and kwargs converter, and whose tables carry their write validator.
Every problem found is reported together in one `LoadError`, each line naming its JSON path:
`functions.tickets.claim.args.properties.vm_id.type: 'strin' is not a JSON Schema type: ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

import jsonschema
import msgspec

from runtime.errors import LoadError
from runtime.schema.compiler import compile_args, compile_type
from runtime.schema.documents import DocumentValidator, compile_table
from runtime.schema.paths import Path, problem
from runtime.schema.refs import inline_refs
from runtime.schema.tables import (
    MAX_IDENTIFIER,
    SYSTEM_COLUMNS,
    TableModel,
    column_type,
    index_name,
    index_spec,
    table_model,
)


@cache
def meta_schema() -> dict[str, Any]:
    """The meta-schema schema.json is validated against (`runtime/schema/meta_schema.json`)."""
    text = resources.files("runtime.schema").joinpath("meta_schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


@cache
def _meta_validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.Draft202012Validator
    return cls(meta_schema(), format_checker=cls.FORMAT_CHECKER)


@dataclass(frozen=True)
class TableInfo:
    """What `ctx.db` needs of one table (satisfies `runtime.db.documents.TableInfo`)."""

    name: str
    schema: dict[str, Any] = field(repr=False)  # $refs inlined
    column_types: dict[str, str]  # column -> PostgreSQL type, system columns first
    indexes: dict[str, tuple[str, ...]]  # index name as in schema.json -> columns
    model: TableModel = field(repr=False)
    validator: DocumentValidator = field(repr=False)

    def validate_document(self, doc: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
        """See `DocumentValidator.validate_document`; raises `InvalidDocument`."""
        return self.validator.validate_document(doc, partial=partial)


@dataclass(frozen=True)
class SchemaDoc:
    """A loaded schema.json.

    `tables` and `functions` hold the entries with every `$ref` inlined (plain JSON, what
    `GET /fn` and OpenAPI show); `args_types` the compiled argument Struct of each function
    and `table_infos` the compiled tables. `version` is a digest of the canonical JSON.
    """

    raw: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    functions: dict[str, dict[str, Any]]
    args_types: dict[str, type[msgspec.Struct]] = field(repr=False)
    table_infos: dict[str, TableInfo] = field(repr=False)
    source: str | None = None

    @property
    def version(self) -> str:
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def table_infos(doc: SchemaDoc) -> dict[str, TableInfo]:
    """The compiled tables of a loaded schema, by name."""
    return doc.table_infos


# -- parsing ------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read(source: str | os.PathLike[str]) -> Any:
    name = os.fspath(source)
    try:
        text = FilePath(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise LoadError([f"{name}: cannot read schema: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise LoadError([f"{name}: not UTF-8 text: {exc}"]) from exc
    return parse_json(text, name)


def parse_json(text: str, name: str = "schema.json") -> Any:
    """JSON text -> value; errors name line and column; duplicate keys are refused."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise LoadError(
            [f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from exc
    except ValueError as exc:
        raise LoadError([f"{name}: invalid JSON: {exc}"]) from exc


# -- meta-schema --------------------------------------------------------------------------


def _meta_messages(error: jsonschema.ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [
            k
            for k in error.instance
            if k not in known and not any(re.search(p, k) for p in patterns)
        ]
        if schema.get("x-kind") == "schema":
            return [f"unsupported JSON Schema keyword {k!r}" for k in extras]
        allowed = ", ".join(sorted(known))
        return [f"unknown key {k!r} (allowed: {allowed})" for k in extras]
    if "x-message" in schema:
        return [f"{error.instance!r} {schema['x-message']}"]
    return [error.message]


def meta_errors(raw: Any) -> list[tuple[Path, str]]:
    """Every violation of the meta-schema as (path, message), sorted by path."""
    errors = sorted(
        _meta_validator().iter_errors(raw),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    found: list[tuple[Path, str]] = []
    for error in errors:
        path: Path = tuple(error.absolute_path)
        for message in _meta_messages(error):
            if (path, message) not in found:
                found.append((path, message))
    return found


# -- semantic checks ----------------------------------------------------------------------


def _table_problems(name: str, table: dict[str, Any], table_names: set[str]) -> list[str]:
    where: Path = ("tables", name)
    problems: list[str] = []
    properties: dict[str, Any] = table.get("properties") or {}
    for column, schema in properties.items():
        if column.startswith("_"):
            problems.append(
                problem(
                    (*where, "properties", column),
                    "column names starting with '_' are reserved for the runtime "
                    f"({', '.join(SYSTEM_COLUMNS)})",
                )
            )
        ref = schema.get("x-references") if isinstance(schema, dict) else None
        if isinstance(ref, str) and ref not in table_names:
            problems.append(
                problem((*where, "properties", column, "x-references"), f"unknown table {ref!r}")
            )
    for i, column in enumerate(table.get("required", [])):
        if column not in properties:
            problems.append(problem((*where, "required", i), f"{column!r} is not in properties"))
    for index, spec in (table.get("indexes") or {}).items():
        columns, _ = index_spec(spec)
        for column in columns:
            if column not in properties and column not in SYSTEM_COLUMNS:
                problems.append(problem((*where, "indexes", index), f"unknown column {column!r}"))
        full = index_name(name, index)
        if len(full.encode()) > MAX_IDENTIFIER:
            problems.append(
                problem(
                    (*where, "indexes", index),
                    f"index name {full!r} is longer than PostgreSQL's {MAX_IDENTIFIER} bytes; "
                    "shorten the table or index name",
                )
            )
        jsonb = [c for c in columns if c in properties and column_type(properties[c]) == "jsonb"]
        if len(columns) > 1 and jsonb:
            problems.append(
                problem(
                    (*where, "indexes", index),
                    f"jsonb column {jsonb[0]!r} can only be indexed alone (with a GIN index)",
                )
            )
    return problems


# -- load ---------------------------------------------------------------------------------


def load_schema(source: str | os.PathLike[str] | Mapping[str, Any]) -> SchemaDoc:
    """Load, validate and compile schema.json (a path, or the already parsed document).

    Raises `LoadError` listing every problem found: JSON syntax (line, column), meta-schema
    violations, semantic problems (unknown index columns or referenced tables, reserved
    column names, over-long index names) and keywords the compiler cannot compile.
    """
    if isinstance(source, Mapping):
        raw: Any = dict(source)
        name = None
    else:
        name = os.fspath(source)
        raw = _read(source)
    errors = meta_errors(raw)
    problems = [problem(path, message) for path, message in errors]
    if not isinstance(raw, dict):
        raise LoadError(problems)
    # Entries that fail the meta-schema are reported as such, not compiled.
    bad = {path[:2] for path, _ in errors if len(path) >= 2}

    defs = _section(raw, "$defs")
    tables_raw = _section(raw, "tables")
    tables: dict[str, dict[str, Any]] = {}
    infos: dict[str, TableInfo] = {}
    for table_name, table in tables_raw.items():
        where: Path = ("tables", table_name)
        resolved = inline_refs(table, defs, where, problems)
        tables[table_name] = resolved
        if where in bad or not isinstance(resolved, dict):
            continue
        found = _table_problems(table_name, resolved, set(tables_raw))
        problems += found
        if not found:
            try:
                infos[table_name] = _table_info(table_name, resolved)
            except LoadError as exc:
                problems += exc.problems

    functions: dict[str, dict[str, Any]] = {}
    args_types: dict[str, type[msgspec.Struct]] = {}
    for fn_name, entry in _section(raw, "functions").items():
        where = ("functions", fn_name)
        if not isinstance(entry, dict):
            continue
        resolved = dict(entry)
        for key in ("args", "returns"):
            if key in entry:
                resolved[key] = inline_refs(entry[key], defs, (*where, key), problems)
        functions[fn_name] = resolved
        if where in bad:
            continue
        try:
            args_types[fn_name] = compile_args(fn_name, resolved["args"])
        except LoadError as exc:
            problems += exc.problems
        if resolved.get("returns") is not None:
            try:
                compile_type(resolved["returns"], path=(*where, "returns"), prefix=fn_name)
            except LoadError as exc:
                problems += exc.problems

    if problems:
        raise LoadError(problems)
    return SchemaDoc(raw, tables, functions, args_types, infos, name)


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _table_info(name: str, schema: dict[str, Any]) -> TableInfo:
    model = table_model(name, schema)
    indexes = {short: index_spec(spec)[0] for short, spec in (schema.get("indexes") or {}).items()}
    return TableInfo(
        name=name,
        schema=schema,
        column_types={c.name: c.sql_type for c in model.columns.values()},
        indexes=indexes,
        model=model,
        validator=compile_table(name, schema),
    )
