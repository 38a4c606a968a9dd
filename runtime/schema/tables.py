"""The relational model of schema.json's tables: columns, PostgreSQL types and indexes.

Type mapping (DESIGN §4), decided per column from its schema:

| schema                                          | PostgreSQL                 |
|-------------------------------------------------|----------------------------|
| `string`, `string` + `format: email`, str enum  | `text`                     |
| `string` + `format: uuid`                       | `uuid`                     |
| `string` + `format: date-time` / `date`         | `timestamp with time zone` / `date` |
| `integer`, integer enum                         | `bigint`                   |
| `number`                                        | `double precision`         |
| `boolean`                                       | `boolean`                  |
| `array` of one scalar type above                | that type's array, e.g. `uuid[]`, `text[]` |
| `object`, other arrays, `{}`, mixed types       | `jsonb`                    |

`"null"` in a type list (or a null enum member) only makes the column nullable. Arrays of
scalars are native arrays so that "tickets whose `depends_on` contains X" is
`depends_on @> ARRAY[X]::uuid[]`, served by a GIN index; arrays of objects stay `jsonb`.
Enums are checked by the runtime (msgspec `Literal`), not by a CHECK constraint, so adding a
value to an enum never needs a migration. `x-references` documents a foreign key; no FOREIGN KEY
constraint is created (documents may be written in any order within a transaction).

A column is NOT NULL when it is `required` and its schema does not allow null. Every table
also has `_id uuid PRIMARY KEY DEFAULT gen_random_uuid()` and
`_creation_time timestamp with time zone NOT NULL DEFAULT now()`.

Indexes are named `<table>__<index>` (at most 63 bytes, checked at load); a one-column index on
an array or `jsonb` column uses GIN (containment: `@>`, `?`), every other index btree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from runtime.schema.loader import SchemaDoc

SYSTEM_COLUMNS = ("_id", "_creation_time")
RUNTIME_TABLE_PREFIX = "_runtime_"
# The table comment that marks tables created from schema.json (catalog.sql finds them).
MANAGED_COMMENT = "swarm-runtime: schema.json table"
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1 bytes)

TIMESTAMPTZ = "timestamp with time zone"
SCALAR_TYPES: dict[tuple[str, str | None], str] = {
    ("string", None): "text",
    ("string", "email"): "text",
    ("string", "uuid"): "uuid",
    ("string", "date-time"): TIMESTAMPTZ,
    ("string", "date"): "date",
    ("integer", None): "bigint",
    ("number", None): "double precision",
    ("boolean", None): "boolean",
}

# Spellings PostgreSQL catalogs use for the same type (udt_name, short aliases).
TYPE_ALIASES = {
    "timestamptz": TIMESTAMPTZ,
    "int8": "bigint",
    "int4": "integer",
    "int2": "smallint",
    "float8": "double precision",
    "float4": "real",
    "bool": "boolean",
    "varchar": "character varying",
    "timestamp": "timestamp without time zone",
}


@dataclass(frozen=True)
class Column:
    """One column. `sql_type` uses PostgreSQL's `format_type()` spelling; `default` is the
    SQL text of the default expression (a quoted literal for schema defaults)."""

    name: str
    sql_type: str
    not_null: bool = False
    default: str | None = None
    primary_key: bool = False
    references: str | None = None  # x-references: documented, not enforced


@dataclass(frozen=True)
class Index:
    """One managed index, named `<table>__<index>`."""

    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False
    method: str = "btree"


@dataclass
class TableModel:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)  # by full index name

    @property
    def jsonb_columns(self) -> frozenset[str]:
        """Columns whose values the database layer must wrap in `psycopg.types.json.Jsonb`."""
        return frozenset(c.name for c in self.columns.values() if c.sql_type == "jsonb")


def normalize_type(name: str) -> str:
    """`_uuid` -> `uuid[]`, `timestamptz` -> `timestamp with time zone`, `int8` -> `bigint`."""
    name = name.strip().lower()
    if name.startswith("_"):
        return normalize_type(name[1:]) + "[]"
    if name.endswith("[]"):
        return normalize_type(name[:-2]) + "[]"
    return TYPE_ALIASES.get(name, name)


def value_types(schema: Any) -> tuple[set[tuple[str, str | None]], bool]:
    """The (JSON type, format) pairs a schema admits, without null; and whether null is ok.

    An empty set means "anything" (`{}`).
    """
    if not isinstance(schema, dict):
        return set(), True
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        kinds: set[tuple[str, str | None]] = set()
        nullable = False
        for value in values:
            if value is None:
                nullable = True
            elif isinstance(value, bool):
                kinds.add(("boolean", None))
            elif isinstance(value, int):
                kinds.add(("integer", None))
            elif isinstance(value, float):
                kinds.add(("number", None))
            elif isinstance(value, str):
                kinds.add(("string", None))
            else:
                kinds.add(("object" if isinstance(value, dict) else "array", None))
        return kinds, nullable
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            kinds, nullable = set(), False
            for branch in schema[combinator]:
                branch_kinds, branch_null = value_types(branch)
                if not branch_kinds and not branch_null:
                    return set(), True
                kinds |= branch_kinds
                nullable = nullable or branch_null
            return kinds, nullable
    types = schema.get("type")
    if types is None:
        return set(), True
    type_list = [types] if isinstance(types, str) else list(types)
    fmt = schema.get("format")
    kinds = {(t, fmt if t == "string" else None) for t in type_list if t != "null"}
    return kinds, "null" in type_list


def column_type(schema: Any) -> str:
    """The PostgreSQL type of a column with this schema (see the module table)."""
    kinds, _ = value_types(schema)
    if len(kinds) != 1:
        return "jsonb"
    (kind,) = kinds
    if kind in SCALAR_TYPES:
        return SCALAR_TYPES[kind]
    if kind[0] == "array" and isinstance(schema, dict):
        item_kinds, _ = value_types(schema.get("items", {}))
        if len(item_kinds) == 1:
            (item,) = item_kinds
            if item in SCALAR_TYPES:
                return SCALAR_TYPES[item] + "[]"
    return "jsonb"


def default_sql(value: Any, sql_type: str) -> str | None:
    """A schema `default` as a SQL literal (`'draft'`, `0`, `'{"a": 1}'::jsonb`)."""
    if value is None:
        return None
    literal = sql.Literal(Jsonb(value) if sql_type == "jsonb" else value)
    return literal.as_string(None).strip()


def index_name(table: str, index: str) -> str:
    return f"{table}__{index}"


def index_spec(spec: Any) -> tuple[tuple[str, ...], bool]:
    """(columns, unique) of an `indexes` entry: `[cols]` or `{"columns": [...], "unique": b}`."""
    if isinstance(spec, dict):
        return tuple(spec.get("columns", ())), bool(spec.get("unique", False))
    return tuple(spec), False


def system_columns() -> dict[str, Column]:
    return {
        "_id": Column("_id", "uuid", True, "gen_random_uuid()", primary_key=True),
        "_creation_time": Column("_creation_time", TIMESTAMPTZ, True, "now()"),
    }


def table_model(name: str, table_schema: Mapping[str, Any]) -> TableModel:
    """The desired model of one (already validated) table schema."""
    properties: dict[str, Any] = table_schema.get("properties") or {}
    required = set(table_schema.get("required", ()))
    columns = system_columns()
    for column_name, schema in properties.items():
        sql_type = column_type(schema)
        _, nullable = value_types(schema)
        default = schema.get("default") if isinstance(schema, dict) else None
        references = schema.get("x-references") if isinstance(schema, dict) else None
        columns[column_name] = Column(
            column_name,
            sql_type,
            not_null=column_name in required and not nullable,
            default=default_sql(default, sql_type),
            references=references,
        )
    indexes: dict[str, Index] = {}
    for short, spec in (table_schema.get("indexes") or {}).items():
        cols, unique = index_spec(spec)
        full = index_name(name, short)
        indexes[full] = Index(full, name, cols, unique, index_method(columns, cols, unique))
    return TableModel(name, columns, indexes)


def index_method(columns: Mapping[str, Column], cols: tuple[str, ...], unique: bool) -> str:
    if len(cols) == 1 and not unique and cols[0] in columns:
        sql_type = columns[cols[0]].sql_type
        if sql_type == "jsonb" or sql_type.endswith("[]"):
            return "gin"
    return "btree"


def desired_model(schema_doc: SchemaDoc) -> dict[str, TableModel]:
    """What the database should look like for this schema.json, by table name."""
    return {name: info.model for name, info in schema_doc.table_infos.items()}
