"""`swarm-runtime user create` in a real subprocess, and the users.* admin functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import Api, api_fixture, install, sql, token, use_jwt_secret

CLI = str(Path(sys.executable).with_name("swarm-runtime"))


@pytest.fixture
def app(app_files: AppFiles, monkeypatch: pytest.MonkeyPatch) -> AppFiles:
    use_jwt_secret(monkeypatch)
    return install(app_files, ["auth", "users"])


def user_create(
    app: AppFiles, database_url: str, *args: str, password_env: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_USER_PASSWORD"}
    if password_env is not None:
        env["RUNTIME_USER_PASSWORD"] = password_env
    return subprocess.run(
        [
            CLI,
            "user",
            "create",
            *args,
            "--functions",
            str(app.functions),
            "--schema",
            str(app.schema_path),
            "--plugins",
            str(app.plugins),
            "--data",
            str(app.root / ".runtime"),
            "--database-url",
            database_url,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_creates_the_first_admin(
    app: AppFiles, database_url: str, serve: Callable[..., LiveServer]
) -> None:
    done = user_create(
        app,
        database_url,
        "--email",
        "Root@Example.com",
        "--role",
        "admin",
        "--tenant",
        "acme",
        "--name",
        "Root",
        password_env="s3cret-password",
    )
    assert done.returncode == 0, done.stderr
    user = json.loads(done.stdout)
    assert user["email"] == "root@example.com" and user["role"] == "admin"
    assert user["tenant_id"] == "acme" and user["name"] == "Root" and user["active"] is True
    assert "password_hash" not in user and "s3cret-password" not in done.stdout + done.stderr
    ((stored,),) = sql(database_url, "SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$")
    # The new admin can sign in.
    server = serve(app)
    anonymous = Api(server.url, None)
    value = anonymous.ok("auth.login", email="root@example.com", password="s3cret-password")
    anonymous.close()
    assert value["user"]["_id"] == user["_id"]


def test_cli_password_flag_and_duplicate_email(app: AppFiles, database_url: str) -> None:
    args = (
        "--email",
        "a@example.com",
        "--role",
        "operator",
        "--tenant",
        "acme",
        "--password",
        "long-enough-pw",
    )
    assert user_create(app, database_url, *args).returncode == 0
    again = user_create(app, database_url, *args)
    assert again.returncode == 1
    assert json.loads(again.stderr) == {
        "error": {"code": "conflict", "message": "A user with this email already exists"}
    }


def test_cli_without_a_password_refuses(app: AppFiles, database_url: str) -> None:
    done = user_create(
        app, database_url, "--email", "b@example.com", "--role", "admin", "--tenant", "acme"
    )
    assert done.returncode == 2
    assert "no password" in done.stderr and "RUNTIME_USER_PASSWORD" in done.stderr
    assert done.stdout == ""


def test_cli_validates_arguments(app: AppFiles, database_url: str) -> None:
    done = user_create(
        app,
        database_url,
        "--email",
        "not-an-email",
        "--role",
        "admin",
        "--tenant",
        "acme",
        password_env="long-enough-pw",
    )
    assert done.returncode == 1
    error = json.loads(done.stderr)["error"]
    assert error["code"] == "invalid_args" and error["details"][0]["path"] == "$.email"
    short = user_create(
        app,
        database_url,
        "--email",
        "c@example.com",
        "--role",
        "admin",
        "--tenant",
        "acme",
        password_env="short",
    )
    assert json.loads(short.stderr)["error"]["details"][0]["path"] == "$.password"


# -- users.* over HTTP ----------------------------------------------------------------------


@pytest.fixture
def server(app: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(app)


admin = api_fixture(token("acme", "admin", "admin-1"))
other = api_fixture(token("globex", "admin", "mallory"))


def test_list_is_per_tenant_and_paginated(admin: Api, other: Api) -> None:
    for i in range(3):
        admin.ok("users.add", email=f"u{i}@example.com", password="long-enough-pw", role="viewer")
    other.ok("users.add", email="x@globex.com", password="long-enough-pw", role="admin")
    first = admin.ok("users.list", limit=2)
    rest = admin.ok("users.list", limit=2, cursor=first["cursor"])
    emails = [u["email"] for u in first["page"] + rest["page"]]
    assert emails == ["u0@example.com", "u1@example.com", "u2@example.com"] and rest["is_done"]
    assert all("password_hash" not in u for u in first["page"] + rest["page"])
    assert [u["email"] for u in other.ok("users.list")["page"]] == ["x@globex.com"]


def test_set_role_and_deactivate(admin: Api, other: Api, server: LiveServer) -> None:
    user = admin.ok("users.add", email="v@example.com", password="long-enough-pw", role="viewer")
    assert admin.ok("users.set_role", user_id=user["_id"], role="operator")["role"] == "operator"
    assert admin.ok("users.deactivate", user_id=user["_id"])["active"] is False
    anonymous = Api(server.url, None)
    anonymous.error("auth.login", 401, email="v@example.com", password="long-enough-pw")
    anonymous.close()
    # Another tenant's admin cannot see or touch the user.
    not_found = {"code": "not_found", "message": "User not found"}
    assert other.error("users.set_role", 404, user_id=user["_id"], role="admin") == not_found
    assert other.error("users.deactivate", 404, user_id=user["_id"]) == not_found


def test_admins_cannot_lock_themselves_out(server: LiveServer, admin: Api) -> None:
    me = admin.ok("users.add", email="me@example.com", password="long-enough-pw", role="admin")
    myself = Api(server.url, token("acme", "admin", me["_id"]))
    err = myself.error("users.deactivate", 409, user_id=me["_id"])
    assert err["message"] == "You cannot deactivate your own account"
    err = myself.error("users.set_role", 409, user_id=me["_id"], role="viewer")
    assert err["message"] == "You cannot change your own role"
    myself.close()


def test_roles_must_exist_once_seeded(admin: Api, database_url: str) -> None:
    sql(database_url, "INSERT INTO roles (name, level) VALUES ('admin', 100), ('viewer', 10)")
    err = admin.error(
        "users.add", 400, email="w@example.com", password="long-enough-pw", role="wizard"
    )
    assert err == {"code": "invalid_args", "message": "Unknown role 'wizard'"}
    admin.ok("users.add", email="w@example.com", password="long-enough-pw", role="viewer")


def test_user_admin_needs_the_permission(server: LiveServer) -> None:
    nobody = Api(server.url, token("acme", "nobody", "zed"))
    assert (
        nobody.error(
            "users.add", 403, email="n@example.com", password="long-enough-pw", role="admin"
        )["code"]
        == "forbidden"
    )
    assert nobody.error("users.list", 403)["code"] == "forbidden"
    nobody.close()
