"""Compile JSON Schema (schema.json's subset) to msgspec types, once, at load time.

Per call the runtime only runs msgspec's C decoder: `decode_args(decoder, body)` then
`to_kwargs(struct)`; jsonschema is used solely to check schema.json itself.

Mapping (keywords outside it are a `LoadError` naming keyword and path, never skipped):

- `string` -> `str` with `Meta(min_length, max_length, pattern)`; `format: uuid` ->
  `uuid.UUID` (handed to app code as its canonical lower-case `str`), `date-time` ->
  timezone-aware `datetime`, `date` -> `date`, `email` -> `str` with a simple pattern.
- `integer` -> `int`, `number` -> `float`, with `Meta(ge, le, gt, lt, multiple_of)`;
  `boolean` -> `bool`; `null` -> `None`; a type list -> a union (`["string", "null"]` ->
  `str | None`); `{}` -> `Any`.
- `enum` / `const` -> `Literal[...]` (strings, integers and null only).
- `array` -> `list[T]` (`items`, `minItems`, `maxItems`).
- `object` with `properties` -> a nested Struct; unknown fields are refused unless
  `"additionalProperties": true`. `object` without `properties` -> `dict[str, T]`
  (`T` from an `additionalProperties` schema, else `Any`).
- `anyOf` / `oneOf` -> a union; msgspec needs branches of distinct JSON types (one object-like,
  one array-like, one str-like, ...), which also makes them mutually exclusive.
- A property that is not `required` and has no `default` is *absent* when not sent
  (`msgspec.UNSET`, dropped by `to_kwargs`), so the Python default of the function applies;
  `null` is accepted only where the schema allows `"null"`. A `default` becomes the field's
  default (checked against the field's type at load time).
"""

from __future__ import annotations

import copy
import datetime
import functools
import keyword
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

import msgspec
import msgspec.inspect as mi
from msgspec import UNSET, Meta, UnsetType

from runtime.errors import InvalidArgs, InvalidJSON, LoadError
from runtime.schema.paths import Path, dotted, problem

ANNOTATIONS = frozenset(
    {
        "description",
        "title",
        "examples",
        "default",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "x-references",
    }
)
STRING_KEYWORDS = frozenset({"minLength", "maxLength", "pattern", "format"})
NUMBER_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
ARRAY_KEYWORDS = frozenset({"items", "minItems", "maxItems"})
OBJECT_KEYWORDS = frozenset(
    {"properties", "required", "additionalProperties", "minProperties", "maxProperties"}
)
SUPPORTED = (
    ANNOTATIONS
    | STRING_KEYWORDS
    | NUMBER_KEYWORDS
    | ARRAY_KEYWORDS
    | OBJECT_KEYWORDS
    | {"type", "enum", "const", "anyOf", "oneOf"}
)
KEYWORDS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": STRING_KEYWORDS,
    "integer": NUMBER_KEYWORDS,
    "number": NUMBER_KEYWORDS,
    "array": ARRAY_KEYWORDS,
    "object": OBJECT_KEYWORDS,
}

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# Values `to_kwargs` hands to app code as they are (everything else becomes JSON-ish).
KWARGS_BUILTINS: tuple[type, ...] = (datetime.datetime, datetime.date)

_NOT_GIVEN: Any = object()


def _fail(path: Path, message: str) -> LoadError:
    return LoadError([problem(path, message)])


def _check(tp: Any, path: Path) -> Any:
    """Let msgspec vet a type now (unions, Meta on the wrong type), at load time."""
    try:
        msgspec.json.Decoder(tp)
    except TypeError as exc:
        raise _fail(path, f"cannot be compiled to a msgspec type: {exc}") from exc
    return tp


def _union(members: list[Any]) -> Any:
    return Union.__getitem__(tuple(members))


def _is_extension(key: str) -> bool:
    return key.startswith("x-")


class Compiler:
    """Turns one JSON Schema node at a time into a msgspec type annotation.

    `bigint` bounds integers to PostgreSQL's bigint range unless the schema is stricter
    (table columns). `prefix` names the nested Structs it creates.
    """

    def __init__(self, prefix: str, *, bigint: bool = False) -> None:
        self.prefix = prefix
        self.bigint = bigint

    # -- entry point -------------------------------------------------------------------

    def type_of(self, schema: Any, path: Path) -> Any:
        if schema is True:
            return Any
        if not isinstance(schema, dict):
            raise _fail(path, "a schema must be an object (or true)")
        for key in schema:
            if key not in SUPPORTED and not _is_extension(key):
                raise _fail(path, f"unsupported JSON Schema keyword {key!r}")
        if "enum" in schema or "const" in schema:
            return self._literal(schema, path)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return self._any_of(schema, combinator, path)
        types = schema.get("type")
        if types is None:
            for key in schema:
                for type_name, keywords in KEYWORDS_BY_TYPE.items():
                    if key in keywords:
                        raise _fail(path, f'keyword {key!r} needs "type": "{type_name}"')
            return Any
        type_list = [types] if isinstance(types, str) else list(types)
        for key in schema:
            if key in SUPPORTED - ANNOTATIONS - {"type"} and not any(
                key in KEYWORDS_BY_TYPE.get(t, ()) for t in type_list
            ):
                raise _fail(path, f"keyword {key!r} does not apply to type {types!r}")
        members = [self._member(t, schema, path) for t in type_list]
        tp = members[0] if len(members) == 1 else _check(_union(members), path)
        return tp

    # -- one JSON type -----------------------------------------------------------------

    def _member(self, type_name: str, schema: dict[str, Any], path: Path) -> Any:
        if type_name == "string":
            return self._string(schema, path)
        if type_name == "integer":
            return self._number(int, schema, path)
        if type_name == "number":
            return self._number(float, schema, path)
        if type_name == "boolean":
            return bool
        if type_name == "null":
            return None
        if type_name == "array":
            return self._array(schema, path)
        if type_name == "object":
            return self._object(schema, path)
        raise _fail((*path, "type"), f"unknown type {type_name!r}")

    def _string(self, schema: dict[str, Any], path: Path) -> Any:
        meta: dict[str, Any] = {}
        if "minLength" in schema:
            meta["min_length"] = schema["minLength"]
        if "maxLength" in schema:
            meta["max_length"] = schema["maxLength"]
        if "pattern" in schema:
            try:
                re.compile(schema["pattern"])
            except (re.error, TypeError) as exc:
                raise _fail((*path, "pattern"), f"invalid regular expression: {exc}") from exc
            meta["pattern"] = schema["pattern"]
        fmt = schema.get("format")
        if fmt in ("uuid", "date-time", "date"):
            if meta:
                keys = ", ".join(k for k in ("minLength", "maxLength", "pattern") if k in schema)
                raise _fail(path, f"{keys} cannot be combined with format {fmt!r}")
            if fmt == "uuid":
                return uuid.UUID
            if fmt == "date":
                return datetime.date
            return _check(Annotated[datetime.datetime, Meta(tz=True)], path)
        if fmt == "email":
            if "pattern" in meta:
                raise _fail(path, "pattern cannot be combined with format 'email'")
            meta["pattern"] = EMAIL_PATTERN
        elif fmt is not None:
            raise _fail((*path, "format"), f"unsupported format {fmt!r}")
        return _check(Annotated[str, Meta(**meta)], path) if meta else str

    def _number(self, base: type, schema: dict[str, Any], path: Path) -> Any:
        meta: dict[str, Any] = {}
        integer = base is int
        for key, name in (
            ("minimum", "ge"),
            ("maximum", "le"),
            ("exclusiveMinimum", "gt"),
            ("exclusiveMaximum", "lt"),
        ):
            if key not in schema:
                continue
            value = schema[key]
            if integer and value != int(value):  # a fractional bound on an integer
                name, value = {
                    "ge": ("ge", math.ceil(value)),
                    "gt": ("ge", math.ceil(value)),
                    "le": ("le", math.floor(value)),
                    "lt": ("le", math.floor(value)),
                }[name]
            meta[name] = int(value) if integer else value
        if "multipleOf" in schema:
            meta["multiple_of"] = schema["multipleOf"]
        if integer and self.bigint:
            if "ge" not in meta and "gt" not in meta:
                meta["ge"] = BIGINT_MIN
            if "le" not in meta and "lt" not in meta:
                meta["le"] = BIGINT_MAX
        return _check(Annotated[base, Meta(**meta)], path) if meta else base

    def _array(self, schema: dict[str, Any], path: Path) -> Any:
        item = self.type_of(schema["items"], (*path, "items")) if "items" in schema else Any
        meta: dict[str, Any] = {}
        if "minItems" in schema:
            meta["min_length"] = schema["minItems"]
        if "maxItems" in schema:
            meta["max_length"] = schema["maxItems"]
        tp = list[item]  # type: ignore[valid-type]
        return _check(Annotated[tp, Meta(**meta)], path) if meta else tp

    def _object(self, schema: dict[str, Any], path: Path) -> Any:
        properties = schema.get("properties")
        additional = schema.get("additionalProperties", _NOT_GIVEN)
        if properties is None:
            if "required" in schema:
                raise _fail((*path, "required"), "'required' needs 'properties'")
            if additional is False:
                return self.struct(schema, path, self._name(path))
            value: Any = Any
            if additional is not _NOT_GIVEN:
                value = self.type_of(additional, (*path, "additionalProperties"))
            meta: dict[str, Any] = {}
            if "minProperties" in schema:
                meta["min_length"] = schema["minProperties"]
            if "maxProperties" in schema:
                meta["max_length"] = schema["maxProperties"]
            tp = dict[str, value]
            return _check(Annotated[tp, Meta(**meta)], path) if meta else tp
        for key in ("minProperties", "maxProperties"):
            if key in schema:
                raise _fail(path, f"{key!r} cannot be combined with 'properties'")
        if additional not in (_NOT_GIVEN, True, False, {}):
            raise _fail(
                (*path, "additionalProperties"),
                "a schema for additionalProperties cannot be combined with 'properties'",
            )
        return self.struct(schema, path, self._name(path))

    def _name(self, path: Path) -> str:
        return re.sub(r"\W", "_", f"{self.prefix}__{dotted(path)}")

    # -- objects as Structs ------------------------------------------------------------

    def struct(self, schema: dict[str, Any], path: Path, name: str) -> type[msgspec.Struct]:
        """A Struct for an object schema with `properties` (possibly none)."""
        properties: dict[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required", []))
        for i, field in enumerate(required):
            if field not in properties:
                raise _fail((*path, "required", i), f"{field!r} is not in properties")
        fields: list[Any] = []
        rename: dict[str, str] = {}
        problems: list[str] = []
        for i, (prop, sub) in enumerate(properties.items()):
            attr = prop if prop.isidentifier() else f"field_{i}"
            if attr != prop:
                rename[attr] = prop
            try:
                fields.append(self._field(attr, sub, prop in required, (*path, "properties", prop)))
            except LoadError as exc:  # report every property's problems, not the first
                problems += exc.problems
        if problems:
            raise LoadError(problems)
        forbid = schema.get("additionalProperties", False) not in (True, {})
        return msgspec.defstruct(
            name,
            fields,
            kw_only=True,
            forbid_unknown_fields=forbid,
            rename=rename or None,
            gc=False,
        )

    def _field(self, attr: str, sub: Any, required: bool, path: Path) -> Any:
        tp = self.type_of(sub, path)
        if required:
            return (attr, tp)
        if isinstance(sub, dict) and "default" in sub:
            return (attr, tp, self.default(tp, sub["default"], path))
        return (attr, Union[tp, UnsetType], UNSET)  # noqa: UP007

    @staticmethod
    def default(tp: Any, value: Any, path: Path) -> Any:
        """The field default for a schema `default`, converted to the field's type."""
        try:
            converted = msgspec.convert(value, tp)
        except msgspec.ValidationError as exc:
            raise _fail((*path, "default"), f"default {value!r} is invalid: {exc}") from exc
        if isinstance(converted, (list, dict, msgspec.Struct)) and (
            converted or isinstance(converted, msgspec.Struct)
        ):
            return msgspec.field(default_factory=lambda: copy.deepcopy(converted))
        return converted

    # -- enum / const / anyOf ----------------------------------------------------------

    def _literal(self, schema: dict[str, Any], path: Path) -> Any:
        keyword_ = "enum" if "enum" in schema else "const"
        values = list(schema["enum"]) if keyword_ == "enum" else [schema["const"]]
        for key in schema:
            if key not in ANNOTATIONS and key not in ("type", keyword_) and not _is_extension(key):
                raise _fail(path, f"keyword {key!r} cannot be combined with {keyword_!r}")
        types = schema.get("type")
        allowed = None if types is None else ({types} if isinstance(types, str) else set(types))
        nullable = False
        members: list[Any] = []
        for i, value in enumerate(values):
            where = (*path, keyword_, i) if keyword_ == "enum" else (*path, keyword_)
            if value is None:
                nullable, json_type = True, "null"
            elif isinstance(value, str):
                json_type = "string"
            elif isinstance(value, int) and not isinstance(value, bool):
                json_type = "integer"
            else:
                raise _fail(
                    where, f"{keyword_} values must be strings, integers or null, not {value!r}"
                )
            if (
                allowed is not None
                and json_type not in allowed
                and not (json_type == "integer" and "number" in allowed)
            ):
                raise _fail(where, f'{value!r} does not match "type": {types!r}')
            if value is not None and value not in members:
                members.append(value)
        if not members:
            return None
        tp: Any = Literal.__getitem__(tuple(members))
        return _check(Union[tp, None], path) if nullable else tp  # noqa: UP007

    def _any_of(self, schema: dict[str, Any], combinator: str, path: Path) -> Any:
        for key in schema:
            if key not in ANNOTATIONS and key != combinator and not _is_extension(key):
                raise _fail(path, f"keyword {key!r} cannot be combined with {combinator!r}")
        branches = schema[combinator]
        if not isinstance(branches, list) or not branches:
            raise _fail((*path, combinator), "must be a non-empty list of schemas")
        members = [self.type_of(b, (*path, combinator, i)) for i, b in enumerate(branches)]
        return members[0] if len(members) == 1 else _check(_union(members), path)


def compile_type(schema: Any, *, path: Path, prefix: str, bigint: bool = False) -> Any:
    """The msgspec type annotation for one schema node (a column, a `returns` schema)."""
    return Compiler(prefix, bigint=bigint).type_of(schema, path)


def compile_args(
    name: str, schema: dict[str, Any], *, path: Path | None = None
) -> type[msgspec.Struct]:
    """The Struct that validates the arguments of function `name` (an object schema).

    Argument names must be usable as Python keyword arguments (`ctx` is taken).
    Raises `LoadError` naming the keyword and JSON path of anything it cannot compile.
    """
    where: Path = path if path is not None else ("functions", name, "args")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _fail(where, 'function arguments must be an object schema ({"type": "object"})')
    problems = []
    for arg in schema.get("properties") or {}:
        if not arg.isidentifier() or keyword.iskeyword(arg) or arg == "ctx":
            problems.append(
                problem((*where, "properties", arg), f"{arg!r} cannot be a Python keyword argument")
            )
    if problems:
        raise LoadError(problems)
    ident = re.sub(r"\W", "_", name)
    compiler = Compiler(ident)
    for key in schema:
        if key not in SUPPORTED and not _is_extension(key):
            raise _fail(where, f"unsupported JSON Schema keyword {key!r}")
    for key in ("minProperties", "maxProperties"):
        if key in schema:
            raise _fail(where, f"{key!r} is not supported for function arguments")
    if schema.get("additionalProperties", False) not in (True, False, {}):
        raise _fail(
            (*where, "additionalProperties"),
            "a schema for additionalProperties is not supported for function arguments",
        )
    return compiler.struct(schema, where, f"{ident}__args")


@functools.lru_cache(maxsize=4096)
def make_decoder(struct_type: Any) -> msgspec.json.Decoder[Any]:
    """The JSON decoder for a compiled type; build it once and reuse it."""
    return msgspec.json.Decoder(struct_type)


def validation_details(exc: msgspec.ValidationError) -> list[dict[str, str]]:
    """msgspec's message split into `{path, message}`, both passed through unchanged.

    `Expected `int`, got `str` - at `$.count`` -> `[{"path": "$.count", "message":
    "Expected `int`, got `str`"}]`; a message without a location is at `$`.
    """
    message = str(exc)
    head, sep, tail = message.rpartition(" - at `")
    if sep and tail.endswith("`"):
        return [{"path": tail[:-1], "message": head}]
    return [{"path": "$", "message": message}]


def decode_args(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """Decode and validate a request body; an empty body means `{}`.

    Raises `InvalidJSON` when the body is not JSON and `InvalidArgs` (details = list of
    `{path, message}`) when it is JSON but not a matching object.
    """
    try:
        return decoder.decode(body or b"{}")
    except msgspec.ValidationError as exc:
        raise InvalidArgs(f"Invalid arguments: {exc}", validation_details(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}") from exc


def convert_args(struct_type: type[msgspec.Struct], args: Mapping[str, Any]) -> Any:
    """Validate arguments given as Python values (internal calls, the scheduler, plugins);
    raises `InvalidArgs` like `decode_args`. UUID, datetime and date objects are accepted
    where the schema says uuid / date-time / date."""
    try:
        return msgspec.convert(args, struct_type)
    except msgspec.ValidationError as exc:
        raise InvalidArgs(f"Invalid arguments: {exc}", validation_details(exc)) from exc


def struct_to_kwargs(obj: msgspec.Struct) -> dict[str, Any]:
    """Plain Python values for app code: nested objects as dicts, UUIDs as str, absent
    optional arguments left out (so the function's own defaults apply)."""
    result: dict[str, Any] = msgspec.to_builtins(obj, builtin_types=KWARGS_BUILTINS)
    return result


def _is_plain(info: mi.Type, top: bool = True) -> bool:
    """True when `asdict` alone gives what `struct_to_kwargs` gives."""
    if isinstance(info, mi.StructType):
        if not top:
            return False
        for field in info.fields:
            unset = (
                not field.required
                and field.default is msgspec.NODEFAULT
                and (field.default_factory is msgspec.NODEFAULT)
            )
            if unset or field.encode_name != field.name or not _is_plain(field.type, False):
                return False
        return True
    if isinstance(info, (mi.UUIDType, mi.DataclassType, mi.TypedDictType, mi.NamedTupleType)):
        return False
    if isinstance(info, mi.UnionType):
        return all(_is_plain(t, False) for t in info.types)
    if isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return _is_plain(info.item_type, False)
    if isinstance(info, mi.DictType):
        return _is_plain(info.value_type, False)
    return True


@functools.lru_cache(maxsize=4096)  # reloads reuse the Structs of an unchanged schema.json
def kwargs_converter(struct_type: type[msgspec.Struct]) -> Callable[[Any], dict[str, Any]]:
    """The fastest correct `struct -> kwargs` for this Struct, chosen once at load time.

    Flat Structs of plain values (no nested objects, UUIDs or absent optional fields) use
    `msgspec.structs.asdict` (~0.1 µs); others `struct_to_kwargs` (`msgspec.to_builtins`,
    ~0.3-0.45 µs for a tickets.claim-sized call).
    """
    if _is_plain(mi.type_info(struct_type)):
        return msgspec.structs.asdict
    return struct_to_kwargs
