"""Which tables a call read and wrote: what decides which subscriptions a commit touches.

`ctx.db` records exactly: `get` and `query` read their table; `insert`, `patch`, `replace`
and `delete` write it. Raw `ctx.sql` is read with two small regular expressions, after
string literals and comments are blanked out:

- reads: every identifier of the statement that names a schema table. That is a superset of
  the tables after FROM/JOIN, so comma joins, `USING`, sub-queries and CTEs are never missed;
  a column that happens to share a table's name only costs a spurious re-run.
- writes: the table after INSERT INTO, UPDATE, DELETE FROM, MERGE INTO or TRUNCATE (row locks
  `FOR UPDATE` and `ON CONFLICT DO UPDATE` are not writes of their own).

When a statement names no schema table at all (a view, a function, a table schema.json does
not declare) or writes a table that is not a schema table, the call counts as reading (and,
in a mutation, writing) *any* table: a subscription re-runs too often, never too rarely.
What a trigger or a SQL function writes behind a statement's back cannot be seen here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

ANY = "*"  # the notification payload meaning "any table may have changed"
MAX_PAYLOAD = 7000  # pg_notify payloads must stay under 8000 bytes

_NOISE = re.compile(
    r"""
      [eE]'(?:[^'\\]|\\.|'')*'      # E'...' string with backslash escapes
    | '(?:[^']|'')*'                # '...' string
    | --[^\n]*                      # line comment
    | /\*.*?\*/                     # block comment
    """,
    re.VERBOSE | re.DOTALL,
)
_NOT_WRITES = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?UPDATE\b|\bDO\s+UPDATE\b", re.IGNORECASE)
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_WORD = re.compile(_IDENT)
_WRITE = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE)\b", re.IGNORECASE)
_TARGET = re.compile(
    r"\b(?:INSERT\s+INTO|MERGE\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)"
    rf"(?:\s+ONLY)?\s+((?:{_IDENT}\s*\.\s*)?{_IDENT})",
    re.IGNORECASE,
)


def _name(token: str) -> str:
    """An identifier as PostgreSQL sees it: quoted ones verbatim, others folded to lower case."""
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


@dataclass(frozen=True, slots=True)
class SqlTables:
    """What one SQL text may touch, before it is intersected with the schema's tables."""

    names: frozenset[str]  # every identifier: the candidate table names
    written: frozenset[str]  # the tables after INSERT INTO / UPDATE / DELETE FROM / ...
    writes: bool  # the statement contains a write at all


@lru_cache(maxsize=4096)
def parse_sql(text: str) -> SqlTables:
    """The candidate tables of a SQL text (cached: app code repeats the same texts)."""
    code = _NOT_WRITES.sub(" ", _NOISE.sub(" ", text))
    names = frozenset(_name(w) for w in _WORD.findall(code))
    written = frozenset(_name(re.split(r"\s*\.\s*", t)[-1]) for t in _TARGET.findall(code))
    return SqlTables(names, written, _WRITE.search(code) is not None)


def sql_tables(text: str, known: Mapping[str, object]) -> tuple[set[str] | None, set[str] | None]:
    """(tables read, tables written) by `text` among `known`; None means any table."""
    parsed = parse_sql(text)
    read = known.keys() & parsed.names
    if not read:
        return None, None
    if not parsed.writes:
        return read, set()
    written = known.keys() & parsed.written
    if not written or written != parsed.written:
        return read, None
    return read, written


class TableAccess:
    """The tables one transaction attempt read and wrote (reset at each attempt)."""

    __slots__ = ("known", "read_any", "reads", "write_any", "writes")

    def __init__(self, known: Mapping[str, object] | None = None) -> None:
        self.known: Mapping[str, object] = known if known is not None else {}
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.read_any = False
        self.write_any = False

    def reset(self, known: Mapping[str, object]) -> None:
        """Start over for a new attempt: a retried attempt records its own tables."""
        self.known = known
        self.reads.clear()
        self.writes.clear()
        self.read_any = self.write_any = False

    def sql(self, text: str, read_only: bool) -> None:
        """Record what a raw `ctx.sql` statement may read and write."""
        read, written = sql_tables(text, self.known)
        if read is None:
            self.read_any = True
        else:
            self.reads |= read
        if read_only:
            return
        if written is None:
            self.write_any = True
        else:
            self.writes |= written

    def read_set(self) -> frozenset[str] | None:
        """The tables read, or None when the call may have read any table."""
        return None if self.read_any else frozenset(self.reads)

    def changes(self) -> str | None:
        """The notification payload for what was written: `a,b`, `*` (any), or None."""
        if self.write_any:
            return ANY
        if not self.writes:
            return None
        payload = ",".join(sorted(self.writes))
        return payload if len(payload) <= MAX_PAYLOAD else ANY


def parse_changes(payload: str) -> frozenset[str] | None:
    """The tables a notification names, or None for any table."""
    if not payload or payload == ANY:
        return None
    return frozenset(payload.split(","))
