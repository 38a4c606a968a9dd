"""One structured log line per call, and never an argument value or a credential in any line."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runtime.logs import JSONFormatter
from tests.conftest import AppFiles, LiveServer

VAULT = """
from runtime import mutation, query, UserError

@mutation
async def store(ctx, name: str, api_token: str):
    await ctx.db.insert("vault", {"name": name, "token": api_token})
    return {"stored": len(api_token)}

@query
async def check(ctx, api_token: str):
    raise UserError("forbidden", "Token refused")
"""

SCHEMA: dict[str, Any] = {
    "tables": {
        "vault": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "token": {"type": "string"}},
            "required": ["name", "token"],
        }
    },
    "functions": {
        "vault.store": {
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "api_token": {"type": "string"},
                },
                "required": ["name", "api_token"],
            }
        },
        "vault.check": {
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"api_token": {"type": "string"}},
                "required": ["api_token"],
            }
        },
    },
}

SECRET = "sk_live_51HxQ7cLoGsEcReT0x9f3a"


class Lines(logging.Handler):
    """Every record of every logger, formatted as production does (JSON) and as dev does."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.json = JSONFormatter()
        self.text = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def rendered(self) -> list[str]:
        return [f(r) for r in self.records for f in (self.json.format, self.text.format)]

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(self.json.format(r)) for r in self.records if r.name == "runtime.calls"]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def server(app_files: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    app_files.write_module("vault", VAULT)
    app_files.write_schema(SCHEMA)
    return serve(app_files, dev=True)


def test_one_json_line_per_call(server: LiveServer, dev_token: str, lines: Lines) -> None:
    with server.client(dev_token) as client:
        ok = client.post("/fn/vault.store", json={"name": "a", "api_token": "x"})
        refused = client.post(
            "/fn/vault.check", json={"api_token": "x"}, headers={"x-request-id": "req-42"}
        )
    assert ok.status_code == 200 and refused.status_code == 403
    calls = lines.calls()
    assert len(calls) == 2
    first, second = calls
    assert first["request_id"] == ok.headers["x-request-id"]
    assert {
        k: first[k] for k in ("function", "kind", "status", "code", "attempts", "tenant_id")
    } == {
        "function": "vault.store",
        "kind": "mutation",
        "status": 200,
        "code": None,
        "attempts": 1,
        "tenant_id": "dev",
    }
    assert 0 < first["duration_ms"] < 10_000
    assert first["level"] == "info" and first["logger"] == "runtime.calls"
    assert second["request_id"] == "req-42"
    assert (second["status"], second["code"]) == (403, "forbidden")


def test_dev_lines_read_well(server: LiveServer, dev_token: str, lines: Lines) -> None:
    with server.client(dev_token) as client:
        r = client.post("/fn/vault.store", json={"name": "a", "api_token": "x"})
    (record,) = [r for r in lines.records if r.name == "runtime.calls"]
    assert re.fullmatch(
        rf"vault\.store 200 \d+\.\d ms attempts=1 tenant=dev request={r.headers['x-request-id']}",
        record.getMessage(),
    )


def test_no_argument_value_or_credential_is_logged(
    server: LiveServer, dev_token: str, lines: Lines
) -> None:
    with server.client(dev_token) as client:
        assert (
            client.post("/fn/vault.store", json={"name": "n", "api_token": SECRET}).status_code
            == 200
        )
        # refused by the function, by validation (twice), and a body that is not JSON
        assert client.post("/fn/vault.check", json={"api_token": SECRET}).status_code == 403
        assert (
            client.post("/fn/vault.store", json={"name": SECRET, "api_token": SECRET}).status_code
            == 400
        )
        assert (
            client.post(
                "/fn/vault.store", json={"name": "n", "api_token": SECRET, "x": SECRET}
            ).status_code
            == 400
        )
        assert (
            client.post("/fn/vault.store", content=f'{{"api_token": "{SECRET}"').status_code == 400
        )
    with server.client(f"{SECRET}-as-a-bearer") as stranger:
        assert (
            stranger.post("/fn/vault.store", json={"name": "n", "api_token": SECRET}).status_code
            == 401
        )
    assert len(lines.calls()) == 6
    rendered = lines.rendered()
    assert rendered, "the calls were logged"
    for line in rendered:
        assert SECRET not in line
        assert dev_token not in line


WEBHOOK_PLUGIN = """
from starlette.responses import JSONResponse
from starlette.routing import Route
from runtime import hookimpl

async def receive(request):
    request.app.state.runtime.notify_webhook_delivered("acme", "duplicate", 200, 0.0042)
    return JSONResponse({"status": "duplicate"})

@hookimpl
def routes():
    return [Route("/webhooks/acme", receive, methods=["POST"])]
"""


def test_one_line_per_webhook_delivery(
    app_files: AppFiles, serve: Callable[..., LiveServer], lines: Lines
) -> None:
    app_files.write_plugin("acme_webhooks", WEBHOOK_PLUGIN)
    server = serve(app_files)
    with server.client() as client:
        assert client.post("/webhooks/acme", content=SECRET.encode()).status_code == 200
    (record,) = [r for r in lines.records if r.name == "runtime.webhooks"]
    assert record.getMessage() == "acme duplicate 200 4.2 ms"
    entry = json.loads(JSONFormatter().format(record))
    assert {k: entry[k] for k in ("provider", "outcome", "status", "duration_ms")} == {
        "provider": "acme",
        "outcome": "duplicate",
        "status": 200,
        "duration_ms": 4.2,
    }
    assert not any(SECRET in line for line in lines.rendered())


def test_direct_json_line_equals_the_logging_path() -> None:
    """The production fast path (no LogRecord) writes exactly what JSONFormatter would."""
    import io

    from runtime.defaults import call_log
    from runtime.logs import BatchingStreamHandler
    from runtime.types import CallInfo

    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    info = CallInfo("r-1", "tickets.claim", "mutation", 409, "conflict", 0.0123, 2, "acme", "u1")
    try:
        call_log.call_finished(info)  # direct: the JSON handler is the only reader
        root.addHandler(logging.NullHandler())  # another reader: through logging
        call_log.call_finished(info)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        handler.close()
    direct, logged = (json.loads(line) for line in stream.getvalue().splitlines())
    direct.pop("ts"), logged.pop("ts")
    assert direct == logged
    assert direct["msg"] == "tickets.claim 409 conflict 12.3 ms attempts=2 tenant=acme request=r-1"
