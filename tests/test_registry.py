"""Loading app modules: fresh code on every load, never stale bytecode."""

from __future__ import annotations

import asyncio
import os
import py_compile
from pathlib import Path

from runtime.registry import build_registry
from tests.conftest import AppFiles

MODULE = """
from runtime import query

@query(public=True)
async def marker(ctx):
    return "{value}"
"""
SCHEMA = {"tables": {}, "functions": {"probe.marker": {"args": {"type": "object"}}}}


def marker(files: AppFiles, generation: int) -> str:
    registry = build_registry(files.functions, files.schema_path, generation)
    result: str = asyncio.run(registry.functions["probe.marker"].fn(None))
    return result


def test_same_size_save_in_the_same_second_is_not_served_from_stale_bytecode(
    app_files: AppFiles,
) -> None:
    app_files.write_schema(SCHEMA)
    path: Path = app_files.write_module("probe", MODULE.format(value="AAAA"))
    stamp = os.stat(path).st_mtime
    # a .pyc of the first version, as a normal import would have written it
    py_compile.compile(str(path), doraise=True)
    assert marker(app_files, 1) == "AAAA"
    path.write_text(MODULE.format(value="BBBB"))  # same size...
    os.utime(path, (stamp, stamp))  # ...and the same mtime: the .pyc header still matches
    assert marker(app_files, 2) == "BBBB"


def test_unchanged_schema_is_reused_between_loads(app_files: AppFiles) -> None:
    app_files.write_schema(SCHEMA)
    app_files.write_module("probe", MODULE.format(value="x"))
    first = build_registry(app_files.functions, app_files.schema_path, 1)
    second = build_registry(app_files.functions, app_files.schema_path, 2, previous=first)
    assert second.schema is first.schema
    app_files.write_schema({**SCHEMA, "tables": {"t": {"type": "object", "properties": {}}}})
    third = build_registry(app_files.functions, app_files.schema_path, 3, previous=second)
    assert third.schema is not second.schema and "t" in third.tables
