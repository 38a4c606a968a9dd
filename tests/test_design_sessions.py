"""design_sessions.*: create, update state and spec, list by project, tenant isolation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import Api, api_fixture, insert_project, install, token


@pytest.fixture
def server(app_files: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(install(app_files, ["design_sessions"]))


acme = api_fixture(token("acme", "operator", "alice"))
other = api_fixture(token("globex", "operator", "mallory"))


def test_create_update_and_list(acme: Api, database_url: str) -> None:
    project = insert_project(database_url, "acme")
    created = acme.ok(
        "design_sessions.create", project_id=project, title="API v2", spec={"endpoints": ["/a"]}
    )
    assert created["state"] == "draft" and created["spec"] == {"endpoints": ["/a"]}
    assert created["created_by"] == "alice" and created["tenant_id"] == "acme"
    sid = created["_id"]
    updated = acme.ok(
        "design_sessions.update",
        session_id=sid,
        spec={"endpoints": ["/a", "/b"]},
        state="in_review",
    )
    assert updated["state"] == "in_review" and updated["spec"] == {"endpoints": ["/a", "/b"]}
    assert acme.ok("design_sessions.get", session_id=sid)["spec"] == {"endpoints": ["/a", "/b"]}
    acme.ok("design_sessions.update", session_id=sid, state="approved")
    err = acme.error("design_sessions.update", 409, session_id=sid, spec={})
    assert err["message"] == "Cannot change the spec of a design session in state: approved"
    acme.ok("design_sessions.update", session_id=sid, title="API v2 (final)")

    second = acme.ok("design_sessions.create", project_id=project, title="Billing")
    listed = acme.ok("design_sessions.list_by_project", project_id=project)
    assert [s["_id"] for s in listed["page"]] == [sid, second["_id"]] and listed["is_done"]
    drafts = acme.ok("design_sessions.list_by_project", project_id=project, state="draft")
    assert [s["_id"] for s in drafts["page"]] == [second["_id"]]
    page = acme.ok("design_sessions.list_by_project", project_id=project, limit=1)
    assert len(page["page"]) == 1 and not page["is_done"]
    rest = acme.ok(
        "design_sessions.list_by_project", project_id=project, limit=1, cursor=page["cursor"]
    )
    assert [s["_id"] for s in rest["page"]] == [second["_id"]]


def test_archived_session_is_read_only(acme: Api, database_url: str) -> None:
    project = insert_project(database_url, "acme")
    sid = acme.ok("design_sessions.create", project_id=project, title="t")["_id"]
    acme.ok("design_sessions.update", session_id=sid, state="archived")
    err = acme.error("design_sessions.update", 409, session_id=sid, state="draft")
    assert err["message"] == "An archived design session cannot change"


def test_invalid_state_is_rejected(acme: Api, database_url: str) -> None:
    project = insert_project(database_url, "acme")
    sid = acme.ok("design_sessions.create", project_id=project, title="t")["_id"]
    err = acme.error("design_sessions.update", 400, session_id=sid, state="done")
    assert err["code"] == "invalid_args" and err["details"][0]["path"] == "$.state"


def test_other_tenants_see_nothing(acme: Api, other: Api, database_url: str) -> None:
    project = insert_project(database_url, "acme")
    sid = acme.ok("design_sessions.create", project_id=project, title="t")["_id"]
    assert other.error("design_sessions.get", 404, session_id=sid) == {
        "code": "not_found",
        "message": "Design session not found",
    }
    assert (
        other.error("design_sessions.update", 404, session_id=sid, state="archived")["code"]
        == "not_found"
    )
    project_nf = {"code": "not_found", "message": "Project not found"}
    assert other.error("design_sessions.list_by_project", 404, project_id=project) == project_nf
    assert other.error("design_sessions.create", 404, project_id=project, title="x") == project_nf
    assert acme.ok("design_sessions.get", session_id=sid)["state"] == "draft"
