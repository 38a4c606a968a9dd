"""plugins/rbac.py over real HTTP with the repo's schema.json tables: seeding, 403 naming the
missing permission, wildcards, users rows, API-key roles, and a cache that needs no database
round trip per call yet follows every change of the tables (LISTEN/NOTIFY)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from runtime.auth.keystore import create_key
from runtime.auth.tokens import sign_token
from tests.conftest import AppFiles, LiveServer, sql
from tests.plugin_app import JWT_SECRET, install, module_server

PLUGINS = ("auth_jwt", "auth_apikey", "rbac")
EXTRA = """
from runtime import query


@query(permission="reports:read")
async def report(ctx):
    return "report"
"""
EXTRA_FUNCTIONS = {"extra.report": {"args": {"type": "object"}}}


@pytest.fixture(autouse=True)
def jwt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RUNTIME_JWT_PUBLIC_KEY",
        "RUNTIME_JWKS_FILE",
        "RUNTIME_JWT_ISSUER",
        "RUNTIME_JWT_AUDIENCE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNTIME_JWT_SECRET", JWT_SECRET)


def make_files(root: Any) -> AppFiles:
    files = AppFiles(root / "app")
    files.functions.mkdir(parents=True)
    files.plugins.mkdir()
    return install(files, PLUGINS, modules={"extra": EXTRA}, functions=EXTRA_FUNCTIONS)


@pytest.fixture(scope="module")
def server(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    files = make_files(tmp_path_factory.mktemp("rbac"))
    with module_server(pg_server, template_db, files) as live:
        yield live


def token(*roles: str, sub: str = "user-1") -> str:
    return sign_token(
        JWT_SECRET.encode(), user_id=sub, tenant_id="acme", roles=list(roles), ttl_s=300
    )


def call(server: LiveServer, name: str, bearer: str) -> tuple[int, Any]:
    with server.client(bearer) as client:
        response = client.post(f"/fn/{name}", json={})
    return response.status_code, response.json()


def assert_403(server: LiveServer, name: str, bearer: str, message: str) -> None:
    status, body = call(server, name, bearer)
    assert status == 403, body
    assert body["error"] == {"code": "forbidden", "message": message}


def rbac_state(server: LiveServer) -> Any:
    module = server.runtime.plugins.get_plugin("plugins/rbac.py")
    return module.state_of(server.runtime)


def change(server: LiveServer, statement: str, *params: Any) -> float:
    """Run `statement`, wait (bounded) until this server's cache was invalidated; the delay."""
    state = rbac_state(server)
    before = state.generation
    started = time.perf_counter()
    sql(server.runtime.database_url, statement, *params)
    while state.generation == before:
        assert time.perf_counter() - started < 5, "no invalidation arrived"
        time.sleep(0.001)
    return time.perf_counter() - started


GRANT = """INSERT INTO role_permissions (role_id, permission_id)
SELECT r._id, p._id FROM roles r, permissions p WHERE r.name = %s AND p.name = %s"""
REVOKE = """DELETE FROM role_permissions rp USING roles r, permissions p
WHERE rp.role_id = r._id AND rp.permission_id = p._id AND r.name = %s AND p.name = %s"""


# -- seeding --------------------------------------------------------------------------------


def test_roles_and_permissions_are_seeded(server: LiveServer) -> None:
    url = server.runtime.database_url
    assert sql(url, "SELECT name, level FROM roles ORDER BY level DESC") == [
        ("admin", 100),
        ("operator", 50),
        ("agent", 20),
        ("viewer", 10),
    ]
    names = {row[0] for row in sql(url, "SELECT name FROM permissions")}
    for name in (
        "*",
        "tickets:create",
        "tickets:read",
        "tickets:claim",
        "tickets:update",
        "tickets:complete",
        "projects:read",
        "hitl:read",
        "secrets:read",
        "secrets:write",
        "vms:read",
        "users:admin",
    ):
        assert name in names
    # Permissions declared by loaded functions are added too, with their category.
    assert sql(
        url, "SELECT category, description FROM permissions WHERE name = 'reports:read'"
    ) == [("reports", "Declared by a function")]
    grants = sql(
        url,
        """SELECT p.name FROM role_permissions rp JOIN roles r ON r._id = rp.role_id
                         JOIN permissions p ON p._id = rp.permission_id WHERE r.name = 'admin'""",
    )
    assert grants == [("*",)]


def test_seed_is_idempotent_keeps_removed_grants_removed_and_survives_a_concurrent_start(
    database_url: str, tmp_path: Any, serve: Callable[..., LiveServer]
) -> None:
    files = make_files(tmp_path)
    servers: list[LiveServer] = []
    threads = [threading.Thread(target=lambda: servers.append(serve(files))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(servers) == 2  # both started: the seed and the triggers serialise on a lock
    count = "SELECT count(*) FROM role_permissions"
    [(grants,)] = sql(database_url, count)
    sql(database_url, REVOKE, "agent", "tickets:claim")
    for live in servers:
        live.stop()
    restarted = serve(files)
    assert sql(database_url, "SELECT count(*) FROM roles") == [(4,)]
    assert sql(database_url, count) == [(grants - 1,)]  # the operator's removal stands
    assert_403(
        restarted,
        "probe.claim",
        token("agent"),
        "Missing permission 'tickets:claim' for probe.claim (roles: agent)",
    )
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgname = 'swarm_rbac_notify'"
    assert sql(database_url, triggers) == [(4,)]


# -- decisions --------------------------------------------------------------------------------


def test_missing_permission_is_403_naming_it(server: LiveServer) -> None:
    assert_403(
        server,
        "probe.claim",
        token("viewer"),
        "Missing permission 'tickets:claim' for probe.claim (roles: viewer)",
    )
    assert_403(
        server,
        "probe.admin_only",
        token("operator", "agent"),
        "Missing permission 'users:admin' for probe.admin_only (roles: operator, agent)",
    )
    assert_403(
        server,
        "probe.claim",
        token(),
        "Missing permission 'tickets:claim' for probe.claim (roles: none)",
    )
    assert_403(
        server,
        "probe.claim",
        token("no-such-role"),
        "Missing permission 'tickets:claim' for probe.claim (roles: no-such-role)",
    )


def test_granted_directly_and_by_wildcards(server: LiveServer) -> None:
    assert call(server, "probe.claim", token("agent")) == (200, {"value": "claimed"})
    assert call(server, "probe.claim", token("operator"))[0] == 200  # tickets:*
    assert call(server, "probe.admin_only", token("admin"))[0] == 200  # *
    assert call(server, "extra.report", token("admin"))[0] == 200  # *, declared later
    assert call(server, "probe.claim", token("viewer", "agent"))[0] == 200  # union of roles


def test_ctx_auth_permissions_are_resolved(server: LiveServer) -> None:
    status, body = call(server, "probe.whoami", token("agent"))
    assert status == 200
    assert "tickets:claim" in body["value"]["permissions"]
    assert "users:admin" not in body["value"]["permissions"]
    assert call(server, "probe.whoami", token())[1]["value"]["permissions"] == []


def test_functions_without_permission_need_only_authentication(server: LiveServer) -> None:
    assert call(server, "probe.whoami", token("viewer"))[0] == 200
    assert call(server, "probe.whoami", token())[0] == 200


def test_api_key_role_is_checked(server: LiveServer) -> None:
    with psycopg.connect(server.runtime.database_url, autocommit=True) as conn:
        agent = create_key(conn, tenant_id="acme", role="agent", name="vm-1").token
        viewer = create_key(conn, tenant_id="acme", role="viewer", name="dash").token
    assert call(server, "probe.claim", agent)[0] == 200
    assert_403(
        server,
        "probe.claim",
        viewer,
        "Missing permission 'tickets:claim' for probe.claim (roles: viewer)",
    )


def test_users_row_wins_over_token_roles_and_deactivation_refuses(server: LiveServer) -> None:
    user_id = str(uuid.uuid4())
    change(
        server,
        "INSERT INTO users (_id, tenant_id, email, role, active) "
        "VALUES (%s, 'acme', %s, 'viewer', true)",
        user_id,
        f"{user_id}@example.com",
    )
    admin_token = token("admin", sub=user_id)
    assert_403(
        server,
        "probe.claim",
        admin_token,
        "Missing permission 'tickets:claim' for probe.claim (roles: viewer)",
    )
    change(server, "UPDATE users SET role = 'agent' WHERE _id = %s", user_id)
    assert call(server, "probe.claim", admin_token)[0] == 200
    change(server, "UPDATE users SET active = false WHERE _id = %s", user_id)
    assert_403(server, "probe.whoami", admin_token, f"User {user_id} is deactivated")
    # A login stamp does not touch access columns: no invalidation, no notification.
    generation = rbac_state(server).generation
    sql(
        server.runtime.database_url,
        "UPDATE users SET last_login_at = now() WHERE _id = %s",
        user_id,
    )
    time.sleep(0.05)
    assert rbac_state(server).generation == generation


# -- the cache -------------------------------------------------------------------------------


def test_hot_path_makes_no_database_round_trip(server: LiveServer) -> None:
    state = rbac_state(server)
    call(server, "probe.claim", token("agent", "operator"))
    loads = state.loads
    for _ in range(20):
        assert call(server, "probe.claim", token("agent", "operator"))[0] == 200
        assert call(server, "probe.claim", token("operator", "agent"))[0] == 200  # same set
    assert state.loads == loads


def test_a_change_to_role_permissions_takes_effect_on_the_next_call(server: LiveServer) -> None:
    viewer = token("viewer")
    assert_403(
        server,
        "probe.claim",
        viewer,
        "Missing permission 'tickets:claim' for probe.claim (roles: viewer)",
    )
    granted_after = change(server, GRANT, "viewer", "tickets:claim")
    assert call(server, "probe.claim", viewer)[0] == 200
    revoked_after = change(server, REVOKE, "viewer", "tickets:claim")
    assert_403(
        server,
        "probe.claim",
        viewer,
        "Missing permission 'tickets:claim' for probe.claim (roles: viewer)",
    )
    assert granted_after < 1.0 and revoked_after < 1.0  # measured: ~1 ms


def test_changes_to_roles_and_permissions_tables_invalidate_too(server: LiveServer) -> None:
    change(server, "UPDATE roles SET description = 'edited' WHERE name = 'viewer'")
    change(server, "UPDATE permissions SET description = 'edited' WHERE name = 'vms:read'")
    change(server, "INSERT INTO permissions (name, category) VALUES ('tmp:x', 'tmp')")
    change(server, "DELETE FROM permissions WHERE name = 'tmp:x'")


def test_without_listen_connection_every_check_reads_the_tables(server: LiveServer) -> None:
    state = rbac_state(server)
    url = server.runtime.database_url
    before = state.generation
    terminated = sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
        "application_name = 'swarm-runtime-rbac' AND datname = current_database()",
    )
    assert terminated == [(True,)]
    deadline = time.monotonic() + 10
    # +1 when the loss is noticed, +1 when LISTEN is back: the cache restarts empty.
    while not state.listening or state.generation < before + 2:
        assert time.monotonic() < deadline, "the LISTEN connection did not come back"
        time.sleep(0.01)
    # Reconnected: changes are followed again.
    change(server, GRANT, "viewer", "tickets:claim")
    assert call(server, "probe.claim", token("viewer"))[0] == 200
    change(server, REVOKE, "viewer", "tickets:claim")
    # While not listening, nothing is cached: each call reads the tables.
    state.listening = False
    try:
        loads = state.loads
        for _ in range(3):
            call(server, "probe.claim", token("agent"))
        # two reads per call: resolve_permissions (ctx.auth.permissions) and authorize
        assert state.loads == loads + 6
        assert state.permissions == {}
    finally:
        state.listening = True


def test_grants_matching(server: LiveServer) -> None:
    grants = server.runtime.plugins.get_plugin("plugins/rbac.py").grants
    assert grants(frozenset({"tickets:claim"}), "tickets:claim")
    assert grants(frozenset({"tickets:*"}), "tickets:claim")
    assert grants(frozenset({"*"}), "anything:at_all")
    assert not grants(frozenset({"tickets:*"}), "projects:read")
    assert not grants(frozenset({"tickets:claim"}), "tickets:claimx")
    assert not grants(frozenset(), "tickets:read")
