"""The Swarm platform app for tests: the repo's own app_functions modules and schema.json,
copied into `app_files`, plus a test-only auth plugin and the clients the tests share.

Only the modules a test names are copied (other app modules may be mid-edit), together with
the private helpers the platform modules import, and schema.json's `functions` is filtered
to them; its tables are kept whole. `Authorization: Bearer test:<tenant>:<role>:<user>`
authenticates as that user of that tenant holding every permission the loaded functions
declare (role "viewer": only the `:read` ones; role "nobody": none; role "agent": kind
"api_key").
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, AppFiles, LiveServer, sql

HELPERS = ("_tenancy", "_accounts", "_tokens", "_crypto")  # always copied
TICKETS = ("_ticket_ops", "tickets", "projects", "seed", "github")
TICKET_PLUGINS = ("agent_routes", "lease_expiry")

# The nine ticket states, written out rather than imported from app_functions/_ticket_ops.py:
# the tests hold the code to this list, so a state the code drops fails them.
TICKET_STATES = frozenset(
    [
        "draft",
        "pending",
        "claimed",
        "in_progress",
        "review",
        "completed",
        "failed",
        "blocked",
        "hold",
    ]
)

JWT_SECRET = "test-secret-" + "s" * 40

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
    if role == "nobody":
        permissions = frozenset()
    elif role == "viewer":
        permissions = frozenset(p for p in every if p.endswith(":read"))
    else:
        permissions = every
    return Identity(
        user_id=user, tenant_id=tenant, roles=(role,), permissions=permissions,
        kind="api_key" if role == "agent" else "user",
    )
"""


def token(tenant: str = "acme", role: str = "operator", user: str = "alice") -> str:
    return f"test:{tenant}:{role}:{user}"


def install(files: AppFiles, modules: Iterable[str], plugins: Iterable[str] = ()) -> AppFiles:
    """Copy `modules` (plus the private helpers) of app_functions/ and `plugins` of plugins/."""
    copied: list[str] = []
    for name in dict.fromkeys((*HELPERS, *modules)):
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


def use_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign JWTs with JWT_SECRET, with no issuer, audience or TTL from the environment."""
    monkeypatch.setenv("RUNTIME_JWT_SECRET", JWT_SECRET)
    for name in ("RUNTIME_JWT_ISSUER", "RUNTIME_JWT_AUDIENCE", "RUNTIME_JWT_TTL_S"):
        monkeypatch.delenv(name, raising=False)


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


def api_fixture(bearer: str | None) -> Any:
    """A fixture: an `Api` on the test module's `server` as `bearer`, closed after the test.

    `acme = api_fixture(token("acme", "operator", "alice"))` at module level defines `acme`.
    """

    @pytest.fixture
    def fixture(server: LiveServer) -> Iterator[Api]:
        api = Api(server.url, bearer)
        yield api
        api.close()

    return fixture


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


async def bounded_gather(limit: int, calls: Iterable[Any], timeout_s: float = 60) -> list[Any]:
    """Run coroutines with at most `limit` in flight; the whole batch bounded in time."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.wait_for(asyncio.gather(*(run(c) for c in calls)), timeout_s)
