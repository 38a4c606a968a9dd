"""An app for the plugin tests: the repo's own plugins and schema.json tables, copied into
`app_files`, plus a small `probe` module that reports who called.

Only the plugins under test are copied; schema.json's tables are kept whole and its
`functions` replaced by the test's own entries, so other app modules being edited elsewhere
cannot break these tests. `module_server` runs one live server for a whole test module.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import REPO, AppFiles, LiveServer, fresh_database

PROBE = """
from runtime import mutation, query


@query
async def whoami(ctx):
    a = ctx.auth
    return {"user_id": a.user_id, "tenant_id": a.tenant_id, "roles": list(a.roles),
            "kind": a.kind, "key_id": a.key_id,
            "permissions": None if a.permissions is None else sorted(a.permissions)}


@mutation(permission="tickets:claim")
async def claim(ctx):
    return "claimed"


@query(permission="users:admin")
async def admin_only(ctx):
    return "admin"


@query(public=True)
async def ping(ctx):
    return "pong"
"""

PROBE_FUNCTIONS: dict[str, Any] = {
    f"probe.{name}": {"args": {"type": "object"}}
    for name in ("whoami", "claim", "admin_only", "ping")
}

CLI = str(Path(sys.executable).with_name("swarm-runtime"))  # the real entry point
JWT_SECRET = "test-secret-" + "x" * 40  # 52 bytes: above HS256's 32-byte minimum


def repo_tables() -> dict[str, Any]:
    tables: dict[str, Any] = json.loads((REPO / "schema.json").read_text())["tables"]
    return tables


def repo_function_entry(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads((REPO / "schema.json").read_text())["functions"][name]
    return entry


def install(
    files: AppFiles,
    plugins: tuple[str, ...],
    *,
    functions: dict[str, Any] | None = None,
    modules: dict[str, str] | None = None,
    repo_modules: tuple[str, ...] = (),
    tables: dict[str, Any] | None = None,
) -> AppFiles:
    """Copy `plugins/<name>.py` and `app_functions/<name>.py` from the repo, write the probe
    module (and `modules`), and a schema.json with the repo's tables and `functions`."""
    for name in plugins:
        shutil.copy(REPO / "plugins" / f"{name}.py", files.plugins / f"{name}.py")
    for name in repo_modules:
        shutil.copy(REPO / "app_functions" / f"{name}.py", files.functions / f"{name}.py")
    files.write_module("probe", PROBE)
    for name, source in (modules or {}).items():
        files.write_module(name, source)
    all_functions = dict(PROBE_FUNCTIONS)
    all_functions.update(functions or {})
    files.write_schema(
        {"tables": repo_tables() if tables is None else tables, "functions": all_functions}
    )
    return files


@contextmanager
def module_server(
    pg_server: str, template_db: str, files: AppFiles, **overrides: Any
) -> Iterator[LiveServer]:
    """A live server with its own fresh database, for a module-scoped fixture."""
    with fresh_database(pg_server, template_db) as url:
        server = LiveServer(files.settings(**overrides), url).start()
        try:
            yield server
        finally:
            server.stop()


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `swarm-runtime` subprocesses: this one's, without DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(extra)
    return env
