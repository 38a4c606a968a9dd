"""Argument validation: compiled msgspec types vs jsonschema, per call, on the same schema.

    python -m benchmarks.bench_validation [N]

Both sides start from the request body (bytes) and end with validated Python values:

- msgspec: `decode_args(decoder, body)` + the function's kwargs converter (what the runtime
  does per call; the Struct and decoder are built once);
- jsonschema: `json.loads(body)` + `Draft202012Validator(...).validate(value)`, the validator
  built once — with and without format checking (`format: uuid` is only enforced with it).

The schema is tickets.claim-like: a uuid, a bounded string, an enum, an optional integer with
bounds, and a nested object. The goal is msgspec >= 25x faster.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import jsonschema

from benchmarks._common import per_call_ns
from runtime.schema.compiler import compile_args, decode_args, kwargs_converter, make_decoder

ARGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ticket_id": {"type": "string", "format": "uuid"},
        "vm_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "assignee_type": {"enum": ["human", "agent"]},
        "lease_seconds": {"type": "integer", "minimum": 10, "maximum": 3600},
        "agent": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "maxLength": 100},
                "version": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+"},
                "capabilities": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            },
            "required": ["name"],
        },
    },
    "required": ["ticket_id", "vm_id"],
}

BODY = json.dumps(
    {
        "ticket_id": "0b6c3a4e-3f0e-4b8e-9f7c-2d9a6a1e5b11",
        "vm_id": "vm-7f3a",
        "assignee_type": "agent",
        "lease_seconds": 600,
        "agent": {"name": "claude-worker", "version": "1.4.2", "capabilities": ["git", "py"]},
    }
).encode()


def bench_validation(n: int = 20_000) -> dict[str, float]:
    """ns per call for each approach, and how many times faster msgspec is."""
    struct = compile_args("tickets.claim", ARGS_SCHEMA)
    decoder = make_decoder(struct)
    to_kwargs = kwargs_converter(struct)
    cls = jsonschema.Draft202012Validator
    plain = cls(ARGS_SCHEMA)
    formats = cls(ARGS_SCHEMA, format_checker=cls.FORMAT_CHECKER)

    def with_msgspec() -> object:
        return to_kwargs(decode_args(decoder, BODY))

    def with_jsonschema() -> object:
        value = json.loads(BODY)
        plain.validate(value)
        return value

    def with_jsonschema_formats() -> object:
        value = json.loads(BODY)
        formats.validate(value)
        return value

    assert with_msgspec() == with_jsonschema()  # same result, same work
    fast = per_call_ns(with_msgspec, n)
    slow = per_call_ns(with_jsonschema, max(n // 20, 200))
    slower = per_call_ns(with_jsonschema_formats, max(n // 20, 200))
    return {
        "msgspec_ns": fast,
        "jsonschema_ns": slow,
        "jsonschema_formats_ns": slower,
        "ratio": slow / fast,
        "ratio_formats": slower / fast,
    }


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20_000
    result = bench_validation(n)
    print(f"msgspec decode+validate+kwargs   {result['msgspec_ns']:>10,.0f} ns/call")
    print(
        f"jsonschema json.loads+validate   {result['jsonschema_ns']:>10,.0f} ns/call"
        f"   ({result['ratio']:.0f}x slower)"
    )
    print(
        f"  ... with format checking       {result['jsonschema_formats_ns']:>10,.0f} ns/call"
        f"   ({result['ratio_formats']:.0f}x slower)"
    )
    ok = result["ratio"] >= 25
    print(f"goal msgspec >= 25x faster: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
