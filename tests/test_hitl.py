"""hitl.*: sessions, time-ordered paginated messages and events, approvals that record who
decided and from which address, and tenant isolation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import Api, api_fixture, insert_ticket, install, sql, token


@pytest.fixture
def server(app_files: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(install(app_files, ["hitl"]))


acme = api_fixture(token("acme", "operator", "alice"))
other = api_fixture(token("globex", "operator", "mallory"))


def pages(api: Api, fn: str, session_id: str, limit: int) -> list[list[dict]]:
    result, cursor = [], None
    for _ in range(50):  # bounded
        args = {"session_id": session_id, "limit": limit}
        if cursor:
            args["cursor"] = cursor
        page = api.ok(fn, **args)
        result.append(page["page"])
        if page["is_done"]:
            return result
        cursor = page["cursor"]
    raise AssertionError("pagination did not finish")


def test_messages_are_time_ordered_and_paginated(acme: Api) -> None:
    session = acme.ok("hitl.create_session", title="Which database?")
    assert session["state"] == "open" and session["tenant_id"] == "acme"
    for i in range(7):
        acme.ok("hitl.send_message", session_id=session["_id"], content=f"m{i}")
    got = pages(acme, "hitl.get_messages", session["_id"], 3)
    assert [[m["content"] for m in page] for page in got] == [
        ["m0", "m1", "m2"],
        ["m3", "m4", "m5"],
        ["m6"],
    ]
    times = [m["_creation_time"] for page in got for m in page]
    assert times == sorted(times)
    first = got[0][0]
    assert first["author_type"] == "human" and first["author_id"] == "alice"


def test_agent_messages_are_marked_as_agent(server: LiveServer, acme: Api) -> None:
    session = acme.ok("hitl.create_session", title="t")
    agent = Api(server.url, token("acme", "agent", "key-1"))
    message = agent.ok(
        "hitl.send_message", session_id=session["_id"], content="question?", metadata={"step": 3}
    )
    agent.close()
    assert message["author_type"] == "agent" and message["metadata"] == {"step": 3}


def test_events_are_append_only_and_ordered(server: LiveServer, acme: Api) -> None:
    session = acme.ok("hitl.create_session", title="t")
    for i in range(4):
        acme.ok("hitl.add_event", session_id=session["_id"], kind="tool.call", data={"i": i})
    got = pages(acme, "hitl.get_events", session["_id"], 2)
    events = [e for page in got for e in page]
    assert [e["kind"] for e in events] == ["session.created"] + ["tool.call"] * 4
    assert [e["data"].get("i") for e in events[1:]] == [0, 1, 2, 3]
    # No function changes or removes an event.
    listed = {f["name"] for f in acme.http.get("/fn").json()["functions"]}
    hitl = {name for name in listed if name.startswith("hitl.")}
    assert {n for n in hitl if "event" in n} == {"hitl.add_event", "hitl.get_events"}


def test_approvals_record_who_and_from_where(acme: Api, database_url: str) -> None:
    ticket_id = insert_ticket(database_url, "acme")
    session = acme.ok("hitl.create_session", title="Deploy?", ticket_id=ticket_id)
    first = acme.ok("hitl.request_approval", session_id=session["_id"], summary="Ship v2")
    second = acme.ok("hitl.request_approval", session_id=session["_id"], summary="Drop table")
    assert first["state"] == "pending" and first["ticket_id"] == ticket_id
    assert first["requested_by"] == "alice"
    assert acme.ok("hitl.get_session", session_id=session["_id"])["state"] == "waiting"

    approved = acme.ok("hitl.approve", approval_id=first["_id"], reason="looks good")
    assert approved["state"] == "approved"
    assert approved["decided_by"] == "alice" and approved["decided_ip"] == "127.0.0.1"
    assert approved["decided_at"] and approved["reason"] == "looks good"
    # Still one pending: the session keeps waiting.
    assert acme.ok("hitl.get_session", session_id=session["_id"])["state"] == "waiting"

    # Behind the trusted local proxy, the forwarded client address is recorded.
    r = acme.http.post(
        "/fn/hitl.reject",
        json={"approval_id": second["_id"]},
        headers={"x-forwarded-for": "203.0.113.7"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["value"]["decided_ip"] == "203.0.113.7"
    assert acme.ok("hitl.get_session", session_id=session["_id"])["state"] == "open"

    rows = sql(
        database_url,
        "SELECT state, decided_by, decided_ip FROM hitl_approvals ORDER BY _creation_time",
    )
    assert rows == [("approved", "alice", "127.0.0.1"), ("rejected", "alice", "203.0.113.7")]
    err = acme.error("hitl.approve", 409, approval_id=first["_id"])
    assert err == {"code": "conflict", "message": "The approval is already approved"}

    kinds = [e["kind"] for e in acme.ok("hitl.get_events", session_id=session["_id"])["page"]]
    assert kinds == [
        "session.created",
        "approval.requested",
        "approval.requested",
        "approval.approved",
        "approval.rejected",
    ]
    pending = acme.ok("hitl.list_approvals", state="pending")["page"]
    assert pending == []
    decided = acme.ok("hitl.list_approvals", session_id=session["_id"])["page"]
    assert [a["_id"] for a in decided] == [first["_id"], second["_id"]]


def test_closed_session_takes_no_messages(acme: Api) -> None:
    session = acme.ok("hitl.create_session", title="t")
    closed = acme.ok("hitl.set_session_state", session_id=session["_id"], state="closed")
    assert closed["state"] == "closed"
    err = acme.error("hitl.send_message", 409, session_id=session["_id"], content="hi")
    assert err["message"] == "The session is closed"
    assert [s["state"] for s in acme.ok("hitl.list_sessions", state="closed")["page"]] == ["closed"]


def test_other_tenants_see_nothing(acme: Api, other: Api, database_url: str) -> None:
    session = acme.ok("hitl.create_session", title="secret plans")
    sid = session["_id"]
    acme.ok("hitl.send_message", session_id=sid, content="hello")
    approval = acme.ok("hitl.request_approval", session_id=sid, summary="s")
    not_found = {"code": "not_found", "message": "Session not found"}
    assert other.error("hitl.get_session", 404, session_id=sid) == not_found
    assert other.error("hitl.get_messages", 404, session_id=sid) == not_found
    assert other.error("hitl.get_events", 404, session_id=sid) == not_found
    assert other.error("hitl.send_message", 404, session_id=sid, content="x") == not_found
    assert other.error("hitl.add_event", 404, session_id=sid, kind="x") == not_found
    assert other.error("hitl.request_approval", 404, session_id=sid, summary="x") == not_found
    assert other.error("hitl.set_session_state", 404, session_id=sid, state="closed") == not_found
    assert other.error("hitl.list_approvals", 404, session_id=sid) == not_found
    assert other.error("hitl.approve", 404, approval_id=approval["_id"])["code"] == "not_found"
    assert other.error("hitl.reject", 404, approval_id=approval["_id"])["code"] == "not_found"
    assert other.ok("hitl.list_sessions")["page"] == []
    assert other.ok("hitl.list_approvals")["page"] == []
    # Another tenant's ticket cannot be attached either.
    foreign_ticket = insert_ticket(database_url, "acme")
    assert (
        other.error("hitl.create_session", 404, title="t", ticket_id=foreign_ticket)["message"]
        == "Ticket not found"
    )
    assert sql(database_url, "SELECT state FROM hitl_approvals") == [("pending",)]


def test_permissions_are_required(server: LiveServer) -> None:
    nobody = Api(server.url, token("acme", "nobody", "zed"))
    assert nobody.error("hitl.create_session", 403, title="t")["code"] == "forbidden"
    nobody.close()
    anonymous = Api(server.url, None)
    assert anonymous.error("hitl.list_sessions", 401)["code"] == "unauthenticated"
    anonymous.close()


def test_invalid_cursor_is_400(acme: Api) -> None:
    session = acme.ok("hitl.create_session", title="t")
    err = acme.error("hitl.get_messages", 400, session_id=session["_id"], cursor="garbage")
    assert err["code"] == "invalid_args"
