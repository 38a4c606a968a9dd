"""Hot reload: saves serve new code, broken saves keep the old code serving, nothing drops."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import AppFiles, LiveServer

SCHEMA: dict[str, Any] = {
    "tables": {
        "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        }
    },
    "functions": {
        "greet.hello": {"args": {"type": "object", "properties": {}}},
        "greet.slow": {"args": {"type": "object", "properties": {}}},
    },
}


def module(version: str) -> str:
    return f'''
import asyncio
from runtime import query

@query(public=True)
async def hello(ctx):
    return "{version}"

@query(public=True)
async def slow(ctx):
    await asyncio.sleep(1.0)
    return "{version}"
'''


PING = "from runtime import query\n\n@query(public=True)\nasync def NAME(ctx):\n    return 'pong'\n"


@pytest.fixture
def reload_app(app_files: AppFiles) -> AppFiles:
    app_files.write_module("greet", module("v1"))
    app_files.write_schema(SCHEMA)
    return app_files


@pytest.fixture
def server(reload_app: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(reload_app, dev=True, reload=True)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def hello(client: httpx.Client) -> Any:
    r = client.post("/fn/greet.hello", json={})
    return r.json().get("value") if r.status_code == 200 else r.status_code


def status(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/_runtime/status").json()
    return result


def reloads(server: LiveServer) -> int:
    return len(server.runtime.reloader.history) if server.runtime.reloader else 0


def save_and_wait(server: LiveServer, write: Callable[[], Any]) -> dict[str, Any]:
    """Write, then wait until the reloader recorded one more outcome; return it."""
    before = reloads(server)
    write()
    wait_for(lambda: reloads(server) > before)
    outcome = server.runtime.reloader.history[-1]  # type: ignore[union-attr]
    return dict(vars(outcome))


def test_save_serves_new_code(
    server: LiveServer, reload_app: AppFiles, client: httpx.Client
) -> None:
    assert hello(client) == "v1"
    outcome = save_and_wait(server, lambda: reload_app.write_module("greet", module("v2")))
    assert outcome["ok"] and outcome["changed"] == ["greet.hello", "greet.slow"]
    assert hello(client) == "v2"
    body = status(client)
    assert body["reload"]["serving_version"] == server.runtime.registry.version  # type: ignore[union-attr]
    assert body["reload"]["last"]["ok"] is True


BROKEN: dict[str, Callable[[AppFiles], Any]] = {
    "syntax-error": lambda f: f.write_module("greet", module("v9") + "\ndef oops(:\n"),
    "import-error": lambda f: f.write_module(
        "greet", "import no_such_module_here\n" + module("v9")
    ),
    "exception-at-import": lambda f: f.write_module(
        "greet", module("v9") + "\nraise ValueError('boom')\n"
    ),
    "signature-mismatch": lambda f: f.write_module(
        "greet", module("v9").replace("async def hello(ctx):", "async def hello(ctx, who: str):")
    ),
    "sync-def": lambda f: f.write_module(
        "greet", module("v9").replace("async def hello", "def hello")
    ),
    "invalid-schema-json": lambda f: f.schema_path.write_text('{"tables": {, "functions": {}}'),
    "schema-meta-error": lambda f: f.write_schema(
        {
            **SCHEMA,
            "tables": {"items": {"type": "object", "properties": {"name": {"type": "strng"}}}},
        }
    ),
    "destructive-schema-change": lambda f: f.write_schema({**SCHEMA, "tables": {}}),
}

EXPECTED_ERROR = {
    "syntax-error": "greet.py:",
    "import-error": "No module named 'no_such_module_here'",
    "exception-at-import": "ValueError: boom",
    "signature-mismatch": "'who'",
    "sync-def": "must be `async def`",
    "invalid-schema-json": "invalid JSON",
    "schema-meta-error": "tables.items.properties.name",
    "destructive-schema-change": "--allow-destructive",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_save_keeps_old_code_and_fix_recovers(
    kind: str, server: LiveServer, reload_app: AppFiles, client: httpx.Client
) -> None:
    version = server.runtime.registry.version  # type: ignore[union-attr]
    outcome = save_and_wait(server, lambda: BROKEN[kind](reload_app))
    assert not outcome["ok"]
    assert EXPECTED_ERROR[kind] in outcome["error"]
    assert hello(client) == "v1"  # still serving the old code
    body = status(client)
    assert body["reload"]["serving_version"] == version
    assert body["reload"]["last"]["ok"] is False
    assert EXPECTED_ERROR[kind] in body["reload"]["last_error"]["error"]
    if kind == "syntax-error":
        assert "greet.py:14" in outcome["error"]  # file:line of the broken line

    def fix() -> None:
        reload_app.write_schema(SCHEMA)
        reload_app.write_module("greet", module("v3"))

    outcome = save_and_wait(server, fix)
    assert outcome["ok"], outcome["error"]
    assert hello(client) == "v3"


def test_in_flight_call_finishes_on_old_code(server: LiveServer, reload_app: AppFiles) -> None:
    results: list[Any] = []

    def call_slow() -> None:
        with server.client() as c:
            results.append(c.post("/fn/greet.slow", json={}).json()["value"])

    thread = threading.Thread(target=call_slow)
    thread.start()
    time.sleep(0.2)  # the slow call is running v1
    save_and_wait(server, lambda: reload_app.write_module("greet", module("v2")))
    with server.client() as c:
        assert hello(c) == "v2"
    thread.join(timeout=10)
    assert results == ["v1"]


def test_modules_appear_disappear_and_rename(
    server: LiveServer, reload_app: AppFiles, client: httpx.Client
) -> None:
    schema = json.loads(json.dumps(SCHEMA))
    schema["functions"]["extra.ping"] = {"args": {"type": "object", "properties": {}}}

    def add() -> None:
        reload_app.write_schema(schema)
        reload_app.write_module(
            "extra",
            PING.replace("NAME", "ping"),
        )

    outcome = save_and_wait(server, add)
    assert outcome["ok"] and outcome["added"] == ["extra.ping"]
    assert client.post("/fn/extra.ping", json={}).json() == {"value": "pong"}

    schema["functions"]["extra.pong"] = schema["functions"].pop("extra.ping")

    def rename() -> None:
        reload_app.write_schema(schema)
        reload_app.write_module(
            "extra",
            PING.replace("NAME", "pong"),
        )

    outcome = save_and_wait(server, rename)
    assert (
        outcome["ok"]
        and outcome["added"] == ["extra.pong"]
        and outcome["removed"] == ["extra.ping"]
    )
    assert client.post("/fn/extra.ping", json={}).status_code == 404
    assert client.post("/fn/extra.pong", json={}).json() == {"value": "pong"}

    del schema["functions"]["extra.pong"]

    def delete() -> None:
        reload_app.write_schema(schema)
        (reload_app.functions / "extra.py").unlink()

    outcome = save_and_wait(server, delete)
    assert outcome["ok"] and outcome["removed"] == ["extra.pong"]
    assert client.post("/fn/extra.pong", json={}).status_code == 404


def test_helpers_imported_between_modules_are_never_stale(
    server: LiveServer, reload_app: AppFiles, client: httpx.Client
) -> None:
    def write(value: str) -> None:
        (reload_app.functions / "_helpers.py").write_text(f"VALUE = {value!r}\n")
        reload_app.write_module(
            "greet",
            module("x")
            .replace('return "x"', "return VALUE", 1)
            .replace(
                "from runtime import query",
                "from runtime import query\nfrom ._helpers import VALUE",
            ),
        )

    assert save_and_wait(server, lambda: write("first"))["ok"]
    assert hello(client) == "first"
    # only the helper changes: the module importing it must see the new value
    outcome = save_and_wait(
        server, lambda: (reload_app.functions / "_helpers.py").write_text("VALUE = 'second'\n")
    )
    assert outcome["ok"]
    assert hello(client) == "second"


def test_burst_of_saves_is_one_reload(
    server: LiveServer, reload_app: AppFiles, client: httpx.Client
) -> None:
    before = reloads(server)
    for i in range(10):  # like a git checkout touching many files at once
        (reload_app.functions / f"_burst_{i}.py").write_text(f"X = {i}\n")
    reload_app.write_module("greet", module("burst"))
    wait_for(lambda: hello(client) == "burst")
    time.sleep(0.5)  # anything still pending would have reloaded by now
    assert reloads(server) - before == 1


def test_no_failed_request_during_20_reloads(server: LiveServer, reload_app: AppFiles) -> None:
    failures: list[Any] = []
    seen: set[str] = set()
    stop = asyncio.Event()

    async def caller() -> int:
        calls = 0
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = await c.post("/fn/greet.hello", json={})
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        seen.add(r.json()["value"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                calls += 1
        return calls

    async def main() -> int:
        tasks = [asyncio.create_task(caller()) for _ in range(4)]
        for i in range(20):
            before = reloads(server)
            reload_app.write_module("greet", module(f"r{i}"))
            deadline = time.monotonic() + 10
            while reloads(server) == before:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        stop.set()
        return sum(await asyncio.gather(*tasks))

    calls = asyncio.run(main())
    assert failures == []
    assert calls > 100
    assert "r19" in seen
    assert all(o.ok for o in server.runtime.reloader.history[-20:])  # type: ignore[union-attr]


PLUGIN = """
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from runtime import hookimpl

STARTED = []


async def hello(request):
    return PlainTextResponse("{text}")


@hookimpl
def routes():
    return [Route("/hello", hello)]


@hookimpl
async def startup(runtime):
    STARTED.append("{text}")
"""


def test_plugin_save_swaps_that_plugin(
    reload_app: AppFiles, serve: Callable[..., LiveServer]
) -> None:
    reload_app.write_plugin("greeter", PLUGIN.replace("{text}", "v1"))
    server = serve(reload_app, dev=True, reload=True)
    with server.client() as client:
        assert client.get("/hello").text == "v1"
        outcome = save_and_wait(
            server, lambda: reload_app.write_plugin("greeter", PLUGIN.replace("{text}", "v2"))
        )
        assert outcome["ok"] and outcome["plugins"] == ["plugins/greeter.py"]
        assert client.get("/hello").text == "v2"
        module = server.runtime.plugins.get_plugin("plugins/greeter.py")
        assert module.STARTED == ["v2"]  # the new module's startup hook ran

        # a broken plugin keeps the previous one serving, and says why
        outcome = save_and_wait(
            server, lambda: reload_app.write_plugin("greeter", "import nowhere_to_be_found\n")
        )
        assert not outcome["ok"] and "greeter.py" in outcome["error"]
        assert client.get("/hello").text == "v2"
        assert hello(client) == "v1"  # functions keep serving too

        outcome = save_and_wait(server, lambda: (reload_app.plugins / "greeter.py").unlink())
        assert outcome["ok"]
        assert client.get("/hello").status_code == 404
