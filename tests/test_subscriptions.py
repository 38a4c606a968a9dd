"""Query subscriptions over `GET /ws`, against real servers and a real PostgreSQL: initial
results, pushes on relevant commits only, errors, auth, limits, NOTIFY across two servers,
re-runs after a hot reload; and the SQL table extraction on its own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from runtime.subscriptions.tables import TableAccess, parse_changes, parse_sql, sql_tables
from tests.conftest import AppFiles, LiveServer

NOTES = """
from runtime import query, mutation, internal_query, UserError

@query
async def texts(ctx):
    rows = await ctx.db.query("notes").order("asc", "text").collect()
    return [r["text"] for r in rows]

@query(public=True)
async def count_sql(ctx):
    rows = await ctx.sql("SELECT count(*) AS n FROM notes")
    return rows[0]["n"]

@query(public=True)
async def by_priority(ctx, priority: int):
    rows = await ctx.db.query("notes").where("priority", "=", priority).collect()
    return sorted(r["text"] for r in rows)

@query(permission="notes:admin")
async def guarded(ctx):
    return "secret"

@query(permission="notes:read")
async def readable(ctx):
    return "ok"

@internal_query
async def internal(ctx):
    return 1

@mutation(public=True)
async def add(ctx, text: str, priority: int = 0):
    return await ctx.db.insert("notes", {"text": text, "priority": priority})

@mutation(public=True)
async def reprioritize(ctx, id: str, priority: int):
    await ctx.db.patch("notes", id, {"priority": priority})

@mutation(public=True)
async def add_then_fail(ctx, text: str):
    await ctx.db.insert("notes", {"text": text, "priority": 0})
    raise UserError("conflict", "rolled back")

@mutation(public=True)
async def add_other(ctx, name: str):
    return await ctx.db.insert("other", {"name": name})
"""

AUTH_PLUGIN = """
from runtime import Identity, Unauthenticated, hookimpl

@hookimpl
async def authenticate(request, runtime):
    header = request.headers.get("authorization", "")
    if header == "Bearer reader-token":
        return Identity(user_id="u1", tenant_id="t1", roles=("viewer",),
                        permissions=frozenset({"notes:read"}))
    if header == "Bearer revoked-token":
        raise Unauthenticated("This token was revoked")
    return None
"""

ARGS: dict[str, Any] = {"type": "object", "properties": {}}
SCHEMA: dict[str, Any] = {
    "tables": {
        "notes": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "priority": {"type": "integer"}},
            "required": ["text"],
        },
        "other": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
    },
    "functions": {
        "notes.texts": {"args": ARGS},
        "notes.count_sql": {"args": ARGS},
        "notes.by_priority": {
            "args": {
                "type": "object",
                "properties": {"priority": {"type": "integer"}},
                "required": ["priority"],
            }
        },
        "notes.guarded": {"args": ARGS},
        "notes.readable": {"args": ARGS},
        "notes.add": {
            "args": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "priority": {"type": "integer"}},
                "required": ["text"],
            }
        },
        "notes.reprioritize": {
            "args": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "priority": {"type": "integer"}},
                "required": ["id", "priority"],
            }
        },
        "notes.add_then_fail": {
            "args": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            }
        },
        "notes.add_other": {
            "args": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            }
        },
    },
}

PUSH_TIMEOUT_S = 10.0  # a pushed result must arrive within this
QUIET_S = 0.6  # how long "no push" is watched for (the debounce is 15 ms)


@pytest.fixture
def notes_app(app_files: AppFiles) -> AppFiles:
    app_files.write_module("notes", NOTES)
    app_files.write_plugin("reader_auth", AUTH_PLUGIN)
    app_files.write_schema(SCHEMA)
    return app_files


@pytest.fixture
def server(notes_app: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(notes_app, dev=True)


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


def open_ws(server: LiveServer, token: str | None = None) -> ClientConnection:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return connect(ws_url(server), additional_headers=headers, open_timeout=10, close_timeout=2)


@pytest.fixture
def ws(server: LiveServer, dev_token: str) -> Iterator[ClientConnection]:
    with open_ws(server, dev_token) as conn:
        yield conn


def send(conn: ClientConnection, **message: Any) -> None:
    conn.send(json.dumps(message))


def recv(conn: ClientConnection, timeout: float = PUSH_TIMEOUT_S) -> dict[str, Any]:
    frame = json.loads(conn.recv(timeout=timeout))
    assert isinstance(frame, dict)
    return frame


def assert_quiet(conn: ClientConnection, wait: float = QUIET_S) -> None:
    with pytest.raises(TimeoutError):
        frame = conn.recv(timeout=wait)
        raise AssertionError(f"unexpected frame {frame!r}")


def subscribe(conn: ClientConnection, id: str, function: str, **args: Any) -> dict[str, Any]:
    send(conn, type="subscribe", id=id, function=function, args=args)
    return recv(conn)


def call(server: LiveServer, function: str, **args: Any) -> Any:
    with server.client() as client:
        r = client.post(f"/fn/{function}", json=args)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def runs(server: LiveServer) -> int:
    """Query runs so far, once the hub is listening and no run is pending."""
    hub = server.runtime.subscriptions
    assert hub is not None
    wait_for(lambda: hub.settled)
    return hub.runs


def wait_for(predicate: Callable[[], bool], timeout: float = PUSH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- results and pushes -----------------------------------------------------------------


def test_subscribe_gets_result_then_pushes_on_write(
    server: LiveServer, ws: ClientConnection
) -> None:
    assert subscribe(ws, "s1", "notes.texts") == {"type": "result", "id": "s1", "value": []}
    call(server, "notes.add", text="b")
    assert recv(ws) == {"type": "result", "id": "s1", "value": ["b"]}
    call(server, "notes.add", text="a")
    assert recv(ws) == {"type": "result", "id": "s1", "value": ["a", "b"]}
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert "swarm_runtime_subscriptions 1.0" in metrics
    assert "swarm_runtime_ws_connections 1.0" in metrics
    # Subscription runs are not calls: they have counters of their own (process-wide, so
    # at least this hub's 3 runs and 3 pushes).
    totals = dict(
        line.split()
        for line in metrics.splitlines()
        if line.startswith("swarm_runtime_subscription_")
    )
    assert float(totals["swarm_runtime_subscription_runs_total"]) >= 3
    assert float(totals["swarm_runtime_subscription_pushes_total"]) >= 3


def test_raw_sql_query_is_pushed_on_write_of_its_table(
    server: LiveServer, ws: ClientConnection
) -> None:
    assert subscribe(ws, "n", "notes.count_sql")["value"] == 0
    call(server, "notes.add", text="x")
    assert recv(ws) == {"type": "result", "id": "n", "value": 1}
    before = runs(server)
    call(server, "notes.add_other", name="y")
    assert_quiet(ws)
    assert runs(server) == before  # `other` is not in the query's read set: not even re-run


def test_write_to_unrelated_table_neither_reruns_nor_pushes(
    server: LiveServer, ws: ClientConnection
) -> None:
    subscribe(ws, "s", "notes.texts")
    before = runs(server)
    call(server, "notes.add_other", name="elsewhere")
    assert_quiet(ws)
    assert runs(server) == before


def test_identical_result_after_write_is_not_pushed(
    server: LiveServer, ws: ClientConnection
) -> None:
    note_id = call(server, "notes.add", text="same")
    assert subscribe(ws, "s", "notes.texts")["value"] == ["same"]
    before = runs(server)
    call(server, "notes.reprioritize", id=note_id, priority=5)  # texts are unchanged
    wait_for(lambda: runs(server) > before)  # it re-ran...
    assert_quiet(ws)  # ...and found nothing new to say


def test_rolled_back_mutation_sends_no_notice(server: LiveServer, ws: ClientConnection) -> None:
    subscribe(ws, "s", "notes.texts")
    before = runs(server)
    with server.client() as client:
        r = client.post("/fn/notes.add_then_fail", json={"text": "ghost"})
    assert r.status_code == 409
    assert_quiet(ws)
    assert runs(server) == before


def test_unsubscribe_stops_pushes(server: LiveServer, ws: ClientConnection) -> None:
    subscribe(ws, "s", "notes.texts")
    send(ws, type="unsubscribe", id="s")
    send(ws, type="unsubscribe", id="never-subscribed")  # ignored
    call(server, "notes.add", text="unseen")
    assert_quiet(ws)
    assert server.runtime.subscriptions is not None
    wait_for(lambda: server.runtime.subscriptions.count == 0)  # type: ignore[union-attr]


def test_each_subscription_is_pushed_only_its_own_changes(
    server: LiveServer, ws: ClientConnection
) -> None:
    assert subscribe(ws, "p1", "notes.by_priority", priority=1)["value"] == []
    assert subscribe(ws, "p2", "notes.by_priority", priority=2)["value"] == []
    call(server, "notes.add", text="two", priority=2)
    assert recv(ws) == {"type": "result", "id": "p2", "value": ["two"]}
    assert_quiet(ws)  # p1 re-ran (same table) but its result did not change


def test_listens_only_while_there_are_subscriptions(
    server: LiveServer, dev_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.subscriptions import hub as hub_mod

    monkeypatch.setattr(hub_mod, "LISTEN_IDLE_S", 0.05)
    hub = server.runtime.subscriptions
    assert hub is not None and not hub.listening  # nobody subscribed yet: no LISTEN
    for round_ in range(2):  # listen, stop when idle, listen again
        with open_ws(server, dev_token) as conn:
            subscribe(conn, "s", "notes.texts")
            wait_for(lambda: hub.listening)
            call(server, "notes.add", text=f"round {round_}")
            assert recv(conn)["value"][-1] == f"round {round_}"
        wait_for(lambda: hub.count == 0 and hub.listener is None)


# -- errors -----------------------------------------------------------------------------


def error_of(frame: dict[str, Any], id: str | None) -> dict[str, Any]:
    assert frame["type"] == "error" and frame["id"] == id, frame
    return frame["error"]  # type: ignore[no-any-return]


def test_only_public_queries_can_be_subscribed(ws: ClientConnection) -> None:
    assert error_of(subscribe(ws, "a", "nope.nothing"), "a") == {
        "code": "not_found",
        "message": "Unknown function 'nope.nothing'",
    }
    assert error_of(subscribe(ws, "b", "notes.add", text="x"), "b") == {
        "code": "not_found",
        "message": "notes.add is a mutation; only queries can be subscribed to",
    }
    assert error_of(subscribe(ws, "c", "notes.internal"), "c")["code"] == "not_found"


def test_invalid_args_error_has_details(ws: ClientConnection) -> None:
    err = error_of(subscribe(ws, "a", "notes.by_priority", priority="high"), "a")
    assert err["code"] == "invalid_args"
    assert err["details"] == [{"path": "$.priority", "message": "Expected `int`, got `str`"}]
    err = error_of(subscribe(ws, "b", "notes.by_priority"), "b")
    assert err["details"] == [{"path": "$", "message": "Object missing required field `priority`"}]


def test_unauthenticated_then_authenticate_message(server: LiveServer, dev_token: str) -> None:
    with open_ws(server) as anonymous:
        err = error_of(subscribe(anonymous, "a", "notes.texts"), "a")
        assert err == {"code": "unauthenticated", "message": "notes.texts requires authentication"}
        assert subscribe(anonymous, "pub", "notes.count_sql")["value"] == 0  # public: fine
        send(anonymous, type="authenticate", token="not-a-token")
        assert error_of(recv(anonymous), None)["code"] == "unauthenticated"
        send(anonymous, type="authenticate", token=dev_token)
        assert subscribe(anonymous, "a", "notes.texts") == {
            "type": "result",
            "id": "a",
            "value": [],
        }


def test_invalid_credential_on_handshake_is_an_error_frame(server: LiveServer) -> None:
    with open_ws(server, "revoked-token") as conn:
        assert error_of(recv(conn), None) == {
            "code": "unauthenticated",
            "message": "This token was revoked",
        }
        assert error_of(subscribe(conn, "a", "notes.texts"), "a")["code"] == "unauthenticated"


def test_missing_permission_is_forbidden(server: LiveServer) -> None:
    with open_ws(server, "reader-token") as conn:
        assert subscribe(conn, "ok", "notes.readable")["value"] == "ok"
        err = error_of(subscribe(conn, "no", "notes.guarded"), "no")
        assert err == {
            "code": "forbidden",
            "message": "Missing permission 'notes:admin' for notes.guarded",
        }


def test_bad_messages_answer_errors_and_keep_the_connection(ws: ClientConnection) -> None:
    ws.send('{"type": "subscribe", ')
    assert error_of(recv(ws), None)["code"] == "invalid_json"
    send(ws, type="subscribe", id="x")
    err = error_of(recv(ws), "x")
    assert err["code"] == "invalid_message"
    assert err["details"] == [{"path": "$", "message": "Object missing required field `function`"}]
    send(ws, type="dance")
    assert error_of(recv(ws), None)["details"] == [
        {"path": "$.type", "message": "Invalid value 'dance'"}
    ]
    assert subscribe(ws, "s", "notes.texts")["value"] == []  # still usable
    assert error_of(subscribe(ws, "s", "notes.texts"), "s")["code"] == "conflict"


def test_limits_subscriptions_and_message_size(
    notes_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    server = serve(notes_app, dev=True, ws_max_subscriptions=2, max_body_bytes=512)
    with open_ws(server, dev_token) as conn:
        subscribe(conn, "1", "notes.texts")
        subscribe(conn, "2", "notes.count_sql")
        err = error_of(subscribe(conn, "3", "notes.readable"), "3")
        assert err == {"code": "rate_limited", "message": "At most 2 subscriptions per connection"}
        send(conn, type="subscribe", id="big", function="notes.texts", args={"pad": "x" * 600})
        assert error_of(recv(conn), None)["code"] == "payload_too_large"
        send(conn, type="unsubscribe", id="1")
        assert subscribe(conn, "3", "notes.readable")["value"] == "ok"


def test_subscriptions_off_refuse_the_handshake(
    notes_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    server = serve(notes_app, dev=True, subscriptions=False)
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, dev_token)
    assert info.value.response.status_code == 403
    assert call(server, "notes.add", text="still works")


# -- across processes and reloads --------------------------------------------------------


def test_mutation_on_one_server_pushes_to_subscriber_on_another(
    notes_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    a = serve(notes_app, dev=True)
    b = serve(notes_app, dev=True)
    with open_ws(b, dev_token) as conn:
        assert subscribe(conn, "s", "notes.texts")["value"] == []
        call(a, "notes.add", text="from a")
        assert recv(conn) == {"type": "result", "id": "s", "value": ["from a"]}


GREET_SCHEMA: dict[str, Any] = {
    "tables": {"items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    "functions": {"greet.hello": {"args": ARGS}},
}


def greet(version: str) -> str:
    return (
        "from runtime import query\n\n@query(public=True)\n"
        f"async def hello(ctx):\n    return {version!r}\n"
    )


def test_reload_reruns_subscriptions_with_the_new_code(
    app_files: AppFiles, serve: Callable[..., LiveServer]
) -> None:
    app_files.write_module("greet", greet("v1"))
    app_files.write_schema(GREET_SCHEMA)
    server = serve(app_files, dev=True, reload=True)
    with open_ws(server) as conn:
        assert subscribe(conn, "g", "greet.hello")["value"] == "v1"
        app_files.write_module("greet", greet("v2"))
        assert recv(conn) == {"type": "result", "id": "g", "value": "v2"}


# -- the slow-client guard, without a network --------------------------------------------


def test_send_queue_overflow_marks_the_connection_for_closing() -> None:
    from runtime.http import ws as ws_mod

    class FakeSocket:
        client = None

    conn = ws_mod.Connection(FakeSocket(), None, None)  # type: ignore[arg-type]
    for _ in range(ws_mod.MAX_QUEUED_FRAMES):
        conn.push(b"{}")
    assert not conn.overflowed
    conn.push(b"{}")
    assert conn.overflowed
    conn.push(b"{}")  # ignored from now on
    assert not conn._queue


# -- table extraction ---------------------------------------------------------------------

KNOWN = {"tickets": 1, "projects": 1, "notes": 1, "users": 1}


@pytest.mark.parametrize(
    ("text", "reads", "writes"),
    [
        ("SELECT * FROM tickets WHERE state = 'pending'", {"tickets"}, set()),
        (
            "select t.* from Tickets t join projects p on p._id = t.project_id",
            {"tickets", "projects"},
            set(),
        ),
        (
            "SELECT * FROM tickets, projects WHERE true",
            {"tickets", "projects"},
            set(),
        ),  # comma join
        ('SELECT * FROM public."notes"', {"notes"}, set()),
        ("SELECT 1 FROM projects WHERE EXISTS (SELECT 1 FROM users)", {"projects", "users"}, set()),
        (
            "SELECT * FROM tickets WHERE state = 'pending' LIMIT 1 FOR UPDATE SKIP LOCKED",
            {"tickets"},
            set(),
        ),
        ("DELETE FROM notes WHERE text = 'from users'", {"notes"}, {"notes"}),  # literal ignored
        ("UPDATE tickets SET state = %s FROM projects p", {"tickets", "projects"}, {"tickets"}),
        (
            "INSERT INTO notes (text) VALUES (%s) ON CONFLICT (_id) DO UPDATE SET text = 'x'",
            {"notes"},
            {"notes"},
        ),
        (
            "WITH gone AS (DELETE FROM tickets RETURNING *) INSERT INTO notes SELECT 1 FROM gone",
            {"tickets", "notes"},
            {"tickets", "notes"},
        ),
        ("-- FROM users\nSELECT 1 FROM notes /* JOIN projects */", {"notes"}, set()),
        ("SELECT count(*) FROM pg_class", None, None),  # no schema table: any
        ("SELECT pg_advisory_xact_lock(1)", None, None),
        ("INSERT INTO audit_log SELECT * FROM notes", {"notes"}, None),  # writes a foreign table
    ],
)
def test_sql_table_extraction(text: str, reads: set[str] | None, writes: set[str] | None) -> None:
    assert sql_tables(text, KNOWN) == (reads, writes)


def test_table_access_records_and_names_the_changes() -> None:
    access = TableAccess(KNOWN)
    access.sql("SELECT * FROM tickets", read_only=False)
    access.writes.add("notes")
    access.sql("UPDATE projects SET name = 'x'", read_only=False)
    assert access.read_set() == frozenset({"tickets", "projects"})
    assert access.changes() == "notes,projects"
    access.sql("SELECT now()", read_only=False)
    assert access.read_set() is None and access.changes() == "*"
    access.reset(KNOWN)
    assert access.read_set() == frozenset() and access.changes() is None
    access.sql("SELECT now()", read_only=True)  # a query never writes
    assert access.read_set() is None and access.changes() is None
    assert parse_changes("notes,projects") == frozenset({"notes", "projects"})
    assert parse_changes("*") is None
    assert parse_sql("SELECT 1 FROM notes") is parse_sql("SELECT 1 FROM notes")  # cached
