"""`swarm-runtime check` lists every problem and exits non-zero (run as the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import AppFiles

GOOD = """
from runtime import mutation

@mutation
async def add(ctx, text: str):
    return text
"""
GOOD_SCHEMA = {
    "tables": {},
    "functions": {
        "notes.add": {
            "args": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            }
        }
    },
}


def check(files: AppFiles) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "check",
            "--functions",
            str(files.functions),
            "--schema",
            str(files.schema_path),
            "--plugins",
            str(files.plugins),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_passes_a_good_app(app_files: AppFiles) -> None:
    app_files.write_module("notes", GOOD)
    app_files.write_schema(GOOD_SCHEMA)
    result = check(app_files)
    assert result.returncode == 0, result.stderr
    assert "ok: 1 functions" in result.stdout


def test_check_lists_every_problem(app_files: AppFiles) -> None:
    app_files.write_module(
        "notes",
        GOOD
        + """
@mutation
async def no_schema(ctx):
    pass

@mutation
async def mismatch(ctx, title: str, extra: int):
    pass

@mutation
def sync_one(ctx):
    pass
""",
    )
    schema: dict[str, Any] = json.loads(json.dumps(GOOD_SCHEMA))
    schema["functions"]["notes.mismatch"] = {
        "args": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "other": {"type": "string"}},
            "required": ["title"],
        }
    }
    schema["functions"]["notes.sync_one"] = {"args": {"type": "object"}}
    app_files.write_schema(schema)
    result = check(app_files)
    assert result.returncode == 1
    err = result.stderr
    assert "notes.no_schema" in err and "no entry in schema.json functions.notes.no_schema" in err
    assert "argument 'extra' is not in schema.json functions.notes.mismatch.args.properties" in err
    assert "functions.notes.mismatch.args.properties.other has no matching argument" in err
    assert "notes.sync_one" in err and "must be `async def`" in err


def test_check_reports_schema_errors_with_json_paths(app_files: AppFiles) -> None:
    app_files.write_module("notes", GOOD)
    schema: dict[str, Any] = json.loads(json.dumps(GOOD_SCHEMA))
    schema["functions"]["notes.add"]["args"]["properties"]["text"] = {"type": "strin"}
    schema["tables"]["bad"] = {
        "type": "object",
        "properties": {"x": {"type": "string"}},
        "indexes": {"by_y": ["y"]},
    }
    app_files.write_schema(schema)
    result = check(app_files)
    assert result.returncode == 1
    assert "functions.notes.add.args.properties.text" in result.stderr
    assert "tables.bad.indexes.by_y" in result.stderr


def test_check_refuses_unsupported_keyword(app_files: AppFiles) -> None:
    app_files.write_module("notes", GOOD)
    schema: dict[str, Any] = json.loads(json.dumps(GOOD_SCHEMA))
    schema["functions"]["notes.add"]["args"]["properties"]["text"] = {
        "type": "string",
        "not": {"const": "x"},
    }
    app_files.write_schema(schema)
    result = check(app_files)
    assert result.returncode == 1
    assert "not" in result.stderr and "functions.notes.add.args.properties.text" in result.stderr


def test_check_reports_syntax_error_with_file_and_line(app_files: AppFiles) -> None:
    app_files.write_module("notes", GOOD + "\ndef broken(:\n")
    app_files.write_schema(GOOD_SCHEMA)
    result = check(app_files)
    assert result.returncode == 1
    assert "notes.py:8" in result.stderr and "SyntaxError" in result.stderr


def test_check_reports_invalid_json(app_files: AppFiles) -> None:
    app_files.write_module("notes", GOOD)
    app_files.schema_path.write_text('{"tables": {}, "functions": {,}}')
    result = check(app_files)
    assert result.returncode == 1
    assert "line 1" in result.stderr
