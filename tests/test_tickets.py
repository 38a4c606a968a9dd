"""tickets.*: states and transitions, claims and leases, dependencies, failures, tenant
isolation, and concurrent claiming, over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runtime.cli.call import call_function
from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import (
    TICKET_PLUGINS,
    TICKET_STATES,
    TICKETS,
    Api,
    api_fixture,
    bounded_gather,
    install,
    sql,
    token,
)


@pytest.fixture
def swarm(app_files: AppFiles) -> AppFiles:
    return install(app_files, TICKETS, TICKET_PLUGINS)


@pytest.fixture
def server(swarm: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(swarm, pool_max=10)


api = api_fixture(token("acme", "operator", "alice"))


def new_ticket(api: Api, title: str = "Fix the login form", **args: Any) -> dict[str, Any]:
    return api.ok("tickets.create", title=title, **args)  # type: ignore[no-any-return]


def pending_ticket(api: Api, title: str = "Fix the login form", **args: Any) -> dict[str, Any]:
    ticket = new_ticket(api, title, **args)
    return api.ok("tickets.set_state", ticket_id=ticket["_id"], state="pending")  # type: ignore[no-any-return]


def insert_pending(database_url: str, tenant: str, n: int, priority: int = 0) -> list[str]:
    rows = sql(
        database_url,
        "INSERT INTO tickets (tenant_id, title, state, priority, rejection_count, depends_on)"
        " SELECT %s, 'ticket ' || i, 'pending', %s, 0, '{}' FROM generate_series(1, %s) i"
        " RETURNING _id::text",
        tenant,
        priority,
        n,
    )
    return [r[0] for r in rows]


# -- the platform's own test plan -------------------------------------------------------


def test_create_is_draft(api: Api) -> None:
    ticket = new_ticket(api, description="The form accepts empty passwords", priority=3)
    assert ticket["state"] == "draft"
    assert ticket["tenant_id"] == "acme" and ticket["created_by"] == "alice"
    assert ticket["priority"] == 3 and ticket["rejection_count"] == 0
    assert ticket["depends_on"] == []
    assert api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["title"] == "Fix the login form"


def test_claim_then_second_claim_conflicts(api: Api) -> None:
    ticket = pending_ticket(api)
    before = datetime.now(UTC)
    claimed = api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    assert claimed["success"] is True
    lease = datetime.fromisoformat(claimed["lease_expires_at"])
    assert timedelta(minutes=29) < lease - before < timedelta(minutes=31)
    assert claimed["ticket"]["state"] == "claimed" and claimed["ticket"]["vm_id"] == "vm-1"
    assert claimed["ticket"]["assignee_id"] == "alice"
    err = api.error("tickets.claim", 409, ticket_id=ticket["_id"], vm_id="vm-2")
    assert err == {"code": "conflict", "message": "Cannot claim ticket in state: claimed"}


def test_full_lifecycle(api: Api) -> None:
    project = api.ok(
        "projects.create", name="checkout", repo_url="https://github.com/acme/checkout"
    )
    ticket = new_ticket(api, project_id=project["_id"], priority=2)
    moved = api.ok("tickets.set_state", ticket_id=ticket["_id"], state="pending")
    assert moved["state"] == "pending"
    assert [t["_id"] for t in api.ok("tickets.get_available")] == [ticket["_id"]]
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-7")
    assert api.ok("tickets.get_by_vm", vm_id="vm-7")["_id"] == ticket["_id"]
    progressed = api.ok(
        "tickets.update_progress",
        ticket_id=ticket["_id"],
        progress=40,
        message="Running tests",
        vm_id="vm-7",
    )
    assert progressed["state"] == "in_progress" and progressed["progress"] == 40
    pr = "https://github.com/acme/checkout/pull/12"
    done = api.ok(
        "tickets.complete",
        ticket_id=ticket["_id"],
        pr_url=pr,
        result={"summary": "fixed"},
        outputs={"files": ["login.py"]},
        vm_id="vm-7",
    )
    assert done["unblocked"] == []
    assert done["ticket"]["state"] == "completed" and done["ticket"]["completed_at"]
    full = api.ok("tickets.get_by_id", ticket_id=ticket["_id"])
    assert full["pr_url"] == pr and full["result"] == {"summary": "fixed"}
    assert full["outputs"] == {"files": ["login.py"]} and full["progress"] == 100
    assert full["project"]["_id"] == project["_id"] and full["parent"] is None
    assert full["lease_expires_at"] is None
    assert api.ok("tickets.get_by_pr_url", pr_url=pr)["_id"] == ticket["_id"]
    assert api.ok("tickets.get_by_vm", vm_id="vm-7") is None
    stats = api.ok("tickets.get_stats", project_id=project["_id"])
    assert stats["total"] == 1 and stats["by_state"]["completed"] == 1
    assert set(stats["by_state"]) == TICKET_STATES
    err = api.error("tickets.complete", 409, ticket_id=ticket["_id"])
    assert err["message"] == "Cannot complete ticket in state: completed"


def test_dependency_unblocking(api: Api) -> None:
    a = new_ticket(api, "A")
    b = new_ticket(api, "B")
    c = new_ticket(api, "C", depends_on=[a["_id"], b["_id"]])
    assert c["depends_on"] == [a["_id"], b["_id"]]
    # Unfinished dependencies: asking for pending gives blocked.
    assert api.ok("tickets.set_state", ticket_id=c["_id"], state="pending")["state"] == "blocked"
    for t in (a, b):
        api.ok("tickets.set_state", ticket_id=t["_id"], state="pending")
        api.ok("tickets.claim", ticket_id=t["_id"], vm_id=f"vm-{t['title']}")
    assert api.ok("tickets.complete", ticket_id=a["_id"])["unblocked"] == []
    assert api.ok("tickets.get_by_id", ticket_id=c["_id"])["state"] == "blocked"
    assert api.ok("tickets.complete", ticket_id=b["_id"])["unblocked"] == [c["_id"]]
    assert api.ok("tickets.get_by_id", ticket_id=c["_id"])["state"] == "pending"
    # A ticket created after its dependencies completed is not blocked.
    d = new_ticket(api, "D", depends_on=[a["_id"]])
    assert api.ok("tickets.set_state", ticket_id=d["_id"], state="pending")["state"] == "pending"


def test_unknown_dependency_is_not_found(api: Api, server: LiveServer) -> None:
    other = Api(server.url, token("globex"))
    foreign = new_ticket(other, "theirs")
    err = api.error("tickets.create", 404, title="x", depends_on=[foreign["_id"]])
    assert err["message"] == f"Dependency ticket not found: {foreign['_id']}"
    other.close()


# -- transitions ------------------------------------------------------------------------


def test_illegal_transition_names_from_and_to(api: Api) -> None:
    ticket = new_ticket(api)
    err = api.error("tickets.set_state", 409, ticket_id=ticket["_id"], state="completed")
    assert err == {
        "code": "conflict",
        "message": "Cannot move ticket from draft to completed",
        "details": {"from": "draft", "to": "completed"},
    }
    err = api.error("tickets.set_state", 400, ticket_id=ticket["_id"], state="sideways")
    assert err["code"] == "invalid_args" and err["details"][0]["path"] == "$.state"


def test_set_state_paths(api: Api) -> None:
    ticket = pending_ticket(api)
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    held = api.ok("tickets.set_state", ticket_id=ticket["_id"], state="hold", note="legal")
    assert held["state"] == "hold" and held["vm_id"] is None and held["lease_expires_at"] is None
    assert held["review_note"] == "legal"
    assert api.ok("tickets.set_state", ticket_id=ticket["_id"], state="hold")["state"] == "hold"
    err = api.error("tickets.set_state", 409, ticket_id=ticket["_id"], state="claimed")
    assert err["message"] == "Cannot move ticket from hold to claimed"
    api.ok("tickets.set_state", ticket_id=ticket["_id"], state="pending")
    err = api.error("tickets.set_state", 400, ticket_id=ticket["_id"], state="claimed")
    assert err["message"] == "Use tickets.claim to claim a ticket"
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    api.ok("tickets.set_state", ticket_id=ticket["_id"], state="review", note="check the copy")
    done = api.ok("tickets.set_state", ticket_id=ticket["_id"], state="completed")
    assert done["state"] == "completed"


# -- leases -----------------------------------------------------------------------------


def test_heartbeat_only_by_the_holder(api: Api) -> None:
    ticket = pending_ticket(api)
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    sql_lease = api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["lease_expires_at"]
    time.sleep(0.01)
    beat = api.ok("tickets.heartbeat", ticket_id=ticket["_id"], vm_id="vm-1")
    assert beat["success"] is True and beat["lease_expires_at"] > sql_lease
    err = api.error("tickets.heartbeat", 403, ticket_id=ticket["_id"], vm_id="vm-2")
    assert err == {"code": "forbidden", "message": "The ticket is leased by another VM"}
    api.error("tickets.update_progress", 403, ticket_id=ticket["_id"], progress=5, vm_id="vm-2")
    api.error("tickets.complete", 403, ticket_id=ticket["_id"], vm_id="vm-2")
    api.ok("tickets.complete", ticket_id=ticket["_id"], vm_id="vm-1")
    err = api.error("tickets.heartbeat", 409, ticket_id=ticket["_id"], vm_id="vm-1")
    assert err["message"] == "Cannot heartbeat ticket in state: completed"


def test_expire_leases_requeues(api: Api, swarm: AppFiles, database_url: str) -> None:
    expired = pending_ticket(api, "expired")
    alive = pending_ticket(api, "alive")
    api.ok("tickets.claim", ticket_id=expired["_id"], vm_id="vm-1")
    api.ok("tickets.update_progress", ticket_id=expired["_id"], progress=10)
    api.ok("tickets.claim", ticket_id=alive["_id"], vm_id="vm-2")
    sql(
        database_url,
        "UPDATE tickets SET lease_expires_at = now() - interval '1 minute' WHERE _id = %s",
        expired["_id"],
    )
    result = asyncio.run(call_function(swarm.settings(), database_url, "tickets.expire_leases", {}))
    assert result == {"expired": 1, "requeued": [expired["_id"]], "failed": []}
    t = api.ok("tickets.get_by_id", ticket_id=expired["_id"])
    assert t["state"] == "pending" and t["rejection_count"] == 1
    assert t["last_error"] == "Lease expired"
    assert t["vm_id"] is None and t["assignee_id"] is None and t["lease_expires_at"] is None
    assert api.ok("tickets.get_by_id", ticket_id=alive["_id"])["state"] == "claimed"


def test_lease_sweep_plugin_runs_in_background(
    swarm: AppFiles,
    serve: Callable[..., LiveServer],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNTIME_LEASE_SWEEP_S", "0.1")
    server = serve(swarm)
    api = Api(server.url, token())
    ticket = pending_ticket(api)
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    sql(
        database_url,
        "UPDATE tickets SET lease_expires_at = now() - interval '1 second' WHERE _id = %s",
        ticket["_id"],
    )
    deadline = time.monotonic() + 10
    while api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["state"] != "pending":
        assert time.monotonic() < deadline, "the lease sweep did not requeue the ticket"
        time.sleep(0.05)
    api.close()


# -- failures ---------------------------------------------------------------------------


def test_third_failure_is_final(api: Api) -> None:
    ticket = pending_ticket(api)
    for attempt in (1, 2, 3):
        api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id=f"vm-{attempt}")
        out = api.ok("tickets.fail", ticket_id=ticket["_id"], error=f"tests failed #{attempt}")
        t = out["ticket"]
        assert t["rejection_count"] == attempt and t["last_error"] == f"tests failed #{attempt}"
        assert t["vm_id"] is None and t["assignee_id"] is None
        expected = ("failed", True) if attempt == 3 else ("pending", False)
        assert (t["state"], out["final"]) == expected
    err = api.error("tickets.claim", 409, ticket_id=ticket["_id"], vm_id="vm-4")
    assert err["message"] == "Cannot claim ticket in state: failed"


def test_non_retryable_failure_is_final_at_once(api: Api) -> None:
    ticket = pending_ticket(api)
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    out = api.ok("tickets.fail", ticket_id=ticket["_id"], error="repo deleted", retryable=False)
    assert out["final"] is True and out["ticket"]["state"] == "failed"


# -- reads --------------------------------------------------------------------------------


def test_available_in_priority_then_age_order_and_claim_next_follows(api: Api) -> None:
    low = pending_ticket(api, "low", priority=0)
    high_old = pending_ticket(api, "high old", priority=5)
    high_new = pending_ticket(api, "high new", priority=5)
    new_ticket(api, "draft, never offered", priority=9)
    order = [t["_id"] for t in api.ok("tickets.get_available")]
    assert order == [high_old["_id"], high_new["_id"], low["_id"]]
    claimed = [api.ok("tickets.claim_next", vm_id=f"vm-{i}")["_id"] for i in range(3)]
    assert claimed == order
    assert api.ok("tickets.claim_next", vm_id="vm-9") is None


def test_project_pages_and_children(api: Api) -> None:
    project = api.ok("projects.create", name="web", state="active")
    epic = new_ticket(api, "Epic", project_id=project["_id"])
    kids = [
        new_ticket(api, f"child {i}", project_id=project["_id"], parent_id=epic["_id"])
        for i in range(5)
    ]
    new_ticket(api, "elsewhere")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        args: dict[str, Any] = {"project_id": project["_id"], "limit": 2}
        if cursor:
            args["cursor"] = cursor
        page = api.ok("tickets.get_by_project", **args)
        seen += [t["_id"] for t in page["page"]]
        if page["is_done"]:
            break
        cursor = page["cursor"]
    assert sorted(seen) == sorted([epic["_id"], *(k["_id"] for k in kids)])
    drafts = api.ok("tickets.get_by_project", project_id=project["_id"], state="draft")
    assert len(drafts["page"]) == 6
    full = api.ok("tickets.get_by_id", ticket_id=kids[0]["_id"])
    assert full["parent"]["_id"] == epic["_id"]
    assert len(api.ok("tickets.get_by_id", ticket_id=epic["_id"])["children"]) == 5


def test_stats_are_counted_per_state(api: Api, database_url: str) -> None:
    insert_pending(database_url, "acme", 7)
    pending_ticket(api)
    new_ticket(api)
    stats = api.ok("tickets.get_stats")
    assert stats["total"] == 9
    assert stats["by_state"]["pending"] == 8 and stats["by_state"]["draft"] == 1


# -- tenants --------------------------------------------------------------------------------


def test_tenant_isolation(api: Api, server: LiveServer) -> None:
    mine = pending_ticket(api)
    api.ok("tickets.claim", ticket_id=mine["_id"], vm_id="vm-a")
    api.ok("tickets.complete", ticket_id=mine["_id"], pr_url="https://github.com/acme/x/pull/1")
    project = api.ok("projects.create", name="secret")
    other = Api(server.url, token("globex", "operator", "bob"))
    for name, args in [
        ("tickets.get_by_id", {"ticket_id": mine["_id"]}),
        ("tickets.set_state", {"ticket_id": mine["_id"], "state": "review"}),
        ("tickets.claim", {"ticket_id": mine["_id"], "vm_id": "vm-b"}),
        ("tickets.heartbeat", {"ticket_id": mine["_id"], "vm_id": "vm-a"}),
        ("tickets.fail", {"ticket_id": mine["_id"], "error": "x"}),
        ("tickets.get_by_project", {"project_id": project["_id"]}),
        ("tickets.create", {"title": "x", "project_id": project["_id"]}),
        ("tickets.create", {"title": "x", "parent_id": mine["_id"]}),
    ]:
        err = other.error(name, 404, **args)
        assert err["code"] == "not_found", (name, err)
    assert other.ok("tickets.get_by_pr_url", pr_url="https://github.com/acme/x/pull/1") is None
    assert other.ok("tickets.get_by_vm", vm_id="vm-a") is None
    assert other.ok("tickets.get_available") == []
    assert other.ok("tickets.get_stats")["total"] == 0
    assert other.ok("tickets.claim_next", vm_id="vm-b") is None
    assert api.ok("tickets.get_stats")["total"] == 1
    other.close()


def test_permissions_and_authentication(server: LiveServer) -> None:
    viewer = Api(server.url, token(role="viewer"))
    viewer.ok("tickets.get_stats")
    err = viewer.error("tickets.create", 403, title="nope")
    assert err["message"] == "Missing permission 'tickets:create' for tickets.create"
    viewer.close()
    anonymous = Api(server.url, None)
    assert anonymous.error("tickets.get_stats", 401)["code"] == "unauthenticated"
    anonymous.close()
    assert httpx.post(f"{server.url}/fn/tickets.expire_leases", json={}).status_code == 404


# -- concurrency ------------------------------------------------------------------------------


async def _post_many(
    url: str, calls: list[tuple[str, dict[str, Any], str]], limit: int
) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await bounded_gather(
            limit,
            (
                client.post(f"/fn/{name}", json=args, headers={"authorization": f"Bearer {auth}"})
                for name, args, auth in calls
            ),
        )


def test_concurrent_claim_next_never_claims_twice(server: LiveServer, database_url: str) -> None:
    ids = insert_pending(database_url, "acme", 100)
    insert_pending(database_url, "globex", 20)  # another tenant's queue is never touched
    calls = [
        ("tickets.claim_next", {"vm_id": f"vm-{vm}"}, token("acme", "agent", f"agent-{vm}"))
        for vm in range(10)
        for _ in range(10)
    ]
    started = time.perf_counter()
    responses = asyncio.run(_post_many(server.url, calls, limit=20))
    elapsed = time.perf_counter() - started
    failures = [r.text for r in responses if r.status_code != 200]
    assert failures == []
    claimed = [r.json()["value"]["_id"] for r in responses]
    assert len(set(claimed)) == 100 and set(claimed) == set(ids)
    attempts = [int(r.headers["x-runtime-attempts"]) for r in responses]
    print(
        f"\nclaim_next x100 (10 VMs, 20 in flight): {elapsed:.2f}s, "
        f"retries {sum(attempts) - 100}, max attempts {max(attempts)}"
    )
    rows = sql(
        database_url,
        "SELECT state, vm_id, count(*) FROM tickets WHERE tenant_id = 'acme' GROUP BY state, vm_id",
    )
    assert {state for state, _, _ in rows} == {"claimed"}
    assert Counter({vm: n for _, vm, n in rows}) == Counter({f"vm-{i}": 10 for i in range(10)})
    assert sql(
        database_url,
        "SELECT count(*) FROM tickets WHERE tenant_id = 'globex' AND state = 'pending'",
    ) == [(20,)]
    more = asyncio.run(_post_many(server.url, calls[:5], limit=5))
    assert [r.json()["value"] for r in more] == [None] * 5


def test_concurrent_claims_of_one_ticket_one_wins(server: LiveServer, database_url: str) -> None:
    [ticket_id] = insert_pending(database_url, "acme", 1)
    calls = [
        ("tickets.claim", {"ticket_id": ticket_id, "vm_id": f"vm-{i}"}, token(user=f"a{i}"))
        for i in range(100)
    ]
    responses = asyncio.run(_post_many(server.url, calls, limit=20))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 99}, statuses
    messages = {r.json()["error"]["message"] for r in responses if r.status_code == 409}
    assert messages == {"Cannot claim ticket in state: claimed"}
    [winner] = [r.json()["value"]["ticket"]["vm_id"] for r in responses if r.status_code == 200]
    assert sql(database_url, "SELECT vm_id, state FROM tickets") == [(winner, "claimed")]
