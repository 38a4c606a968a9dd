"""schema.json loading: meta-schema, JSON paths in every problem, semantic checks. No database."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runtime.errors import LoadError
from runtime.schema import SchemaDoc, load_schema, meta_schema, table_infos

DESIGN_EXAMPLE: dict[str, Any] = {
    "tables": {
        "projects": {"type": "object", "properties": {"name": {"type": "string"}}},
        "tickets": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 500},
                "state": {"enum": ["draft", "pending", "claimed"]},
                "project_id": {"type": "string", "format": "uuid", "x-references": "projects"},
                "depends_on": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "outputs": {},
            },
            "required": ["title", "state"],
            "indexes": {"by_state": ["state"], "by_project_state": ["project_id", "state"]},
        },
    },
    "functions": {
        "tickets.claim": {
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "ticket_id": {"type": "string", "format": "uuid"},
                    "vm_id": {"type": "string", "maxLength": 64},
                    "assignee_type": {"enum": ["human", "agent"]},
                },
                "required": ["ticket_id", "vm_id"],
            },
            "returns": {"type": "object"},
        }
    },
}


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(LoadError) as info:
        load_schema(doc)
    return info.value.problems


def with_changes(**sections: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DESIGN_EXAMPLE)
    doc.update(sections)
    return doc


def test_meta_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(meta_schema())


def test_design_example_loads() -> None:
    doc = load_schema(DESIGN_EXAMPLE)
    assert isinstance(doc, SchemaDoc)
    assert set(doc.tables) == {"projects", "tickets"}
    assert set(doc.functions) == {"tickets.claim"}
    assert doc.functions["tickets.claim"]["returns"] == {"type": "object"}
    assert doc.args_types["tickets.claim"].__struct_fields__ == (
        "ticket_id",
        "vm_id",
        "assignee_type",
    )
    assert doc.source is None
    assert len(doc.version) == 64
    assert doc.version == load_schema(copy.deepcopy(DESIGN_EXAMPLE)).version


def test_load_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(DESIGN_EXAMPLE))
    doc = load_schema(path)
    assert doc.source == str(path)
    assert doc.raw == DESIGN_EXAMPLE


def test_table_infos_for_ctx_db() -> None:
    info = table_infos(load_schema(DESIGN_EXAMPLE))["tickets"]
    assert info.name == "tickets"
    assert info.column_types == {
        "_id": "uuid",
        "_creation_time": "timestamp with time zone",
        "title": "text",
        "state": "text",
        "project_id": "uuid",
        "depends_on": "uuid[]",
        "outputs": "jsonb",
    }
    assert info.indexes == {"by_state": ("state",), "by_project_state": ("project_id", "state")}
    assert info.model.jsonb_columns == frozenset({"outputs"})
    assert info.validate_document({"title": "t", "state": "draft"}, partial=False) == {
        "title": "t",
        "state": "draft",
    }


def test_refs_to_top_level_defs_are_inlined() -> None:
    doc = with_changes(
        **{
            "$defs": {
                "state": {"enum": ["draft", "pending"]},
                "id": {"type": "string", "format": "uuid"},
            }
        }
    )
    doc["tables"]["tickets"]["properties"]["state"] = {
        "$ref": "#/$defs/state",
        "description": "lifecycle",
    }
    doc["functions"]["tickets.claim"]["args"]["properties"]["ticket_id"] = {"$ref": "#/$defs/id"}
    loaded = load_schema(doc)
    assert loaded.tables["tickets"]["properties"]["state"] == {
        "enum": ["draft", "pending"],
        "description": "lifecycle",
    }
    assert loaded.functions["tickets.claim"]["args"]["properties"]["ticket_id"] == {
        "type": "string",
        "format": "uuid",
    }
    assert loaded.raw["tables"]["tickets"]["properties"]["state"]["$ref"] == "#/$defs/state"


def test_ref_problems() -> None:
    doc = with_changes(
        **{
            "$defs": {
                "a": {"$ref": "#/$defs/b"},
                "b": {"$ref": "#/$defs/a"},
                "s": {"type": "string"},
            }
        }
    )
    props = doc["functions"]["tickets.claim"]["args"]["properties"]
    props["x"] = {"$ref": "#/$defs/nope"}
    props["y"] = {"$ref": "#/$defs/a"}
    props["z"] = {"$ref": "#/$defs/s", "type": "integer"}
    problems = problems_of(doc)
    where = "functions.tickets.claim.args.properties"
    assert f"{where}.x.$ref: unknown reference '#/$defs/nope' (defined: a, b, s)" in problems
    assert any(p.startswith("$defs.b.$ref: circular reference a -> b -> a") for p in problems)
    assert (
        f"{where}.z.type: conflicts with 'type' of '#/$defs/s'; a keyword next to $ref "
        "must not contradict the definition"
    ) in problems


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text('{\n  "tables": {},\n  "functions": {,}\n}\n')
    assert problems_of(path) == [
        f"{path}: invalid JSON at line 3, column 17: Expecting property name enclosed in "
        "double quotes"
    ]


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(
        '{"functions": {"a": {"args": {"type": "object"}}, "a": {"args": {"type": "object"}}}}'
    )
    assert problems_of(path) == [f"{path}: invalid JSON: duplicate key 'a'"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    assert problems_of(path) == [f"{path}: cannot read schema: No such file or directory"]


def test_every_meta_schema_problem_is_listed_with_its_path() -> None:
    doc = with_changes()
    args = doc["functions"]["tickets.claim"]["args"]
    args["properties"]["vm_id"] = {"type": "strin", "not": {}}
    args["properties"]["BadName"] = {"type": "string"}
    doc["functions"]["Tickets.Claim"] = {"args": {"type": "object"}}
    doc["functions"]["no_args"] = {"returns": {}}
    doc["functions"]["array_args"] = {"args": {"type": "array"}}
    doc["tables"]["tickets"]["indexs"] = {}
    doc["tables"]["tickets"]["properties"]["state"]["format"] = "ipv4"
    doc["extra"] = 1
    problems = problems_of(doc)
    assert problems == [
        "(root): unknown key 'extra' (allowed: $comment, $defs, $schema, description, "
        "functions, tables)",
        "functions: 'Tickets.Claim' is not a valid function name: use dotted snake_case such "
        "as 'tickets.claim' or 'admin.users.create'",
        "functions.array_args.args.type: 'array' is not allowed here: function arguments are "
        'always an object ({"type": "object"})',
        "functions.no_args: 'args' is a required property",
        "functions.tickets.claim.args.properties: 'BadName' is not a valid argument name: use "
        "snake_case (a-z, 0-9, _) starting with a letter",
        "functions.tickets.claim.args.properties.vm_id: unsupported JSON Schema keyword 'not'",
        "functions.tickets.claim.args.properties.vm_id.type: 'strin' is not a JSON Schema "
        "type: use string, integer, number, boolean, object, array or null (or a list of them)",
        "tables.tickets: unknown key 'indexs' (allowed: $comment, additionalProperties, "
        "description, indexes, properties, required, type)",
        "tables.tickets.properties.state.format: 'ipv4' is not a supported format: use uuid, "
        "date-time, date or email",
    ]


def test_unsupported_keywords_anywhere_are_named() -> None:
    doc = with_changes()
    props = doc["functions"]["tickets.claim"]["args"]["properties"]
    props["a"] = {"type": "object", "patternProperties": {"^x": {}}}
    props["b"] = {"type": "array", "items": {"type": "string", "if": {}, "then": {}}}
    props["c"] = {"type": "object", "properties": {}, "dependentRequired": {}}
    assert problems_of(doc) == [
        "functions.tickets.claim.args.properties.a: unsupported JSON Schema keyword "
        "'patternProperties'",
        "functions.tickets.claim.args.properties.b.items: unsupported JSON Schema keyword 'if'",
        "functions.tickets.claim.args.properties.b.items: unsupported JSON Schema keyword 'then'",
        "functions.tickets.claim.args.properties.c: unsupported JSON Schema keyword "
        "'dependentRequired'",
    ]


def test_table_and_column_names() -> None:
    doc = with_changes()
    doc["tables"]["Bad-Table"] = {"properties": {}}
    doc["tables"]["tickets"]["properties"]["Title"] = {"type": "string"}
    doc["tables"]["tickets"]["properties"]["_secret"] = {"type": "string"}
    problems = problems_of(doc)
    assert problems == [
        "tables: 'Bad-Table' is not a valid table name: use snake_case (a-z, 0-9, _) starting "
        "with a letter, at most 63 characters",
        "tables.tickets.properties: 'Title' is not a valid column name: use snake_case "
        "(a-z, 0-9, _) starting with a letter, at most 63 characters",
    ]
    del doc["tables"]["Bad-Table"]
    del doc["tables"]["tickets"]["properties"]["Title"]
    assert problems_of(doc) == [
        "tables.tickets.properties._secret: column names starting with '_' are reserved for "
        "the runtime (_id, _creation_time)"
    ]


def test_semantic_checks_on_tables() -> None:
    doc = with_changes()
    table = doc["tables"]["tickets"]
    table["required"].append("nope")
    table["properties"]["owner_id"] = {"type": "string", "x-references": "users"}
    table["indexes"]["by_nothing"] = ["state", "missing"]
    table["indexes"]["by_time"] = ["state", "_creation_time"]  # system columns are fine
    table["indexes"]["by_outputs_state"] = ["outputs", "state"]
    table["indexes"]["by_" + "x" * 60] = ["state"]
    problems = problems_of(doc)
    long_name = "tickets__by_" + "x" * 60
    assert problems == [
        "tables.tickets.properties.owner_id.x-references: unknown table 'users'",
        "tables.tickets.required[2]: 'nope' is not in properties",
        "tables.tickets.indexes.by_nothing: unknown column 'missing'",
        "tables.tickets.indexes.by_outputs_state: jsonb column 'outputs' can only be indexed "
        "alone (with a GIN index)",
        f"tables.tickets.indexes.by_{'x' * 60}: index name {long_name!r} is longer than "
        "PostgreSQL's 63 bytes; shorten the table or index name",
    ]


def test_unique_index_form() -> None:
    doc = with_changes()
    doc["tables"]["tickets"]["indexes"]["by_title"] = {"columns": ["title"], "unique": True}
    doc["tables"]["tickets"]["indexes"]["bad"] = {"columns": [], "unique": True}
    assert problems_of(doc) == [
        "tables.tickets.indexes.bad: {'columns': [], 'unique': True} is not a valid index: use "
        'a list of column names, or {"columns": [...], "unique": true}'
    ]
    del doc["tables"]["tickets"]["indexes"]["bad"]
    info = load_schema(doc).table_infos["tickets"]
    assert info.indexes["by_title"] == ("title",)
    assert info.model.indexes["tickets__by_title"].unique


def test_compile_problems_are_reported_by_load() -> None:
    doc = with_changes()
    doc["functions"]["tickets.claim"]["args"]["properties"]["ratio"] = {"enum": [0.5, 1]}
    doc["functions"]["tickets.claim"]["args"]["properties"]["ctx"] = {"type": "string"}
    doc["functions"]["tickets.claim"]["returns"] = {"type": "string", "minimum": 1}
    doc["tables"]["tickets"]["properties"]["when"] = {
        "type": "string",
        "format": "date-time",
        "maxLength": 30,
    }
    assert problems_of(doc) == [
        "tables.tickets.properties.when: maxLength cannot be combined with format 'date-time'",
        "functions.tickets.claim.args.properties.ctx: 'ctx' cannot be a Python keyword argument",
        "functions.tickets.claim.returns: keyword 'minimum' does not apply to type 'string'",
    ]
    del doc["functions"]["tickets.claim"]["args"]["properties"]["ctx"]
    problems = problems_of(doc)
    assert (
        "functions.tickets.claim.args.properties.ratio.enum[0]: enum values must be "
        "strings, integers or null, not 0.5" in problems
    )


def test_table_defaults_are_checked() -> None:
    doc = with_changes()
    doc["tables"]["tickets"]["properties"]["score"] = {"type": "integer", "default": "high"}
    doc["tables"]["tickets"]["properties"]["tags"] = {
        "type": "array",
        "items": {"type": "string"},
        "default": [1],
    }
    assert problems_of(doc) == [
        "tables.tickets.properties.score.default: default 'high' is invalid: Expected `int`, "
        "got `str`",
        "tables.tickets.properties.tags.default: default [1] is invalid: Expected `str`, got "
        "`int` - at `$[0]`",
    ]


def test_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text("[]")
    assert problems_of(path) == ["(root): [] is not of type 'object'"]


def test_repository_schema_json_loads() -> None:
    path = Path(__file__).resolve().parent.parent / "schema.json"
    if not path.exists():
        pytest.skip("no schema.json in the repository")
    doc = load_schema(path)
    assert doc.tables and all(info.validator for info in doc.table_infos.values())
