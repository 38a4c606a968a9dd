"""plugins/auth_jwt.py over real HTTP: HS256/RS256/ES256/JWKS tokens become identities, and
every way a token can be wrong answers 401 `unauthenticated` saying which."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import AppFiles, LiveServer
from tests.plugin_app import CLI, JWT_SECRET, cli_env, install, module_server

JWT_VARS = (
    "RUNTIME_JWT_SECRET",
    "RUNTIME_JWT_PUBLIC_KEY",
    "RUNTIME_JWKS_FILE",
    "RUNTIME_JWT_ISSUER",
    "RUNTIME_JWT_AUDIENCE",
    "RUNTIME_JWT_LEEWAY",
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.PublicFormat.SubjectPublicKeyInfo
    rsa_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, pem)
    ec_pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, pem)
    (folder / "rsa.pem").write_bytes(rsa_pem)
    (folder / "ec.pem").write_bytes(ec_pem)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    jwk.update(kid="rsa-1", use="sig")
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    ec_jwk.update(kid="ec-1", use="sig", alg="ES256")
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk, ec_jwk]}))
    return {"rsa": rsa_key, "ec": ec_key, "rsa_pem": rsa_pem, "folder": folder}


@pytest.fixture(scope="module")
def server(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    files = AppFiles(tmp_path_factory.mktemp("jwt") / "app")
    files.functions.mkdir(parents=True)
    files.plugins.mkdir()
    install(files, ("auth_jwt",), tables={})
    with module_server(pg_server, template_db, files) as live:
        yield live


@pytest.fixture(autouse=True)
def jwt_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in JWT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNTIME_JWT_SECRET", JWT_SECRET)
    return monkeypatch


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user-1",
        "tenant_id": "acme",
        "roles": ["operator"],
        "iat": now,
        "exp": now + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str | bytes = JWT_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand, as an attacker would (pyjwt refuses to sign these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def whoami(server: LiveServer, token: str) -> tuple[int, Any]:
    with server.client(token) as client:
        response = client.post("/fn/probe.whoami", json={})
    return response.status_code, response.json()


def assert_401(server: LiveServer, token: str, message: str) -> None:
    status, body = whoami(server, token)
    assert status == 401, body
    assert body["error"]["code"] == "unauthenticated"
    assert message in body["error"]["message"], body["error"]["message"]


# -- accepted ---------------------------------------------------------------------------


def test_hs256_token_becomes_the_identity(server: LiveServer) -> None:
    status, body = whoami(server, hs256(claims(roles=["operator", "viewer"])))
    assert status == 200, body
    assert body["value"] == {
        "user_id": "user-1",
        "tenant_id": "acme",
        "roles": ["operator", "viewer"],
        "kind": "user",
        "key_id": None,
        "permissions": None,  # no rbac plugin in this app
    }


def test_single_role_claim(server: LiveServer) -> None:
    status, body = whoami(server, hs256(claims(roles=None, role="agent")))
    assert status == 200, body
    assert body["value"]["roles"] == ["agent"]


def test_rs256_with_public_key_file(
    server: LiveServer, keys: dict[str, Any], jwt_env: pytest.MonkeyPatch
) -> None:
    jwt_env.setenv("RUNTIME_JWT_PUBLIC_KEY", str(keys["folder"] / "rsa.pem"))
    token = jwt.encode(claims(), keys["rsa"], algorithm="RS256")
    assert whoami(server, token)[0] == 200


def test_es256_with_public_key_file(
    server: LiveServer, keys: dict[str, Any], jwt_env: pytest.MonkeyPatch
) -> None:
    jwt_env.delenv("RUNTIME_JWT_SECRET")
    jwt_env.setenv("RUNTIME_JWT_PUBLIC_KEY", str(keys["folder"] / "ec.pem"))
    assert whoami(server, jwt.encode(claims(), keys["ec"], algorithm="ES256"))[0] == 200
    # ES384 is not ES256's curve: refused, not tried.
    token = forge({"alg": "ES384", "typ": "JWT"}, claims(), b"x")
    assert_401(server, token, "JWT algorithm 'ES384' is not accepted here (accepted: ES256)")


def test_jwks_file_picks_the_key_by_kid(
    server: LiveServer, keys: dict[str, Any], jwt_env: pytest.MonkeyPatch
) -> None:
    jwt_env.setenv("RUNTIME_JWKS_FILE", str(keys["folder"] / "jwks.json"))
    rsa_token = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "rsa-1"})
    ec_token = jwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    assert whoami(server, rsa_token)[0] == 200
    assert whoami(server, ec_token)[0] == 200
    unknown = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "rsa-9"})
    assert_401(server, unknown, "JWT key id 'rsa-9' is not one of the configured keys")
    # ec-1 declares alg ES256: an RS256 token naming it is refused.
    mismatched = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "ec-1"})
    assert_401(server, mismatched, "JWT algorithm 'RS256' is not accepted here")


def test_expiry_within_leeway_is_accepted(server: LiveServer) -> None:
    now = int(time.time())
    assert whoami(server, hs256(claims(exp=now - 10)))[0] == 200  # leeway 30 s


# -- refused: 401 with a message that says which ------------------------------------------


def test_alg_none_is_refused(server: LiveServer) -> None:
    token = forge({"alg": "none", "typ": "JWT"}, claims(), None)
    assert_401(server, token, "JWT algorithm 'none' is not accepted: the token must be signed")
    assert_401(server, forge({"alg": "None"}, claims(), None), "algorithm 'none'")


def test_algorithm_confusion_is_refused(
    server: LiveServer, keys: dict[str, Any], jwt_env: pytest.MonkeyPatch
) -> None:
    """An HS256 token "signed" with the RSA public key (which anyone can read) as its secret."""
    jwt_env.delenv("RUNTIME_JWT_SECRET")
    jwt_env.setenv("RUNTIME_JWT_PUBLIC_KEY", str(keys["folder"] / "rsa.pem"))
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(roles=["admin"]), keys["rsa_pem"])
    assert_401(server, token, "JWT algorithm 'HS256' is not accepted here (accepted: PS256")
    # With an HMAC secret configured too, HS256 is checked against that secret only.
    jwt_env.setenv("RUNTIME_JWT_SECRET", JWT_SECRET)
    assert_401(server, token, "JWT signature is invalid")


def test_bad_signature(server: LiveServer) -> None:
    assert_401(server, hs256(claims(), "another-secret-" + "y" * 40), "JWT signature is invalid")
    token = hs256(claims())
    head, payload, _sig = token.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["roles"] = ["admin"]
    assert_401(
        server, f"{head}.{b64(json.dumps(tampered).encode())}.{_sig}", "JWT signature is invalid"
    )


def test_expired(server: LiveServer) -> None:
    exp = int(time.time()) - 120
    assert_401(server, hs256(claims(exp=exp)), "JWT expired at 20")


def test_not_yet_valid(server: LiveServer) -> None:
    assert_401(server, hs256(claims(nbf=int(time.time()) + 120)), "JWT is not valid yet")


def test_required_claims(server: LiveServer) -> None:
    assert_401(server, hs256(claims(exp=None)), "JWT lacks the required claim 'exp'")
    assert_401(server, hs256(claims(sub=None)), "JWT lacks the required claim 'sub'")
    assert_401(server, hs256(claims(roles="admin")), "JWT claim 'roles' must be a list")


def test_audience_and_issuer(server: LiveServer, jwt_env: pytest.MonkeyPatch) -> None:
    jwt_env.setenv("RUNTIME_JWT_ISSUER", "https://auth.example.com")
    jwt_env.setenv("RUNTIME_JWT_AUDIENCE", "swarm,swarm-dashboard")
    good = claims(iss="https://auth.example.com", aud="swarm-dashboard")
    assert whoami(server, hs256(good))[0] == 200
    assert_401(
        server,
        hs256({**good, "aud": "billing"}),
        "JWT audience is not accepted (expected: swarm, swarm-dashboard)",
    )
    assert_401(
        server,
        hs256({**good, "iss": "https://evil.example.com"}),
        "JWT issuer is not accepted (expected: https://auth.example.com)",
    )
    assert_401(server, hs256(claims(aud="swarm")), "JWT lacks the required claim 'iss'")


def test_audience_in_token_but_not_configured(server: LiveServer) -> None:
    assert_401(
        server,
        hs256(claims(aud="swarm")),
        "JWT audience is not accepted (expected: none (RUNTIME_JWT_AUDIENCE is not set))",
    )


def test_malformed_jwt(server: LiveServer) -> None:
    assert_401(server, "abc.def.ghi", "Malformed JWT")


def test_tokens_that_are_not_jwts_are_left_to_other_plugins(server: LiveServer) -> None:
    """No plugin knows these: the engine's own 401, not a JWT message."""
    for token in ("dev_abcdef", "swk_0123456789abcdef_secret", "opaque-token"):
        assert_401(server, token, "probe.whoami requires authentication")
    with server.client() as client:
        assert client.post("/fn/probe.ping", json={}).json() == {"value": "pong"}


def test_bad_configuration_names_the_variable(
    server: LiveServer, tmp_path: Path, jwt_env: pytest.MonkeyPatch
) -> None:
    """`startup` calls config(), so these stop start-up naming the variable."""
    plugin = server.runtime.plugins.get_plugin("plugins/auth_jwt.py")
    jwt_env.setenv("RUNTIME_JWT_SECRET", "short")
    with pytest.raises(plugin.JWTConfigError, match="RUNTIME_JWT_SECRET is 5 bytes; HS256 needs"):
        plugin.config()
    jwt_env.setenv("RUNTIME_JWT_SECRET", JWT_SECRET)
    (tmp_path / "bad.pem").write_text("not a key")
    jwt_env.setenv("RUNTIME_JWT_PUBLIC_KEY", str(tmp_path / "bad.pem"))
    with pytest.raises(plugin.JWTConfigError, match=r"RUNTIME_JWT_PUBLIC_KEY=.*bad.pem: not a PEM"):
        plugin.config()
    jwt_env.delenv("RUNTIME_JWT_PUBLIC_KEY")
    (tmp_path / "oct.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    jwt_env.setenv("RUNTIME_JWKS_FILE", str(tmp_path / "oct.json"))
    with pytest.raises(plugin.JWTConfigError, match="symmetric \\(oct\\) keys are not accepted"):
        plugin.config()


# -- swarm-runtime token ----------------------------------------------------------------


def test_cli_token_is_accepted(server: LiveServer) -> None:
    result = subprocess.run(
        [
            CLI,
            "token",
            "--user",
            "ops-1",
            "--tenant",
            "acme",
            "--role",
            "admin",
            "--role",
            "viewer",
            "--ttl",
            "15m",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(RUNTIME_JWT_SECRET=JWT_SECRET),
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    status, body = whoami(server, token)
    assert status == 200, body
    assert body["value"]["roles"] == ["admin", "viewer"]
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert decoded["exp"] - decoded["iat"] == 900


def test_cli_token_without_secret_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env().items() if not k.startswith("RUNTIME_JWT")}
    result = subprocess.run(
        [CLI, "token", "--user", "u", "--role", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error: RUNTIME_JWT_SECRET is not set" in result.stderr


def test_sign_token_helpers() -> None:
    from runtime.auth.tokens import parse_duration, sign_token

    assert [parse_duration(t) for t in ("90", "90s", "15m", "1h", "7d")] == [
        90,
        90,
        900,
        3600,
        604800,
    ]
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("1 week")
    token = sign_token(
        JWT_SECRET.encode(),
        user_id="u",
        tenant_id=None,
        roles=["viewer"],
        ttl_s=60,
        issuer="iss",
        audience="aud",
        now=1_000_000,
    )
    decoded = jwt.decode(
        token, JWT_SECRET, algorithms=["HS256"], audience="aud", options={"verify_exp": False}
    )
    assert decoded == {
        "sub": "u",
        "roles": ["viewer"],
        "iat": 1_000_000,
        "nbf": 1_000_000,
        "exp": 1_000_060,
        "iss": "iss",
        "aud": "aud",
    }
