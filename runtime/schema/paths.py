"""JSON paths in load-time messages: `functions.tickets.claim.args.properties.vm_id`.

Load errors name the place in schema.json in the dotted form of DESIGN §4: object keys joined
with `.`, array positions as `[i]`; the document itself is `(root)`.
"""

from __future__ import annotations

from collections.abc import Iterable

Path = tuple[str | int, ...]

ROOT = "(root)"


def dotted(path: Iterable[str | int]) -> str:
    """`("tables", "tickets", "required", 0)` -> `tables.tickets.required[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or ROOT


def problem(path: Iterable[str | int], message: str) -> str:
    """One load problem: `<dotted path>: <message>`."""
    return f"{dotted(path)}: {message}"
