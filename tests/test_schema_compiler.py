"""JSON Schema -> msgspec: argument decoding, exact error messages, table document validation."""

from __future__ import annotations

import datetime
import importlib.util
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime.errors import InvalidArgs, InvalidDocument, InvalidJSON, LoadError
from runtime.schema import (
    compile_args,
    compile_table,
    convert_args,
    decode_args,
    kwargs_converter,
    make_decoder,
    struct_to_kwargs,
    validation_details,
)
from runtime.schema.compiler import EMAIL_PATTERN

UUID = "0b6c3a4e-3f0e-4b8e-9f7c-2d9a6a1e5b11"

CLAIM: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ticket_id": {"type": "string", "format": "uuid"},
        "vm_id": {"type": "string", "maxLength": 8},
        "assignee_type": {"enum": ["human", "agent"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["ticket_id", "vm_id"],
}


def call(schema: dict[str, Any], body: bytes) -> dict[str, Any]:
    struct = compile_args("t.f", schema)
    return kwargs_converter(struct)(decode_args(make_decoder(struct), body))


def error_of(schema: dict[str, Any], body: bytes) -> InvalidArgs:
    with pytest.raises(InvalidArgs) as info:
        call(schema, body)
    return info.value


def load_problems(schema: dict[str, Any]) -> list[str]:
    with pytest.raises(LoadError) as info:
        compile_args("t.f", schema)
    return info.value.problems


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


# -- decoding arguments -------------------------------------------------------------------


def test_valid_call_gives_plain_kwargs() -> None:
    body = b'{"ticket_id": "0B6C3A4E-3F0E-4B8E-9F7C-2D9A6A1E5B11", "vm_id": "vm-1", "count": 3}'
    assert call(CLAIM, body) == {"ticket_id": UUID, "vm_id": "vm-1", "count": 3}


def test_absent_optional_arguments_are_left_out() -> None:
    # so that the Python default (`assignee_type: str = "agent"`) applies
    assert call(CLAIM, b'{"ticket_id": "%s", "vm_id": "v"}' % UUID.encode()) == {
        "ticket_id": UUID,
        "vm_id": "v",
    }


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (b'{"ticket_id": "x", "vm_id": "v"}', "$.ticket_id", "Invalid UUID"),
        (
            b'{"ticket_id": "%s", "vm_id": "123456789"}' % UUID.encode(),
            "$.vm_id",
            "Expected `str` of length <= 8",
        ),
        (
            b'{"ticket_id": "%s", "vm_id": "v", "assignee_type": "robot"}' % UUID.encode(),
            "$.assignee_type",
            "Invalid enum value 'robot'",
        ),
        (
            b'{"ticket_id": "%s", "vm_id": "v", "count": 0}' % UUID.encode(),
            "$.count",
            "Expected `int` >= 1",
        ),
        (
            b'{"ticket_id": "%s", "vm_id": "v", "count": "3"}' % UUID.encode(),
            "$.count",
            "Expected `int`, got `str`",
        ),
        (
            b'{"ticket_id": "%s", "vm_id": "v", "count": null}' % UUID.encode(),
            "$.count",
            "Expected `int`, got `null`",
        ),
        (
            b'{"ticket_id": "%s", "vm_id": "v", "extra": 1}' % UUID.encode(),
            "$",
            "Object contains unknown field `extra`",
        ),
        (b'{"vm_id": "v"}', "$", "Object missing required field `ticket_id`"),
        (b"[1, 2]", "$", "Expected `object`, got `array`"),
        (b'"x"', "$", "Expected `object`, got `str`"),
    ],
)
def test_invalid_arguments_pass_msgspec_messages_through(
    body: bytes, path: str, message: str
) -> None:
    error = error_of(CLAIM, body)
    assert error.details == [{"path": path, "message": message}]
    assert error.status == 400
    assert error.code == "invalid_args"
    at = f" - at `{path}`" if path != "$" else ""
    assert error.message == f"Invalid arguments: {message}{at}"


@pytest.mark.parametrize("body", [b"{", b'{"ticket_id": tru}', b"\xff", b"nul"])
def test_malformed_json_is_invalid_json(body: bytes) -> None:
    struct = compile_args("t.f", CLAIM)
    with pytest.raises(InvalidJSON) as info:
        decode_args(make_decoder(struct), body)
    assert info.value.code == "invalid_json"
    assert info.value.message.startswith("The request body is not valid JSON: ")


def test_empty_body_means_no_arguments() -> None:
    assert call({"type": "object", "properties": {}}, b"") == {}
    assert error_of(CLAIM, b"").details == [
        {"path": "$", "message": "Object missing required field `ticket_id`"}
    ]


def test_validation_details() -> None:
    def details(message: str) -> list[dict[str, str]]:
        return validation_details(msgspec.ValidationError(message))

    assert details("Expected `int`, got `str` - at `$.count`") == [
        {"path": "$.count", "message": "Expected `int`, got `str`"}
    ]
    assert details("Expected `int`, got `str` - at `$.items[2].n`") == [
        {"path": "$.items[2].n", "message": "Expected `int`, got `str`"}
    ]
    assert details("Object missing required field `x`") == [
        {"path": "$", "message": "Object missing required field `x`"}
    ]


def test_additional_properties() -> None:
    open_schema = dict(CLAIM, additionalProperties=True)
    body = b'{"ticket_id": "%s", "vm_id": "v", "extra": 1}' % UUID.encode()
    assert call(open_schema, body) == {"ticket_id": UUID, "vm_id": "v"}  # accepted, not passed
    absent = {k: v for k, v in CLAIM.items() if k != "additionalProperties"}
    assert error_of(absent, body).details == [
        {"path": "$", "message": "Object contains unknown field `extra`"}
    ]


def test_defaults_fill_absent_arguments() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mode": {"enum": ["a", "b"], "default": "b"},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["x"]},
            "since": {"type": "string", "format": "date-time", "default": "2024-01-01T00:00:00Z"},
        },
    }
    first = call(schema, b"{}")
    assert first == {
        "mode": "b",
        "tags": ["x"],
        "since": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    }
    first["tags"].append("mutated")
    assert call(schema, b"{}")["tags"] == ["x"]
    assert call(schema, b'{"mode": "a"}')["mode"] == "a"


def test_formats() -> None:
    schema = obj(
        at={"type": "string", "format": "date-time"},
        day={"type": "string", "format": "date"},
        mail={"type": "string", "format": "email"},
    )
    kwargs = call(
        schema, b'{"at": "2024-05-01T10:00:00+02:00", "day": "2024-05-01", "mail": "a@b.io"}'
    )
    assert kwargs["at"] == datetime.datetime(
        2024, 5, 1, 10, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert kwargs["day"] == datetime.date(2024, 5, 1)
    assert kwargs["mail"] == "a@b.io"
    naive = b'{"at": "2024-05-01T10:00:00", "day": "2024-05-01", "mail": "a@b.io"}'
    assert error_of(schema, naive).details == [
        {"path": "$.at", "message": "Expected `datetime` with a timezone component"}
    ]
    bad_mail = b'{"at": "2024-05-01T10:00:00Z", "day": "2024-05-01", "mail": "nope"}'
    assert error_of(schema, bad_mail).details == [
        {"path": "$.mail", "message": f"Expected `str` matching regex {EMAIL_PATTERN!r}"}
    ]


def test_numbers_strings_and_arrays() -> None:
    schema = obj(
        ratio={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        n={"type": "integer", "minimum": 0.5, "maximum": 9.5, "multipleOf": 2},
        code={"type": "string", "pattern": "^[A-Z]{3}$", "minLength": 3},
        ids={"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
        flag={"type": "boolean"},
    )
    ok = b'{"ratio": 0.5, "n": 2, "code": "ABC", "ids": [1], "flag": true}'
    assert call(schema, ok) == {"ratio": 0.5, "n": 2, "code": "ABC", "ids": [1], "flag": True}
    cases = [
        (
            b'{"ratio": 1, "n": 2, "code": "ABC", "ids": [1], "flag": true}',
            "$.ratio",
            "Expected `float` < 1.0",
        ),
        (
            b'{"ratio": 0.5, "n": 10, "code": "ABC", "ids": [1], "flag": true}',
            "$.n",
            "Expected `int` <= 9",
        ),
        (
            b'{"ratio": 0.5, "n": 3, "code": "ABC", "ids": [1], "flag": true}',
            "$.n",
            "Expected `int` that's a multiple of 2",
        ),
        (
            b'{"ratio": 0.5, "n": 2, "code": "abc", "ids": [1], "flag": true}',
            "$.code",
            "Expected `str` matching regex '^[A-Z]{3}$'",
        ),
        (
            b'{"ratio": 0.5, "n": 2, "code": "ABC", "ids": [], "flag": true}',
            "$.ids",
            "Expected `array` of length >= 1",
        ),
        (
            b'{"ratio": 0.5, "n": 2, "code": "ABC", "ids": [1, "x"], "flag": true}',
            "$.ids[1]",
            "Expected `int`, got `str`",
        ),
        (
            b'{"ratio": 0.5, "n": 2, "code": "ABC", "ids": [1], "flag": 1}',
            "$.flag",
            "Expected `bool`, got `int`",
        ),
    ]
    for body, path, message in cases:
        assert error_of(schema, body).details == [{"path": path, "message": message}]


def test_nullable_union_and_any() -> None:
    schema = obj(
        note={"type": ["string", "null"], "maxLength": 3},
        either={"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
        level={"enum": ["low", 1, None]},
        anything={},
    )
    body = b'{"note": null, "either": "ab", "level": null, "anything": {"x": [1]}}'
    assert call(schema, body) == {
        "note": None,
        "either": "ab",
        "level": None,
        "anything": {"x": [1]},
    }
    assert call(schema, b'{"note": "abc", "either": 5, "level": 1, "anything": 2}')["either"] == 5
    assert error_of(
        schema, b'{"note": "abcd", "either": 1, "level": 1, "anything": 1}'
    ).details == [{"path": "$.note", "message": "Expected `str` of length <= 3"}]
    assert error_of(
        schema, b'{"note": null, "either": 1.5, "level": 1, "anything": 1}'
    ).details == [{"path": "$.either", "message": "Expected `int | str`, got `float`"}]


def test_nested_objects_reach_app_code_as_dicts() -> None:
    schema = obj(
        agent={
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "Content-Type": {"type": "string"},
                "vm": {"type": "string", "format": "uuid"},
            },
            "required": ["name"],
        },
        steps={
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
            },
        },
        labels={"type": "object", "additionalProperties": {"type": "integer"}},
    )
    body = (
        b'{"agent": {"name": "a", "Content-Type": "x", "vm": "%s"}, "steps": [{"n": 1}], '
        b'"labels": {"p": 1}}' % UUID.encode()
    )
    assert call(schema, body) == {
        "agent": {"name": "a", "Content-Type": "x", "vm": UUID},
        "steps": [{"n": 1}],
        "labels": {"p": 1},
    }
    cases = [
        (
            b'{"agent": {}, "steps": [], "labels": {}}',
            "$.agent",
            "Object missing required field `name`",
        ),
        (
            b'{"agent": {"name": "a", "x": 1}, "steps": [], "labels": {}}',
            "$.agent",
            "Object contains unknown field `x`",
        ),
        (
            b'{"agent": {"name": "a"}, "steps": [{"n": "1"}], "labels": {}}',
            "$.steps[0].n",
            "Expected `int`, got `str`",
        ),
        (
            b'{"agent": {"name": "a"}, "steps": [], "labels": {"p": "1"}}',
            "$.labels[...]",
            "Expected `int`, got `str`",
        ),
    ]
    for bad, path, message in cases:
        assert error_of(schema, bad).details == [{"path": path, "message": message}]


def test_kwargs_converter_is_asdict_only_for_plain_structs() -> None:
    plain = compile_args("t.f", obj(a={"type": "string"}, b={"type": "integer"}))
    assert kwargs_converter(plain) is msgspec.structs.asdict
    for schema in (
        CLAIM,
        obj(n={"type": "object", "properties": {}}),
        {"type": "object", "properties": {"a": {"type": "string"}}},
    ):
        struct = compile_args("t.f", schema)
        assert kwargs_converter(struct) is struct_to_kwargs


def test_convert_args_accepts_python_values() -> None:
    struct = compile_args("t.f", CLAIM)
    value = convert_args(struct, {"ticket_id": uuid.UUID(UUID), "vm_id": "v"})
    assert struct_to_kwargs(value) == {"ticket_id": UUID, "vm_id": "v"}
    with pytest.raises(InvalidArgs) as info:
        convert_args(struct, {"ticket_id": UUID, "vm_id": 1})
    assert info.value.details == [{"path": "$.vm_id", "message": "Expected `str`, got `int`"}]


# -- what cannot be compiled --------------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "problem"),
    [
        ({"not": {"type": "string"}}, "properties.p: unsupported JSON Schema keyword 'not'"),
        ({"type": "string", "if": {}}, "properties.p: unsupported JSON Schema keyword 'if'"),
        (
            {"type": "object", "patternProperties": {}},
            "properties.p: unsupported JSON Schema keyword 'patternProperties'",
        ),
        (
            {"type": "object", "dependentRequired": {}},
            "properties.p: unsupported JSON Schema keyword 'dependentRequired'",
        ),
        (
            {"type": "array", "uniqueItems": True},
            "properties.p: unsupported JSON Schema keyword 'uniqueItems'",
        ),
        ({"allOf": [{"type": "string"}]}, "properties.p: unsupported JSON Schema keyword 'allOf'"),
        ({"$ref": "#/$defs/x"}, "properties.p: unsupported JSON Schema keyword '$ref'"),
        (
            {"type": "array", "items": {"type": "string", "maxLenght": 3}},
            "properties.p.items: unsupported JSON Schema keyword 'maxLenght'",
        ),
        ({"maxLength": 3}, 'properties.p: keyword \'maxLength\' needs "type": "string"'),
        (
            {"type": "integer", "maxLength": 3},
            "properties.p: keyword 'maxLength' does not apply to type 'integer'",
        ),
        (
            {"type": "string", "format": "uuid", "pattern": "^a"},
            "properties.p: pattern cannot be combined with format 'uuid'",
        ),
        (
            {"type": "string", "pattern": "("},
            "properties.p.pattern: invalid regular expression: missing ), unterminated "
            "subpattern at position 0",
        ),
        (
            {"enum": ["a"], "maxLength": 3},
            "properties.p: keyword 'maxLength' cannot be combined with 'enum'",
        ),
        (
            {"enum": [True]},
            "properties.p.enum[0]: enum values must be strings, integers or null, not True",
        ),
        (
            {"type": "string", "enum": ["a", 1]},
            "properties.p.enum[1]: 1 does not match \"type\": 'string'",
        ),
        (
            {"anyOf": [{"type": "object", "properties": {}}, {"type": "object", "properties": {}}]},
            "properties.p: cannot be compiled to a msgspec type: ",
        ),
        (
            {"anyOf": [{"type": "string"}, {"type": "string", "format": "uuid"}]},
            "properties.p: cannot be compiled to a msgspec type: Type unions may not contain more "
            "than one str-like type",
        ),
        (
            {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "properties.p.additionalProperties: a schema for additionalProperties cannot be "
            "combined with 'properties'",
        ),
        (
            {"type": "object", "properties": {"a": {}}, "required": ["b"]},
            "properties.p.required[0]: 'b' is not in properties",
        ),
        (
            {"type": "integer", "default": "x"},
            "properties.p.default: default 'x' is invalid: Expected `int`, got `str`",
        ),
    ],
)
def test_uncompilable_keywords_are_load_errors_naming_keyword_and_path(
    prop: dict[str, Any], problem: str
) -> None:
    (found,) = load_problems({"type": "object", "properties": {"p": prop}})
    assert found.startswith("functions.t.f.args." + problem)


def test_every_bad_property_is_reported() -> None:
    problems = load_problems(
        {
            "type": "object",
            "properties": {"a": {"not": {}}, "b": {"type": "string"}, "c": {"type": "nope"}},
        }
    )
    assert problems == [
        "functions.t.f.args.properties.a: unsupported JSON Schema keyword 'not'",
        "functions.t.f.args.properties.c.type: unknown type 'nope'",
    ]


def test_argument_names_must_be_python_keyword_arguments() -> None:
    assert load_problems(obj(**{"class": {}, "ctx": {}, "ok": {}})) == [
        "functions.t.f.args.properties.class: 'class' cannot be a Python keyword argument",
        "functions.t.f.args.properties.ctx: 'ctx' cannot be a Python keyword argument",
    ]


def test_args_must_be_an_object_schema() -> None:
    assert load_problems({"type": "array"}) == [
        'functions.t.f.args: function arguments must be an object schema ({"type": "object"})'
    ]


# -- table documents ----------------------------------------------------------------------

TICKETS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 10},
        "state": {"enum": ["draft", "pending"]},
        "priority": {"type": "integer", "default": 0},
        "project_id": {"type": "string", "format": "uuid"},
        "depends_on": {"type": "array", "items": {"type": "string", "format": "uuid"}},
        "lease": {"type": "string", "format": "date-time"},
        "outputs": {},
        "meta": {"type": "object", "properties": {"by": {"type": "string", "format": "uuid"}}},
    },
    "required": ["title", "state", "priority"],
}


def doc_error(doc: Any, partial: bool = False) -> InvalidDocument:
    with pytest.raises(InvalidDocument) as info:
        compile_table("tickets", TICKETS).validate_document(doc, partial=partial)
    return info.value


def test_document_values_are_ready_for_psycopg() -> None:
    validator = compile_table("tickets", TICKETS)
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    out = validator.validate_document(
        {
            "title": "t",
            "state": "draft",
            "project_id": UUID,
            "depends_on": [UUID],
            "lease": "2024-01-01T00:00:00Z",
            "outputs": {"at": when, "id": uuid.UUID(UUID)},
            "meta": {"by": UUID},
        },
        partial=False,
    )
    assert out == {
        "title": "t",
        "state": "draft",
        "project_id": uuid.UUID(UUID),
        "depends_on": [uuid.UUID(UUID)],
        "lease": when,
        "outputs": {"at": "2024-01-01T00:00:00Z", "id": UUID},  # jsonb: JSON values only
        "meta": {"by": UUID},
    }
    # objects are accepted as well as strings; required with a default may be omitted
    assert validator.validate_document(
        {"title": "t", "state": "draft", "project_id": uuid.UUID(UUID), "lease": when},
        partial=False,
    ) == {"title": "t", "state": "draft", "project_id": uuid.UUID(UUID), "lease": when}


def test_patch_and_nulls() -> None:
    validator = compile_table("tickets", TICKETS)
    assert validator.validate_document({"state": "pending"}, partial=True) == {"state": "pending"}
    assert validator.validate_document({"project_id": None}, partial=True) == {"project_id": None}
    error = doc_error({"title": None}, partial=True)
    assert error.message == (
        "Invalid value for column 'title' of table 'tickets': Expected `str`, got `null`"
    )


@pytest.mark.parametrize(
    ("doc", "partial", "message", "details"),
    [
        (
            {"title": "t", "state": "done"},
            False,
            "Invalid value for column 'state' of table 'tickets': Invalid enum value 'done' "
            "(expected one of 'draft', 'pending')",
            [{"path": "$.state", "message": "Invalid enum value 'done'"}],
        ),
        (
            {"title": "t"},
            False,
            "Missing required column 'state' of table 'tickets'",
            [{"path": "$", "message": "Object missing required field `state`"}],
        ),
        (
            {"_id": UUID},
            True,
            "Column '_id' of table 'tickets' is managed by the runtime and cannot be written",
            [{"path": "$", "message": "Object contains unknown field `_id`"}],
        ),
        (
            {"_creation_time": "2024-01-01T00:00:00Z"},
            True,
            "Column '_creation_time' of table 'tickets' is managed by the runtime and cannot be "
            "written",
            [{"path": "$", "message": "Object contains unknown field `_creation_time`"}],
        ),
        (
            {"colour": "red"},
            True,
            "Unknown column 'colour' for table 'tickets'",
            [{"path": "$", "message": "Object contains unknown field `colour`"}],
        ),
        (
            {"depends_on": [UUID, "nope"]},
            True,
            "Invalid value for column 'depends_on' of table 'tickets': Invalid UUID",
            [{"path": "$.depends_on[1]", "message": "Invalid UUID"}],
        ),
        (
            {"priority": 2**63},
            True,
            "Invalid value for column 'priority' of table 'tickets': Expected `int` <= "
            "9223372036854775807",
            [{"path": "$.priority", "message": "Expected `int` <= 9223372036854775807"}],
        ),
        (
            {"lease": "2024-01-01T00:00:00"},
            True,
            "Invalid value for column 'lease' of table 'tickets': Expected `datetime` with a "
            "timezone component",
            [{"path": "$.lease", "message": "Expected `datetime` with a timezone component"}],
        ),
        (
            {"outputs": {"x": object}},
            True,
            "Invalid value for column 'outputs' of table 'tickets': Encoding objects of type "
            "type is unsupported",
            [{"path": "$.outputs", "message": "Encoding objects of type type is unsupported"}],
        ),
        (
            ["title"],
            True,
            "Invalid document for table 'tickets': Expected `object`, got `array`",
            [{"path": "$", "message": "Expected `object`, got `array`"}],
        ),
    ],
)
def test_invalid_documents_name_the_column(
    doc: Any, partial: bool, message: str, details: list[dict[str, str]]
) -> None:
    error = doc_error(doc, partial)
    assert (error.message, error.details) == (message, details)
    assert error.code == "invalid_document"


def test_table_compile_problems_are_all_reported() -> None:
    with pytest.raises(LoadError) as info:
        compile_table(
            "t", {"properties": {"a": {"not": {}}, "b": {"type": "integer", "default": 1.5}}}
        )
    assert info.value.problems == [
        "tables.t.properties.a: unsupported JSON Schema keyword 'not'",
        "tables.t.properties.b.default: default 1.5 is invalid: Expected `int`, got `float`",
    ]


def test_benchmark_runs() -> None:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_validation.py"
    spec = importlib.util.spec_from_file_location("bench_validation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.bench_validation(200)
    assert set(result) == {
        "msgspec_ns",
        "jsonschema_ns",
        "jsonschema_formats_ns",
        "ratio",
        "ratio_formats",
    }
    assert result["ratio"] > 1
