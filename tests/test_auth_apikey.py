"""API keys end to end: `swarm-runtime apikey create|list|revoke` against a real database,
plugins/auth_apikey.py accepting them as `Authorization: Bearer` and `X-API-Key`, and every
refusal (malformed, unknown, wrong secret, revoked) answering 401 saying which."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.auth.apikeys import (
    generate_api_key,
    hash_api_key_secret,
    parse_api_key,
    verify_api_key_secret,
)
from tests.conftest import AppFiles, LiveServer, sql
from tests.plugin_app import CLI, cli_env, install, module_server

KEY = re.compile(r"swk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


@pytest.fixture(scope="module")
def server(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    files = AppFiles(tmp_path_factory.mktemp("apikey") / "app")
    files.functions.mkdir(parents=True)
    files.plugins.mkdir()
    install(files, ("auth_apikey",))
    with module_server(pg_server, template_db, files) as live:
        yield live


def cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "apikey", *args, "--database-url", server.runtime.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )


def create(server: LiveServer, tenant: str = "acme", role: str = "agent", name: str = "vm") -> str:
    result = cli(server, "create", "--tenant", tenant, "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def whoami(server: LiveServer, headers: dict[str, str]) -> tuple[int, Any]:
    with server.client() as client:
        response = client.post("/fn/probe.whoami", json={}, headers=headers)
    return response.status_code, response.json()


def assert_401(server: LiveServer, headers: dict[str, str], message: str) -> None:
    status, body = whoami(server, headers)
    assert status == 401, body
    assert body["error"]["code"] == "unauthenticated"
    assert message in body["error"]["message"], body["error"]["message"]


def test_create_prints_the_key_once_and_stores_only_a_salted_hash(server: LiveServer) -> None:
    result = cli(server, "create", "--tenant", "acme", "--role", "agent", "--name", "vm-1")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert KEY.fullmatch(token), result.stdout
    key_id, secret = token[4:20], token[21:]
    assert f"created API key {key_id} (vm-1, tenant acme, role agent)" in result.stderr
    assert "not shown again" in result.stderr
    [(tenant, role, name, salt, key_hash, revoked)] = sql(
        server.runtime.database_url,
        "SELECT tenant_id, role, name, salt, key_hash, revoked_at FROM api_keys WHERE key_id = %s",
        key_id,
    )
    assert (tenant, role, name, revoked) == ("acme", "agent", "vm-1", None)
    assert secret not in f"{salt}{key_hash}" and token not in f"{salt}{key_hash}"
    assert verify_api_key_secret(secret, salt, key_hash)
    listing = cli(server, "list", "--tenant", "acme")
    assert listing.returncode == 0, listing.stderr
    assert key_id in listing.stdout and secret not in listing.stdout


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_key_authenticates_as_api_key_identity(server: LiveServer, header: str) -> None:
    token = create(server, tenant="globex", role="agent", name="vm-7")
    value = f"Bearer {token}" if header == "authorization" else token
    status, body = whoami(server, {header: value})
    assert status == 200, body
    assert body["value"] == {
        "user_id": None,
        "tenant_id": "globex",
        "roles": ["agent"],
        "kind": "api_key",
        "key_id": token[4:20],
        "permissions": None,  # no rbac plugin in this app
    }


def test_revoked_key_fails_on_the_next_call(server: LiveServer) -> None:
    token = create(server)
    key_id = token[4:20]
    assert whoami(server, {"x-api-key": token})[0] == 200
    result = cli(server, "revoke", key_id)
    assert result.returncode == 0, result.stderr
    assert f"revoked API key {key_id} at " in result.stdout
    assert_401(server, {"x-api-key": token}, f"API key {key_id} was revoked at ")
    assert_401(server, {"authorization": f"Bearer {token}"}, f"API key {key_id} was revoked")
    again = cli(server, "revoke", key_id)
    assert again.returncode == 0 and "already revoked" in again.stdout
    live = cli(server, "list")
    everything = cli(server, "list", "--all")
    assert key_id not in live.stdout
    assert key_id in everything.stdout


def test_unknown_key(server: LiveServer) -> None:
    token = generate_api_key().token  # well formed, never stored
    assert_401(server, {"x-api-key": token}, f"Unknown API key {token[4:20]}")
    missing = cli(server, "revoke", "0123456789abcdef")
    assert missing.returncode == 1
    assert "error: no API key '0123456789abcdef'" in missing.stderr


def test_wrong_secret(server: LiveServer) -> None:
    token = create(server)
    forged = token[:21] + generate_api_key().token[21:]
    assert_401(
        server, {"x-api-key": forged}, f"Invalid API key {token[4:20]}: the secret does not match"
    )


def test_malformed_key(server: LiveServer) -> None:
    assert_401(server, {"x-api-key": "not-a-key"}, "Malformed API key: expected swk_<key_id>_")
    assert_401(server, {"authorization": "Bearer swk_short"}, "Malformed API key")


def test_other_bearers_are_not_ours(server: LiveServer) -> None:
    assert_401(server, {"authorization": "Bearer dev_x"}, "probe.whoami requires authentication")


def test_last_used_is_recorded_in_the_background(server: LiveServer) -> None:
    token = create(server)
    assert whoami(server, {"x-api-key": token})[0] == 200
    url = server.runtime.database_url
    for _ in range(200):
        [(used,)] = sql(url, "SELECT last_used_at FROM api_keys WHERE key_id = %s", token[4:20])
        if used is not None:
            break
        time.sleep(0.01)
    assert used is not None


def test_create_warns_about_an_unknown_role(server: LiveServer) -> None:
    sql(
        server.runtime.database_url,
        "INSERT INTO roles (name, level) VALUES ('agent', 20) ON CONFLICT DO NOTHING",
    )
    result = cli(server, "create", "--tenant", "acme", "--role", "agnet", "--name", "typo")
    assert result.returncode == 0
    assert "warning: role 'agnet' is not in table roles (agent)" in result.stderr


def test_cli_explains_a_missing_table(database_url: str) -> None:
    result = subprocess.run(
        [CLI, "apikey", "list", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert result.returncode == 1
    assert "error: Table api_keys does not exist: run `swarm-runtime migrate`" in result.stderr


def test_key_helpers() -> None:
    key = generate_api_key()
    assert KEY.fullmatch(key.token)
    key_id, secret = parse_api_key(key.token) or ("", "")
    assert key_id == key.key_id
    assert verify_api_key_secret(secret, key.salt, key.key_hash)
    assert not verify_api_key_secret(secret[:-1] + "A", key.salt, key.key_hash)
    assert hash_api_key_secret(secret, key.salt) != hash_api_key_secret(secret, "other-salt")
    assert len({generate_api_key().salt for _ in range(5)}) == 5
    for bad in ("", "swk_", key.token + "x", key.token.replace("swk_", "sk_"), "Bearer x"):
        assert parse_api_key(bad) is None
