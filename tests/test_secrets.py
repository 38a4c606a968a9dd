"""secrets.*: AES-GCM at rest, values only from `get`, key rotation, rows bound to their
tenant and name, and no plaintext in the table, the logs or error messages."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable

import pytest

from runtime.logs import JSONFormatter
from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import Api, api_fixture, install, sql, token

VALUE = "hunter2-" + "Zq9" * 5  # distinctive, so any leak is found by substring


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1 = key()


@pytest.fixture
def server(
    app_files: AppFiles, serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> LiveServer:
    monkeypatch.setenv("RUNTIME_SECRETS_KEY", f"k1:{K1}")
    return serve(install(app_files, ["secrets"]))


acme = api_fixture(token("acme", "admin", "alice"))
other = api_fixture(token("globex", "admin", "mallory"))


def test_set_get_list_delete(acme: Api) -> None:
    meta = acme.ok("secrets.set", name="GITHUB_TOKEN", value=VALUE)
    assert meta["name"] == "GITHUB_TOKEN" and meta["key_id"] == "k1" and "value" not in meta
    assert acme.ok("secrets.get", name="GITHUB_TOKEN")["value"] == VALUE
    acme.ok("secrets.set", name="GITHUB_TOKEN", value="v2")  # replaces
    acme.ok("secrets.set", name="API_KEY", value="other")
    assert acme.ok("secrets.get", name="GITHUB_TOKEN")["value"] == "v2"
    listed = acme.ok("secrets.list")
    assert [s["name"] for s in listed] == ["API_KEY", "GITHUB_TOKEN"]
    assert all("value" not in s and "ciphertext" not in s for s in listed)
    assert acme.ok("secrets.delete", name="API_KEY") == {"name": "API_KEY", "deleted": True}
    assert acme.error("secrets.get", 404, name="API_KEY") == {
        "code": "not_found",
        "message": "Secret 'API_KEY' not found",
    }
    assert acme.error("secrets.delete", 404, name="API_KEY")["code"] == "not_found"


def test_table_holds_no_plaintext(acme: Api, database_url: str) -> None:
    acme.ok("secrets.set", name="DB_PASSWORD", value=VALUE)
    rows = sql(database_url, "SELECT to_jsonb(s)::text FROM secrets s")
    assert len(rows) == 1
    raw = rows[0][0]
    assert VALUE not in raw
    assert base64.b64encode(VALUE.encode()).decode()[:16] not in raw
    ((ciphertext, nonce, key_id),) = sql(
        database_url, "SELECT ciphertext, nonce, key_id FROM secrets"
    )
    assert key_id == "k1" and len(base64.b64decode(nonce)) == 12
    assert len(base64.b64decode(ciphertext)) == len(VALUE) + 16  # GCM tag


def test_ciphertext_cannot_move_between_rows_or_tenants(
    acme: Api, other: Api, database_url: str
) -> None:
    acme.ok("secrets.set", name="A", value=VALUE)
    acme.ok("secrets.set", name="B", value="bbb")
    other.ok("secrets.set", name="A", value="globex-a")
    copy = (
        "UPDATE secrets SET ciphertext = src.ciphertext, nonce = src.nonce FROM secrets src"
        " WHERE src.tenant_id = 'acme' AND src.name = 'A'"
        " AND secrets.tenant_id = %s AND secrets.name = %s"
    )
    sql(database_url, copy, "acme", "B")
    sql(database_url, copy, "globex", "A")
    for api, name in ((acme, "B"), (other, "A")):
        err = api.error("secrets.get", 500, name=name)
        assert err["message"] == (
            f"Secret {name!r} cannot be decrypted: wrong key or altered ciphertext"
        )
        assert VALUE not in str(err)


def test_rotation_keeps_old_rows_readable(
    acme: Api, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    acme.ok("secrets.set", name="OLD", value="old-value")
    k2 = key()
    monkeypatch.setenv("RUNTIME_SECRETS_KEY", f"k2:{k2},k1:{K1}")
    old = acme.ok("secrets.get", name="OLD")
    assert old["value"] == "old-value" and old["key_id"] == "k1"
    assert acme.ok("secrets.set", name="NEW", value="new-value")["key_id"] == "k2"
    assert acme.ok("secrets.reencrypt") == {"reencrypted": 1, "key_id": "k2"}
    assert sql(database_url, "SELECT DISTINCT key_id FROM secrets") == [("k2",)]
    monkeypatch.setenv("RUNTIME_SECRETS_KEY", f"k2:{k2}")  # the old key is retired
    assert acme.ok("secrets.get", name="OLD")["value"] == "old-value"
    assert acme.ok("secrets.get", name="NEW")["value"] == "new-value"
    # A row under a key that is no longer listed says so, without the value.
    monkeypatch.setenv("RUNTIME_SECRETS_KEY", f"k3:{key()}")
    err = acme.error("secrets.get", 500, name="OLD")
    assert err["message"] == (
        "Secret 'OLD' was encrypted with key id 'k2', which RUNTIME_SECRETS_KEY does not list"
    )


def test_a_bare_key_is_key_id_default(acme: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_SECRETS_KEY", K1)
    assert acme.ok("secrets.set", name="X", value="x")["key_id"] == "default"
    assert acme.ok("secrets.get", name="X")["value"] == "x"


def test_missing_or_bad_key_is_a_clear_error(acme: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_SECRETS_KEY")
    err = acme.error("secrets.set", 500, name="X", value=VALUE)
    assert err["message"] == "RUNTIME_SECRETS_KEY is not set: secrets cannot be stored or read"
    monkeypatch.setenv("RUNTIME_SECRETS_KEY", "k1:c2hvcnQ=")
    err = acme.error("secrets.set", 500, name="X", value=VALUE)
    assert err["message"] == "RUNTIME_SECRETS_KEY entry 1 is not base64 of a 32-byte key"
    assert "c2hvcnQ" not in err["message"] and VALUE not in err["message"]


def test_other_tenants_see_nothing(acme: Api, other: Api) -> None:
    acme.ok("secrets.set", name="SHARED_NAME", value=VALUE)
    assert other.error("secrets.get", 404, name="SHARED_NAME")["code"] == "not_found"
    assert other.ok("secrets.list") == []
    assert other.error("secrets.delete", 404, name="SHARED_NAME")["code"] == "not_found"
    other.ok("secrets.set", name="SHARED_NAME", value="theirs")
    assert acme.ok("secrets.get", name="SHARED_NAME")["value"] == VALUE
    assert other.ok("secrets.get", name="SHARED_NAME")["value"] == "theirs"


def test_permissions_are_required(server: LiveServer) -> None:
    nobody = Api(server.url, token("acme", "nobody", "zed"))
    assert nobody.error("secrets.get", 403, name="X")["code"] == "forbidden"
    assert nobody.error("secrets.set", 403, name="X", value="v")["code"] == "forbidden"
    nobody.close()


def test_values_never_reach_logs_or_errors(
    acme: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    acme.ok("secrets.set", name="LOGGED", value=VALUE)
    assert acme.ok("secrets.get", name="LOGGED")["value"] == VALUE
    acme.ok("secrets.list")
    bodies = [
        acme.call("secrets.set", name="bad name!", value=VALUE).text,  # invalid name
        acme.call("secrets.set", name="BIG", value=VALUE * 5000).text,  # value too long
        acme.call("secrets.set", name="X", value=VALUE, extra=VALUE).text,  # unknown field
    ]
    monkeypatch.delenv("RUNTIME_SECRETS_KEY")
    bodies.append(acme.call("secrets.set", name="NOKEY", value=VALUE).text)
    bodies.append(acme.call("secrets.get", name="LOGGED").text)
    acme.ok("secrets.delete", name="LOGGED")
    assert all(VALUE not in body for body in bodies), bodies
    assert caplog.records, "expected the runtime to log something"
    formatter = JSONFormatter()
    for record in caplog.records:
        text = formatter.format(record) + repr(vars(record))
        assert VALUE not in text, text
