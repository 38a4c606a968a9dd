"""Calling functions over real HTTP: results, validation, auth, and every error of DESIGN §6."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import AppFiles, LiveServer

NOTES = """
from runtime import query, mutation, action, internal_query, UserError

@mutation
async def add(ctx, text: str, tags: list | None = None, priority: int = 0):
    note_id = await ctx.db.insert("notes", {"text": text, "tags": tags or [], "priority": priority})
    return {"id": note_id, "attempt": ctx.attempt}

@query
async def get(ctx, id: str):
    note = await ctx.db.get("notes", id)
    if note is None:
        raise UserError("not_found", "Note not found")
    return note

@query
async def by_priority(ctx, priority: int):
    return await ctx.db.query("notes").with_index("by_priority", priority=priority).collect()

@query(public=True)
async def hello(ctx, name: str = "world"):
    return f"hello {name}"

@mutation
async def bad_write(ctx):
    await ctx.db.insert("notes", {"text": 42})

@query
async def crash(ctx):
    raise RuntimeError("secret internals")

@query(timeout_ms=50)
async def slow(ctx):
    await ctx.sql("SELECT pg_sleep(1)")

@mutation
async def write_in_query_guard(ctx):
    return True

@query
async def try_write(ctx):
    await ctx.db.insert("notes", {"text": "nope"})

@action
async def via_action(ctx, text: str):
    created = await ctx.run_mutation("notes.add", {"text": text})
    return await ctx.run_query("notes.secret_count", {})

@internal_query
async def secret_count(ctx):
    rows = await ctx.sql("SELECT count(*) AS n FROM notes")
    return rows[0]["n"]
"""

SCHEMA: dict[str, Any] = {
    "tables": {
        "notes": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "maxLength": 200},
                "tags": {"type": "array", "items": {"type": "string"}},
                "priority": {"type": "integer"},
            },
            "required": ["text"],
            "indexes": {"by_priority": ["priority"]},
        }
    },
    "functions": {
        "notes.add": {
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "text": {"type": "string", "maxLength": 200},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 10},
                },
                "required": ["text"],
            }
        },
        "notes.get": {
            "args": {
                "type": "object",
                "properties": {"id": {"type": "string", "format": "uuid"}},
                "required": ["id"],
            }
        },
        "notes.by_priority": {
            "args": {
                "type": "object",
                "properties": {"priority": {"type": "integer"}},
                "required": ["priority"],
            }
        },
        "notes.hello": {"args": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "notes.bad_write": {"args": {"type": "object"}},
        "notes.crash": {"args": {"type": "object"}},
        "notes.slow": {"args": {"type": "object"}},
        "notes.write_in_query_guard": {"args": {"type": "object"}},
        "notes.try_write": {"args": {"type": "object"}},
        "notes.via_action": {
            "args": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            }
        },
    },
}


@pytest.fixture
def notes_app(app_files: AppFiles) -> AppFiles:
    app_files.write_module("notes", NOTES)
    app_files.write_schema(SCHEMA)
    return app_files


@pytest.fixture
def server(notes_app: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(notes_app, dev=True)


@pytest.fixture
def client(server: LiveServer, dev_token: str) -> Iterator[httpx.Client]:
    with server.client(dev_token) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_mutation_then_query_round_trip(client: httpx.Client) -> None:
    r = client.post("/fn/notes.add", json={"text": "hi", "tags": ["a"], "priority": 3})
    assert r.status_code == 200, r.text
    value = r.json()["value"]
    assert value["attempt"] == 1
    assert r.headers["x-runtime-attempts"] == "1"
    assert r.headers["x-request-id"]
    note = client.post("/fn/notes.get", json={"id": value["id"]}).json()["value"]
    assert note["text"] == "hi" and note["tags"] == ["a"] and note["priority"] == 3
    assert note["_id"] == value["id"] and note["_creation_time"]
    listed = client.post("/fn/notes.by_priority", json={"priority": 3}).json()["value"]
    assert [n["_id"] for n in listed] == [value["id"]]


def test_action_calls_mutation_and_internal_query(client: httpx.Client) -> None:
    r = client.post("/fn/notes.via_action", json={"text": "x"})
    assert r.status_code == 200, r.text
    assert r.json() == {"value": 1}


def test_internal_function_is_404_over_http(client: httpx.Client) -> None:
    r = client.post("/fn/notes.secret_count", json={})
    assert r.status_code == 404
    assert error_of(r)["code"] == "not_found"


def test_unknown_function_404(client: httpx.Client) -> None:
    r = client.post("/fn/nope.nothing", json={})
    assert r.status_code == 404
    assert error_of(r) == {"code": "not_found", "message": "Unknown function 'nope.nothing'"}


def test_invalid_json_400(client: httpx.Client) -> None:
    r = client.post(
        "/fn/notes.add", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert error_of(r)["code"] == "invalid_json"


def test_non_object_body_400(client: httpx.Client) -> None:
    r = client.post("/fn/notes.add", json=[1, 2])
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "invalid_args"
    assert err["details"] == [{"path": "$", "message": "Expected `object`, got `array`"}]


def test_invalid_args_lists_path_and_message(client: httpx.Client) -> None:
    r = client.post("/fn/notes.add", json={"text": "ok", "priority": 11})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "invalid_args"
    assert err["details"] == [{"path": "$.priority", "message": "Expected `int` <= 10"}]
    r = client.post("/fn/notes.add", json={"text": "ok", "surprise": 1})
    assert error_of(r)["details"] == [
        {"path": "$", "message": "Object contains unknown field `surprise`"}
    ]
    r = client.post("/fn/notes.add", json={})
    assert error_of(r)["details"] == [
        {"path": "$", "message": "Object missing required field `text`"}
    ]
    r = client.post("/fn/notes.get", json={"id": "not-a-uuid"})
    assert r.status_code == 400 and error_of(r)["details"][0]["path"] == "$.id"


def test_empty_body_means_no_arguments(client: httpx.Client) -> None:
    r = client.post("/fn/notes.hello")
    assert r.status_code == 200 and r.json() == {"value": "hello world"}


def test_invalid_document_names_the_column(client: httpx.Client) -> None:
    r = client.post("/fn/notes.bad_write", json={})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "invalid_document"
    assert "text" in err["message"]


def test_user_error_maps_code_to_status(client: httpx.Client) -> None:
    r = client.post("/fn/notes.get", json={"id": "00000000-0000-0000-0000-000000000000"})
    assert r.status_code == 404
    assert error_of(r) == {"code": "not_found", "message": "Note not found"}
    assert r.headers["x-runtime-attempts"] == "1"  # the transaction ran once, then rolled back


def test_wrong_method_405(client: httpx.Client) -> None:
    r = client.get("/fn/notes.add")
    assert r.status_code == 405
    assert error_of(r)["code"] == "method_not_allowed"


def test_body_over_limit_413_without_reading_it(
    notes_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    server = serve(notes_app, dev=True, max_body_bytes=1024)
    with server.client(dev_token) as client:
        r = client.post(
            "/fn/notes.add", content=b"x" * 5000, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert error_of(r)["code"] == "payload_too_large"

        def chunks() -> Any:  # no Content-Length: refused while streaming
            for _ in range(100):
                yield b"x" * 100

        r = client.post("/fn/notes.add", content=chunks())
        assert r.status_code == 413


def test_statement_timeout_504(client: httpx.Client) -> None:
    r = client.post("/fn/notes.slow", json={})
    assert r.status_code == 504
    assert error_of(r)["code"] == "timeout"


def test_query_is_read_only(client: httpx.Client) -> None:
    r = client.post("/fn/notes.try_write", json={})
    assert r.status_code == 500
    assert error_of(r)["code"] == "internal"


def test_internal_error_hides_traceback_outside_dev(
    notes_app: AppFiles, serve: Callable[..., LiveServer]
) -> None:
    server = serve(notes_app, dev=False)
    from runtime.types import Identity

    async def as_admin(request: Any, runtime: Any) -> Identity:
        return Identity(user_id="u1", tenant_id="t1", roles=("admin",), kind="system")

    class Plugin:
        authenticate = staticmethod(as_admin)

    from runtime.hookspecs import hookimpl

    hookimpl(Plugin.authenticate)
    server.runtime.plugins.register(Plugin)
    with server.client() as client:
        r = client.post("/fn/notes.crash", json={})
        assert r.status_code == 500
        assert error_of(r) == {"code": "internal", "message": "Internal error."}
        assert "secret internals" not in r.text


def test_internal_error_shows_traceback_in_dev(client: httpx.Client) -> None:
    r = client.post("/fn/notes.crash", json={})
    assert r.status_code == 500
    err = error_of(r)
    assert "secret internals" in err["message"]
    assert "Traceback" in err["details"]["traceback"]


def test_non_public_function_requires_auth(server: LiveServer) -> None:
    with server.client() as anonymous:
        r = anonymous.post("/fn/notes.add", json={"text": "x"})
        assert r.status_code == 401
        assert error_of(r)["code"] == "unauthenticated"
        assert anonymous.post("/fn/notes.hello", json={}).status_code == 200
    with server.client("dev_wrong") as wrong:
        assert wrong.post("/fn/notes.add", json={"text": "x"}).status_code == 401


def test_health_ready_version_and_listing(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    assert client.get("/version").json()["name"] == "swarm-runtime"
    names = [f["name"] for f in client.get("/fn").json()["functions"]]
    assert "notes.add" in names and "notes.secret_count" not in names
    spec = client.get("/openapi.json").json()
    assert "/fn/notes.add" in spec["paths"]
    r = client.get("/nowhere")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"


def test_request_id_is_echoed(client: httpx.Client) -> None:
    r = client.post("/fn/notes.hello", json={}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
