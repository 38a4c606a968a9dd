"""The Swarm platform app for tests: the repo's own ticket/project/seed modules and
schema.json, copied into `app_files`, plus a test-only auth plugin.

Only the modules under test are copied (other app modules may be mid-edit), and schema.json's
`functions` is filtered to them; its tables are kept whole.
`Authorization: Bearer test:<tenant>:<role>:<user>` authenticates as that user of that tenant
with every permission (role "viewer": read permissions only; role "agent": kind "api_key").
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterable
from typing import Any

import httpx
import psycopg

from tests.conftest import REPO, AppFiles

APP_MODULES = ("_ticket_ops", "tickets", "projects", "seed", "github")
PLUGINS = ("agent_routes", "lease_expiry")

TEST_AUTH = """
from runtime import Identity, hookimpl

ALL = frozenset({
    "tickets:read", "tickets:create", "tickets:update", "tickets:claim", "tickets:complete",
    "projects:read", "projects:write",
})
READ = frozenset({"tickets:read", "projects:read"})


@hookimpl
async def authenticate(request, runtime):
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer test:"):
        return None
    tenant, role, user = header[len("Bearer test:"):].split(":", 2)
    return Identity(
        user_id=user, tenant_id=tenant, roles=(role,),
        permissions=READ if role == "viewer" else ALL,
        kind="api_key" if role == "agent" else "user",
    )
"""


def token(tenant: str = "acme", role: str = "operator", user: str = "alice") -> str:
    return f"test:{tenant}:{role}:{user}"


def install_swarm_app(
    files: AppFiles, modules: Iterable[str] = APP_MODULES, plugins: Iterable[str] = PLUGINS
) -> AppFiles:
    copied = []
    for name in modules:
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
    """A synchronous client calling `/fn/<name>` as one identity."""

    def __init__(self, url: str, auth: str | None) -> None:
        headers = {"authorization": f"Bearer {auth}"} if auth else {}
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


async def bounded_gather(limit: int, calls: Iterable[Any], timeout_s: float = 60) -> list[Any]:
    """Run coroutines with at most `limit` in flight; the whole batch bounded in time."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.wait_for(asyncio.gather(*(run(c) for c in calls)), timeout_s)
