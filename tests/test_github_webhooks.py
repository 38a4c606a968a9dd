"""`POST /webhooks/github` (plugins/github_webhooks.py + app_functions/github.py) with real
payloads from octokit/webhooks (tests/fixtures/github, MIT): signatures, rotation, size
limit, ping, and deliveries recorded once in the transaction of their effect."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, AppFiles, LiveServer, sql
from tests.plugin_app import install, module_server, repo_function_entry, repo_tables

FIXTURES = Path(__file__).parent / "fixtures" / "github"
SECRET = "webhook-secret-1"
LIMIT = 64 * 1024

# GitHub's documented test vector ("Validating webhook deliveries").
VECTOR_SECRET = b"It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def github_files(
    root: Path, modules: dict[str, str] | None = None, tables: dict[str, Any] | None = None
) -> AppFiles:
    files = AppFiles(root / "app")
    files.functions.mkdir(parents=True)
    files.plugins.mkdir()
    return install(
        files,
        ("github_webhooks",),
        repo_modules=("_ticket_ops",) if modules else ("github", "_ticket_ops"),
        modules=modules,
        functions={"github.on_event": repo_function_entry("github.on_event")},
        tables=tables,
    )


RECORDER = """
from runtime import hookimpl

DELIVERED = []


@hookimpl
def webhook_delivered(provider, outcome, status, duration_s):
    DELIVERED.append((provider, outcome, status))
"""


@pytest.fixture(scope="module")
def server(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    files = github_files(tmp_path_factory.mktemp("github"))
    files.write_plugin("recorder", RECORDER)
    with module_server(pg_server, template_db, files, max_body_bytes=LIMIT) as live:
        yield live


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", SECRET)
    return monkeypatch


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def sign(body: bytes, secret: str | bytes = SECRET) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def deliver(
    server: LiveServer,
    event: str,
    body: bytes,
    *,
    delivery: str | None = None,
    signature: str | None = "sign",
    content_type: str = "application/json",
) -> httpx.Response:
    headers = {
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "content-type": content_type,
        "user-agent": "GitHub-Hookshot/test",
    }
    if signature == "sign":
        headers["x-hub-signature-256"] = sign(body)
    elif signature is not None:
        headers["x-hub-signature-256"] = signature
    with server.client() as client:
        return client.post("/webhooks/github", content=body, headers=headers)


def deliveries(server: LiveServer, delivery: str) -> list[tuple[Any, ...]]:
    return sql(
        server.runtime.database_url,
        "SELECT event, action, outcome FROM github_deliveries WHERE delivery_id = %s",
        delivery,
    )


# -- signatures ------------------------------------------------------------------------------


def test_github_documented_test_vector(
    server: LiveServer, webhook_secret: pytest.MonkeyPatch
) -> None:
    plugin = server.runtime.plugins.get_plugin("plugins/github_webhooks.py")
    assert plugin.signature(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    webhook_secret.setenv("GITHUB_WEBHOOK_SECRET", VECTOR_SECRET.decode())
    verify = server.runtime.plugins.hook.verify_webhook
    headers = {"x-hub-signature-256": VECTOR_SIGNATURE}
    assert verify(provider="github", headers=headers, body=VECTOR_BODY) is True
    assert verify(provider="github", headers=headers, body=VECTOR_BODY + b" ") is False
    assert verify(provider="github", headers={}, body=VECTOR_BODY) is False
    assert verify(provider="stripe", headers=headers, body=VECTOR_BODY) is None
    # And over HTTP: the vector's body is no JSON, which a ping never parses.
    response = deliver(server, "ping", VECTOR_BODY, signature=VECTOR_SIGNATURE)
    assert (response.status_code, response.json()) == (200, {"status": "pong"})


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=", "sha256=" + "0" * 64, "sha1=" + "0" * 40, "sign-with-other-secret"],
)
def test_missing_or_wrong_signature_is_401_and_nothing_runs(
    server: LiveServer, signature: str | None
) -> None:
    body = fixture("issues.opened")
    if signature == "sign-with-other-secret":
        signature = sign(body, "not-the-secret")
    delivery = str(uuid.uuid4())
    response = deliver(server, "issues", body, delivery=delivery, signature=signature)
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "unauthenticated", "message": "Missing or invalid X-Hub-Signature-256"}
    }
    assert deliveries(server, delivery) == []


def test_signature_is_over_the_raw_bytes(server: LiveServer) -> None:
    body = fixture("issues.opened")
    reencoded = json.dumps(json.loads(body)).encode()  # same JSON, other bytes
    assert reencoded != body
    delivery = str(uuid.uuid4())
    response = deliver(server, "issues", reencoded, delivery=delivery, signature=sign(body))
    assert response.status_code == 401
    assert deliveries(server, delivery) == []


def test_rotation_accepts_every_listed_secret(
    server: LiveServer, webhook_secret: pytest.MonkeyPatch
) -> None:
    webhook_secret.setenv("GITHUB_WEBHOOK_SECRET", "old-secret, new-secret")
    body = fixture("push")
    for secret in ("old-secret", "new-secret"):
        response = deliver(server, "push", body, signature=sign(body, secret))
        assert response.status_code == 202, response.text
    assert deliver(server, "push", body, signature=sign(body, "third")).status_code == 401


def test_unset_secret_refuses_everything(
    server: LiveServer, webhook_secret: pytest.MonkeyPatch
) -> None:
    webhook_secret.delenv("GITHUB_WEBHOOK_SECRET")
    body = fixture("push")
    assert deliver(server, "push", body, signature=sign(body, "")).status_code == 401


# -- deliveries ------------------------------------------------------------------------------


def test_ping_answers_200(server: LiveServer) -> None:
    delivery = str(uuid.uuid4())
    response = deliver(server, "ping", fixture("ping"), delivery=delivery)
    assert (response.status_code, response.json()) == (200, {"status": "pong"})
    assert deliveries(server, delivery) == []


def test_unhandled_event_is_202_ignored_and_recorded(server: LiveServer) -> None:
    delivery = str(uuid.uuid4())
    response = deliver(server, "issues", fixture("issues.opened"), delivery=delivery)
    assert response.status_code == 202
    assert response.json() == {"status": "ignored", "delivery_id": delivery}
    assert deliveries(server, delivery) == [("issues", "opened", "ignored")]


def test_redelivery_is_a_duplicate_with_one_row(server: LiveServer) -> None:
    delivery = str(uuid.uuid4())
    body = fixture("pull_request.closed")
    first = deliver(server, "pull_request", body, delivery=delivery)
    second = deliver(server, "pull_request", body, delivery=delivery)
    assert first.status_code == 202 and first.json()["status"] == "ignored"
    assert (second.status_code, second.json()) == (
        200,
        {"status": "duplicate", "delivery_id": delivery},
    )
    assert deliveries(server, delivery) == [("pull_request", "closed", "ignored")]


def test_body_over_the_limit_is_413(server: LiveServer) -> None:
    body = b'{"padding": "' + b"x" * LIMIT + b'"}'
    delivery = str(uuid.uuid4())
    response = deliver(server, "issues", body, delivery=delivery)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(10):
            yield b"x" * (LIMIT // 8)

    with server.client() as client:
        streamed = client.post(
            "/webhooks/github",
            content=chunks(),
            headers={
                "x-github-event": "issues",
                "x-github-delivery": delivery,
                "x-hub-signature-256": sign(b""),
            },
        )
    assert streamed.status_code == 413
    assert deliveries(server, delivery) == []


def test_form_encoded_payload(server: LiveServer) -> None:
    payload = fixture("issues.opened").decode()
    body = httpx.QueryParams({"payload": payload}).__str__().encode()
    delivery = str(uuid.uuid4())
    response = deliver(
        server, "issues", body, delivery=delivery, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 202, response.text
    assert deliveries(server, delivery) == [("issues", "opened", "ignored")]


def test_bad_requests(server: LiveServer) -> None:
    bad_json = deliver(server, "issues", b"{not json")
    assert bad_json.status_code == 400
    assert bad_json.json()["error"] == {
        "code": "invalid_json",
        "message": "The webhook payload is not valid JSON",
    }
    assert deliver(server, "issues", b"[1, 2]").status_code == 400
    with server.client() as client:
        body = fixture("push")
        missing = client.post(
            "/webhooks/github", content=body, headers={"x-hub-signature-256": sign(body)}
        )
    assert missing.status_code == 400
    assert "X-GitHub-Event and X-GitHub-Delivery" in missing.json()["error"]["message"]


def test_every_delivery_is_reported_to_webhook_delivered(server: LiveServer) -> None:
    delivered = server.runtime.plugins.get_plugin("plugins/recorder.py").DELIVERED
    delivered.clear()
    delivery = str(uuid.uuid4())
    body = fixture("issues.opened")
    deliver(server, "ping", fixture("ping"))
    deliver(server, "issues", body, delivery=delivery)
    deliver(server, "issues", body, delivery=delivery)
    deliver(server, "issues", body, signature=None)
    deliver(server, "issues", b"{not json")
    assert delivered == [
        ("github", "processed", 200),
        ("github", "ignored", 202),
        ("github", "duplicate", 200),
        ("github", "rejected", 401),
        ("github", "invalid", 400),
    ]


# -- the effect and its record commit together -------------------------------------------------

HANDLED = (
    (REPO / "app_functions" / "github.py").read_text()
    + '''

async def handle_event(ctx, event, action, payload):
    """Test handler: an `issues` event writes an effect row; `fail` in the title aborts."""
    if event != "issues":
        return "ignored", None
    if payload["issue"]["title"] == "fail":
        raise UserError("conflict", "the effect failed")
    await ctx.db.insert("effects", {"note": payload["issue"]["title"]})
    return "processed", None


from runtime import UserError  # noqa: E402
'''
)
EFFECTS = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}


@pytest.fixture
def handled(tmp_path: Path, serve: Callable[..., LiveServer]) -> LiveServer:
    files = github_files(
        tmp_path, modules={"github": HANDLED}, tables={**repo_tables(), "effects": EFFECTS}
    )
    return serve(files)


def effects(server: LiveServer) -> list[tuple[Any, ...]]:
    return sql(server.runtime.database_url, "SELECT note FROM effects")


def issue(title: str) -> bytes:
    payload = json.loads(fixture("issues.opened"))
    payload["issue"]["title"] = title
    return json.dumps(payload).encode()


def test_processed_delivery_has_one_effect_even_when_redelivered(handled: LiveServer) -> None:
    delivery = str(uuid.uuid4())
    first = deliver(handled, "issues", issue("one"), delivery=delivery)
    assert (first.status_code, first.json()) == (
        200,
        {"status": "processed", "delivery_id": delivery},
    )
    second = deliver(handled, "issues", issue("one"), delivery=delivery)
    assert second.json()["status"] == "duplicate"
    assert effects(handled) == [("one",)]
    assert deliveries(handled, delivery) == [("issues", "opened", "processed")]


def test_concurrent_copies_of_a_delivery_have_one_effect(handled: LiveServer) -> None:
    delivery = str(uuid.uuid4())
    statuses: list[str] = []

    def send() -> None:
        statuses.append(
            deliver(handled, "issues", issue("race"), delivery=delivery).json()["status"]
        )

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == ["duplicate", "duplicate", "duplicate", "processed"]
    assert effects(handled) == [("race",)]


def test_failed_effect_records_nothing_so_the_redelivery_runs(handled: LiveServer) -> None:
    delivery = str(uuid.uuid4())
    failed = deliver(handled, "issues", issue("fail"), delivery=delivery)
    assert failed.status_code == 409
    assert deliveries(handled, delivery) == []
    retried = deliver(handled, "issues", issue("ok"), delivery=delivery)
    assert retried.json()["status"] == "processed"
    assert effects(handled) == [("ok",)]


def test_missing_handler_is_500(tmp_path: Path, serve: Callable[..., LiveServer]) -> None:
    files = github_files(tmp_path, modules={"other": "X = 1\n"})
    schema = json.loads(files.schema_path.read_text())
    del schema["functions"]["github.on_event"]
    files.write_schema(schema)
    response = deliver(serve(files), "issues", fixture("issues.opened"))
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
