"""auth.login and auth.me over real HTTP: JWTs, one answer for unknown users and wrong
passwords, and the per-email rate limit kept in the database."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

from tests.conftest import REPO, AppFiles, LiveServer
from tests.swarm_app import JWT_SECRET, Api, api_fixture, install, sql, token, use_jwt_secret

INVALID = {"code": "unauthenticated", "message": "Invalid email or password"}


@pytest.fixture
def server(
    app_files: AppFiles, serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> LiveServer:
    use_jwt_secret(monkeypatch)
    return serve(install(app_files, ["auth", "users"]))


admin = api_fixture(token("acme", "admin", "admin-1"))
anonymous = api_fixture(None)


def add_user(admin: Api, email: str, password: str = "correct horse", role: str = "operator"):
    return admin.ok("users.add", email=email, password=password, role=role, name="Ann")


def test_login_returns_a_jwt_for_the_user(admin: Api, anonymous: Api, database_url: str) -> None:
    user = add_user(admin, "ann@example.com")
    assert "password_hash" not in user and user["tenant_id"] == "acme"
    before = int(time.time())
    value = anonymous.ok("auth.login", email="ann@example.com", password="correct horse")
    assert value["token_type"] == "bearer"
    assert value["user"]["_id"] == user["_id"] and "password_hash" not in value["user"]
    claims = jwt.decode(value["token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == user["_id"]
    assert claims["tenant_id"] == "acme"
    assert claims["roles"] == ["operator"]
    assert before + 3500 <= claims["exp"] <= int(time.time()) + 3600
    assert value["expires_at"] == pytest.approx(claims["exp"], abs=2)
    (stamp,) = sql(database_url, "SELECT last_login_at FROM users WHERE _id = %s", user["_id"])[0]
    assert stamp is not None
    (stored,) = sql(database_url, "SELECT password_hash FROM users WHERE _id = %s", user["_id"])[0]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored


def test_email_is_matched_case_insensitively(admin: Api, anonymous: Api) -> None:
    add_user(admin, "Bob@Example.com")
    value = anonymous.ok("auth.login", email="  BOB@example.COM ", password="correct horse")
    assert value["user"]["email"] == "bob@example.com"


def test_unknown_user_and_wrong_password_get_the_same_answer(admin: Api, anonymous: Api) -> None:
    add_user(admin, "carol@example.com")
    wrong = anonymous.call("auth.login", email="carol@example.com", password="wrong password")
    unknown = anonymous.call("auth.login", email="nobody@example.com", password="wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": INVALID}


def test_deactivated_user_cannot_sign_in(admin: Api, anonymous: Api) -> None:
    user = add_user(admin, "dan@example.com")
    admin.ok("users.deactivate", user_id=user["_id"])
    assert (
        anonymous.error("auth.login", 401, email="dan@example.com", password="correct horse")
        == INVALID
    )


def test_rate_limit_after_five_failures(admin: Api, anonymous: Api, database_url: str) -> None:
    add_user(admin, "eve@example.com")
    for _ in range(5):
        err = anonymous.error("auth.login", 401, email="eve@example.com", password="nope")
        assert err == INVALID
    # The sixth attempt is refused before the password is looked at, even the right one.
    err = anonymous.error("auth.login", 429, email="eve@example.com", password="correct horse")
    assert err["code"] == "rate_limited"
    assert 0 < err["details"]["retry_after_s"] <= 15 * 60 + 1
    # Counted in the database, per email: another email is not affected.
    add_user(admin, "frank@example.com")
    anonymous.ok("auth.login", email="frank@example.com", password="correct horse")
    rows = sql(
        database_url, "SELECT count(*) FROM login_attempts WHERE email = %s", "eve@example.com"
    )
    assert rows == [(5,)]
    # Once the failures are older than the window, signing in works again.
    sql(
        database_url,
        "UPDATE login_attempts SET _creation_time = now() - interval '16 minutes' WHERE email = %s",
        "eve@example.com",
    )
    anonymous.ok("auth.login", email="eve@example.com", password="correct horse")


def test_unknown_emails_are_rate_limited_too(anonymous: Api) -> None:
    for _ in range(5):
        anonymous.error("auth.login", 401, email="ghost@example.com", password="x")
    anonymous.error("auth.login", 429, email="ghost@example.com", password="x")


def test_success_resets_the_count(admin: Api, anonymous: Api) -> None:
    add_user(admin, "gus@example.com")
    for _ in range(4):
        anonymous.error("auth.login", 401, email="gus@example.com", password="nope")
    anonymous.ok("auth.login", email="gus@example.com", password="correct horse")
    for _ in range(5):
        anonymous.error("auth.login", 401, email="gus@example.com", password="nope")
    anonymous.error("auth.login", 429, email="gus@example.com", password="nope")


def test_concurrent_guesses_cannot_exceed_the_limit(server: LiveServer, admin: Api) -> None:
    add_user(admin, "hal@example.com")

    def attempt(_: int) -> int:
        with server.client() as client:
            r = client.post("/fn/auth.login", json={"email": "hal@example.com", "password": "x"})
            return r.status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = Counter(pool.map(attempt, range(12), timeout=120))
    assert statuses == {401: 5, 429: 7}


def test_me_describes_the_caller(admin: Api) -> None:
    me = admin.ok("auth.me")
    assert me["user_id"] == "admin-1" and me["tenant_id"] == "acme"
    assert me["roles"] == ["admin"] and me["kind"] == "user" and me["user"] is None


def test_me_requires_authentication(anonymous: Api) -> None:
    assert anonymous.error("auth.me", 401)["code"] == "unauthenticated"


def test_login_token_is_accepted_by_the_jwt_plugin(
    app_files: AppFiles, serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = REPO / "plugins" / "auth_jwt.py"
    if not plugin.exists():
        pytest.skip("plugins/auth_jwt.py is not in this checkout")
    monkeypatch.setenv("RUNTIME_JWT_SECRET", JWT_SECRET)
    for name in (
        "RUNTIME_JWT_ISSUER",
        "RUNTIME_JWT_AUDIENCE",
        "RUNTIME_JWT_PUBLIC_KEY",
        "RUNTIME_JWKS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    install(app_files, ["auth", "users"], plugins=["auth_jwt"])
    server = serve(app_files)
    admin, anonymous = Api(server.url, token("acme", "admin", "admin-1")), Api(server.url, None)
    user = add_user(admin, "ida@example.com")
    jwt_token = anonymous.ok("auth.login", email="ida@example.com", password="correct horse")
    signed_in = Api(server.url, jwt_token["token"])
    me = signed_in.ok("auth.me")
    for api in (admin, anonymous, signed_in):
        api.close()
    assert me["user_id"] == user["_id"] and me["tenant_id"] == "acme"
    assert me["user"]["email"] == "ida@example.com"


def test_missing_jwt_secret_is_a_clear_error(
    admin: Api, anonymous: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user(admin, "jo@example.com")
    monkeypatch.delenv("RUNTIME_JWT_SECRET")
    err = anonymous.error("auth.login", 500, email="jo@example.com", password="correct horse")
    assert "RUNTIME_JWT_SECRET is not set" in err["message"]
    assert "correct horse" not in err["message"]
