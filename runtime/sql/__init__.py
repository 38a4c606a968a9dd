"""The SQL the runtime itself runs, kept in `.sql` files with named sections.

A section starts with a line `-- name: <query_name>` and runs until the next one; its
comment lines are documentation and are left out of the statement:

    queries = load("runtime.sql")
    queries["advisory_lock"]
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Named sections; comment lines inside a section document it and are not sent."""
    parts = _NAME.split(text)
    return {parts[i]: _statement(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


def _statement(section: str) -> str:
    lines = [line for line in section.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


@cache
def load(filename: str) -> dict[str, str]:
    return parse(resources.files(__package__).joinpath(filename).read_text(encoding="utf-8"))
