"""Inline `{"$ref": "#/$defs/<name>"}` references to schema.json's top-level `$defs`.

References are resolved once, at load time, by copying the definition in place; everything
downstream (compiler, table model, `GET /fn`) sees plain schemas. Keywords next to a `$ref` are
merged into the copy (2020-12 treats them as `allOf`); a sibling that contradicts the
definition, an unknown name and a circular reference are load problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.schema.paths import Path, problem

REF_PREFIX = "#/$defs/"

# Keywords whose values are schemas (walked), by shape.
SCHEMA_VALUED = ("items", "additionalProperties")
SCHEMA_MAPS = ("properties",)
SCHEMA_LISTS = ("anyOf", "oneOf")
# Keywords next to a `$ref` that may override the definition's value.
OVERRIDABLE = frozenset({"description", "title", "examples", "default", "$comment", "deprecated"})


def inline_refs(
    schema: Any,
    defs: Mapping[str, Any],
    path: Path,
    problems: list[str],
    _stack: tuple[str, ...] = (),
) -> Any:
    """Return a copy of `schema` with every `$ref` replaced by its definition.

    Problems are appended to `problems` (the loader reports them all at once); the
    offending node is returned unresolved.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in SCHEMA_VALUED:
            out[key] = inline_refs(value, defs, (*path, key), problems, _stack)
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {
                name: inline_refs(sub, defs, (*path, key, name), problems, _stack)
                for name, sub in value.items()
            }
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [
                inline_refs(sub, defs, (*path, key, i), problems, _stack)
                for i, sub in enumerate(value)
            ]
        else:
            out[key] = value
    ref = out.get("$ref")
    if not isinstance(ref, str):
        return out
    name = ref.removeprefix(REF_PREFIX)
    if not ref.startswith(REF_PREFIX) or name not in defs:
        known = ", ".join(sorted(defs)) or "none"
        problems.append(problem((*path, "$ref"), f"unknown reference {ref!r} (defined: {known})"))
        return out
    if name in _stack:
        cycle = " -> ".join((*_stack, name))
        problems.append(problem((*path, "$ref"), f"circular reference {cycle} is not supported"))
        return out
    target = inline_refs(defs[name], defs, ("$defs", name), problems, (*_stack, name))
    if not isinstance(target, dict):
        target = {} if target is True else {"not": {}}
    merged = dict(target)
    for key, value in out.items():
        if key == "$ref":
            continue
        overridable = key in OVERRIDABLE or key.startswith("x-")
        if key in merged and merged[key] != value and not overridable:
            problems.append(
                problem(
                    (*path, key),
                    f"conflicts with {key!r} of {ref!r}; a keyword next to $ref must not "
                    "contradict the definition",
                )
            )
            continue
        merged[key] = value
    return merged
