"""projects.*: create, get, list (paginated), update, archive; tenant isolation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import TICKET_PLUGINS, TICKETS, Api, api_fixture, install, token


@pytest.fixture
def server(app_files: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(install(app_files, TICKETS, TICKET_PLUGINS))


api = api_fixture(token("acme", "operator", "alice"))


def test_create_and_get(api: Api) -> None:
    project = api.ok(
        "projects.create",
        name="checkout",
        description="Payments",
        repo_url="https://github.com/acme/checkout",
        settings={"max_parallel_agents": 3},
    )
    assert project["state"] == "draft" and project["tenant_id"] == "acme"
    assert project["created_by"] == "alice" and project["settings"] == {"max_parallel_agents": 3}
    assert api.ok("projects.get", project_id=project["_id"]) == project
    active = api.ok("projects.create", name="web", state="active")
    assert active["settings"] == {} and active["state"] == "active"
    err = api.error("projects.create", 400, name="x", state="archived")
    assert err["code"] == "invalid_args" and err["details"][0]["path"] == "$.state"
    err = api.error("projects.create", 400, name="")
    assert err["details"] == [{"path": "$.name", "message": "Expected `str` of length >= 1"}]


def test_list_pages_newest_first_and_filters_by_state(api: Api) -> None:
    created = [
        api.ok("projects.create", name=f"p{i}", state="active" if i % 2 else "draft")
        for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = api.ok("projects.list", limit=3, **({"cursor": cursor} if cursor else {}))
        assert len(page["page"]) <= 3
        seen += [p["name"] for p in page["page"]]
        if page["is_done"]:
            break
        cursor = page["cursor"]
    assert seen == [p["name"] for p in reversed(created)]
    active = api.ok("projects.list", state="active")
    assert [p["name"] for p in active["page"]] == ["p5", "p3", "p1"] and active["is_done"]
    assert api.error("projects.list", 400, cursor="garbage")["code"] == "invalid_args"


def test_update_and_state_transitions(api: Api) -> None:
    project = api.ok("projects.create", name="web")
    updated = api.ok("projects.update", project_id=project["_id"], name="website", state="active")
    assert updated["name"] == "website" and updated["state"] == "active"
    assert updated["description"] is None
    assert api.ok("projects.get", project_id=project["_id"])["name"] == "website"
    paused = api.ok("projects.update", project_id=project["_id"], state="paused")
    assert paused["state"] == "paused"
    err = api.error("projects.update", 409, project_id=project["_id"], state="draft")
    assert err == {
        "code": "conflict",
        "message": "Cannot move project from paused to draft",
        "details": {"from": "paused", "to": "draft"},
    }


def test_archive(api: Api) -> None:
    project = api.ok("projects.create", name="old", state="active")
    ticket = api.ok("tickets.create", title="kept", project_id=project["_id"])
    archived = api.ok("projects.archive", project_id=project["_id"])
    assert archived["state"] == "archived"
    assert api.ok("projects.archive", project_id=project["_id"])["state"] == "archived"
    err = api.error("projects.update", 409, project_id=project["_id"], name="new")
    assert err["message"] == "Cannot update an archived project"
    err = api.error("tickets.create", 409, title="new work", project_id=project["_id"])
    assert err["message"] == "Cannot add tickets to an archived project"
    assert api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["project"]["state"] == "archived"


def test_tenant_isolation(api: Api, server: LiveServer) -> None:
    project = api.ok("projects.create", name="secret")
    other = Api(server.url, token("globex", "operator", "bob"))
    for name, args in [
        ("projects.get", {"project_id": project["_id"]}),
        ("projects.update", {"project_id": project["_id"], "name": "mine now"}),
        ("projects.archive", {"project_id": project["_id"]}),
    ]:
        err = other.error(name, 404, **args)
        assert err == {"code": "not_found", "message": "Project not found"}
    assert other.ok("projects.list")["page"] == []
    assert api.ok("projects.get", project_id=project["_id"])["name"] == "secret"
    other.close()


def test_permissions(server: LiveServer) -> None:
    viewer = Api(server.url, token(role="viewer"))
    assert viewer.ok("projects.list")["page"] == []
    err = viewer.error("projects.create", 403, name="x")
    assert err["message"] == "Missing permission 'projects:write' for projects.create"
    viewer.close()
