"""The Swarm platform's own app_functions and schema.json, installed into `app_files` for
the platform tests (auth, users, hitl, design sessions, secrets, vms).

Only the modules a test needs are copied (others may be mid-edit), and schema.json's
`functions` is filtered to them; its tables are kept whole. A test-only auth plugin maps
`Authorization: Bearer test:<tenant>:<role>:<user>` to an Identity holding every permission
the loaded functions declare (role "nobody": none; role "agent": kind "api_key").
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from typing import Any

import httpx
import psycopg

from tests.conftest import REPO, AppFiles

HELPERS = ("_tenancy", "_accounts", "_tokens", "_crypto")

TEST_AUTH = """
from runtime import Identity, hookimpl


@hookimpl
async def authenticate(request, runtime):
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer test:"):
        return None
    tenant, role, user = header[len("Bearer test:"):].split(":", 2)
    every = frozenset(
        fn.permission for fn in runtime.registry.functions.values() if fn.permission
    )
    return Identity(
        user_id=user, tenant_id=tenant, roles=(role,),
        permissions=frozenset() if role == "nobody" else every,
        kind="api_key" if role == "agent" else "user",
    )
"""


def token(tenant: str = "acme", role: str = "admin", user: str = "alice") -> str:
    return f"test:{tenant}:{role}:{user}"


def install(files: AppFiles, modules: Iterable[str], plugins: Iterable[str] = ()) -> AppFiles:
    """Copy `modules` (plus the private helpers) of app_functions/ and `plugins` of plugins/."""
    copied: list[str] = []
    for name in (*HELPERS, *modules):
        source = REPO / "app_functions" / f"{name}.py"
        if source.exists():
            shutil.copy(source, files.functions / source.name)
            copied.append(name)
    (files.functions / "__init__.py").write_text("")
    schema = json.loads((REPO / "schema.json").read_text())
    schema["functions"] = {
        name: entry
        for name, entry in schema["functions"].items()
        if name.split(".", 1)[0] in copied
    }
    files.write_schema(schema)
    for name in plugins:
        shutil.copy(REPO / "plugins" / f"{name}.py", files.plugins / f"{name}.py")
    files.write_plugin("test_auth", TEST_AUTH)
    return files


class Api:
    """Calls `/fn/<name>` as one identity (a test token, a JWT, or nobody)."""

    def __init__(self, url: str, bearer: str | None) -> None:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def call(self, fn: str, /, **args: Any) -> httpx.Response:
        return self.http.post(f"/fn/{fn}", json=args)

    def ok(self, fn: str, /, **args: Any) -> Any:
        r = self.call(fn, **args)
        assert r.status_code == 200, (fn, r.status_code, r.text)
        return r.json()["value"]

    def error(self, fn: str, status: int, /, **args: Any) -> dict[str, Any]:
        r = self.call(fn, **args)
        assert r.status_code == status, (fn, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"}, body
        return body["error"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


def sql(database_url: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(text, params or None)
        return cur.fetchall() if cur.description else []


def insert_project(database_url: str, tenant: str, name: str = "p") -> str:
    rows = sql(
        database_url,
        "INSERT INTO projects (tenant_id, name, state) VALUES (%s, %s, 'active') RETURNING _id",
        tenant,
        name,
    )
    return str(rows[0][0])


def insert_ticket(
    database_url: str, tenant: str, state: str = "pending", project_id: str | None = None
) -> str:
    rows = sql(
        database_url,
        "INSERT INTO tickets (tenant_id, title, state, priority, rejection_count, project_id)"
        " VALUES (%s, 't', %s, 0, 0, %s) RETURNING _id",
        tenant,
        state,
        project_id,
    )
    return str(rows[0][0])
