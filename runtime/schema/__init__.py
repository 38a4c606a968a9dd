"""schema.json: load, validate, compile to msgspec types, and plan the DDL. Pure Python.

Loading (`loader.py`, meta-schema in `meta_schema.json`)::

    load_schema(path_or_dict) -> SchemaDoc        # raises LoadError listing every problem
    SchemaDoc.raw / .tables / .functions          # dicts, $refs inlined in tables/functions
    SchemaDoc.args_types[name]                    # compiled argument Struct per function
    SchemaDoc.version                             # sha256 of the canonical JSON
    table_infos(doc) -> dict[str, TableInfo]      # what ctx.db needs per table
    TableInfo.name / .column_types / .indexes / .model / .validate_document(doc, partial=)

Function arguments (`compiler.py`; built once per function at load/reload)::

    compile_args(name, args_schema) -> type[msgspec.Struct]
    make_decoder(struct_type) -> msgspec.json.Decoder
    decode_args(decoder, body: bytes) -> Struct   # InvalidJSON / InvalidArgs(details=[...])
    convert_args(struct_type, args: Mapping) -> Struct   # Python values, InvalidArgs
    struct_to_kwargs(struct) -> dict              # plain values; absent optionals left out
    kwargs_converter(struct_type) -> Callable     # the fastest equivalent of struct_to_kwargs
    validation_details(exc) -> [{"path": "$.x", "message": "..."}]
    compile_type(schema, path=..., prefix=...) -> a msgspec type annotation

Table writes (`documents.py`)::

    compile_table(name, table_schema) -> DocumentValidator
    DocumentValidator.validate_document(doc, *, partial: bool) -> dict   # InvalidDocument

Database model and migration plan (`tables.py`, `catalog.py` + `catalog.sql`, `ddl.py`)::

    desired_model(doc) -> dict[str, TableModel]
    CATALOG_QUERIES["columns"], CATALOG_QUERIES["indexes"]   # one param: table names
    actual_from_catalog(column_rows, index_rows) -> dict[str, TableModel]
    diff(desired, actual) -> Plan
    Plan.statements / .descriptions / .destructive / .destructive_statements
    Plan.to_apply(allow_destructive=False) -> list[sql.Composed]   # or DestructiveChange

Decisions worth knowing: arguments not `required` and without `default` are left out of the
kwargs when not sent (the Python default applies) and `null` is refused unless the schema
allows it; unknown argument fields are refused unless `"additionalProperties": true`; `uuid`
arguments reach app code as canonical lower-case strings, `date-time` as aware datetimes;
arrays of scalars are native PostgreSQL arrays (GIN-indexed when indexed alone); enums are
checked by msgspec, not by CHECK constraints; `x-references` creates no foreign key.
"""

from __future__ import annotations

from runtime.schema.catalog import CATALOG_QUERIES, actual_from_catalog, parse_indexdef
from runtime.schema.compiler import (
    compile_args,
    compile_type,
    convert_args,
    decode_args,
    kwargs_converter,
    make_decoder,
    struct_to_kwargs,
    validation_details,
)
from runtime.schema.ddl import Change, Plan, describe, diff
from runtime.schema.documents import DocumentValidator, compile_table
from runtime.schema.loader import SchemaDoc, TableInfo, load_schema, meta_schema, table_infos
from runtime.schema.tables import (
    Column,
    Index,
    TableModel,
    column_type,
    desired_model,
    normalize_type,
    table_model,
)

__all__ = [
    "CATALOG_QUERIES",
    "Change",
    "Column",
    "DocumentValidator",
    "Index",
    "Plan",
    "SchemaDoc",
    "TableInfo",
    "TableModel",
    "actual_from_catalog",
    "column_type",
    "compile_args",
    "compile_table",
    "compile_type",
    "convert_args",
    "decode_args",
    "describe",
    "desired_model",
    "diff",
    "kwargs_converter",
    "load_schema",
    "make_decoder",
    "meta_schema",
    "normalize_type",
    "parse_indexdef",
    "struct_to_kwargs",
    "table_infos",
    "table_model",
    "validation_details",
]
