"""plugins/agent_routes.py: POST /agent/claim and POST /agent/heartbeat over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import AppFiles, LiveServer
from tests.swarm_app import (
    TICKET_PLUGINS,
    TICKETS,
    Api,
    api_fixture,
    bounded_gather,
    install,
    sql,
    token,
)
from tests.test_tickets import insert_pending, pending_ticket


@pytest.fixture
def server(app_files: AppFiles, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(install(app_files, TICKETS, TICKET_PLUGINS), pool_max=10)


api = api_fixture(token("acme", "operator", "alice"))


@pytest.fixture
def agent(server: LiveServer) -> Iterator[httpx.Client]:
    client = server.client(token("acme", "agent", "agent-1"))
    yield client
    client.close()


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_claim_then_heartbeat_with_progress(api: Api, agent: httpx.Client) -> None:
    low = pending_ticket(api, "low", priority=1)
    high = pending_ticket(api, "high", priority=4)
    r = agent.post("/agent/claim", json={"vm_id": "vm-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"]
    ticket = r.json()["ticket"]
    assert ticket["_id"] == high["_id"] and ticket["state"] == "claimed"
    assert ticket["vm_id"] == "vm-1" and ticket["assignee_id"] == "agent-1"
    assert ticket["assignee_type"] == "agent" and ticket["lease_expires_at"]

    r = agent.post("/agent/heartbeat", json={"ticket_id": high["_id"], "vm_id": "vm-1"})
    assert r.status_code == 200, r.text
    beat = r.json()
    assert beat["success"] is True and beat["lease_expires_at"] >= ticket["lease_expires_at"]
    assert "ticket" not in beat

    r = agent.post(
        "/agent/heartbeat",
        json={
            "ticket_id": high["_id"],
            "vm_id": "vm-1",
            "progress": 60,
            "message": "Running tests",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ticket"]["state"] == "in_progress" and body["ticket"]["progress"] == 60
    assert body["ticket"]["progress_message"] == "Running tests"
    assert body["lease_expires_at"] == body["ticket"]["lease_expires_at"]

    assert agent.post("/agent/claim", json={"vm_id": "vm-2"}).json()["ticket"]["_id"] == low["_id"]
    assert agent.post("/agent/claim", json={"vm_id": "vm-3"}).json() == {"ticket": None}


def test_heartbeat_refusals(api: Api, agent: httpx.Client, server: LiveServer) -> None:
    ticket = pending_ticket(api)
    agent.post("/agent/claim", json={"vm_id": "vm-1"})
    r = agent.post("/agent/heartbeat", json={"ticket_id": ticket["_id"], "vm_id": "vm-2"})
    assert r.status_code == 403
    assert error_of(r) == {"code": "forbidden", "message": "The ticket is leased by another VM"}
    r = agent.post(
        "/agent/heartbeat",
        json={
            "ticket_id": ticket["_id"],
            "vm_id": "vm-2",
            "progress": 10,
        },
    )
    assert r.status_code == 403
    assert api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["progress"] == 0
    other = server.client(token("globex", "agent", "spy"))
    r = other.post("/agent/heartbeat", json={"ticket_id": ticket["_id"], "vm_id": "vm-1"})
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    assert other.post("/agent/claim", json={"vm_id": "vm-9"}).json() == {"ticket": None}
    other.close()
    api.ok("tickets.complete", ticket_id=ticket["_id"])
    r = agent.post("/agent/heartbeat", json={"ticket_id": ticket["_id"], "vm_id": "vm-1"})
    assert r.status_code == 409
    assert error_of(r)["message"] == "Cannot heartbeat ticket in state: completed"


def test_authentication_and_permissions(server: LiveServer) -> None:
    r = httpx.post(f"{server.url}/agent/claim", json={"vm_id": "vm-1"})
    assert r.status_code == 401
    assert error_of(r) == {
        "code": "unauthenticated",
        "message": "/agent/claim requires authentication",
    }
    r = httpx.post(f"{server.url}/agent/heartbeat", json={})
    assert r.status_code == 401
    viewer = server.client(token(role="viewer"))
    r = viewer.post("/agent/claim", json={"vm_id": "vm-1"})
    assert r.status_code == 403
    assert error_of(r)["message"] == "Missing permission 'tickets:claim' for tickets.claim_next"
    viewer.close()


def test_invalid_bodies(agent: httpx.Client) -> None:
    r = agent.post("/agent/claim", content=b"{not json")
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
    r = agent.post("/agent/claim", json={})
    assert r.status_code == 400
    assert error_of(r)["details"] == [
        {"path": "$", "message": "Object missing required field `vm_id`"}
    ]
    r = agent.post("/agent/claim", json={"vm_id": "vm-1", "extra": 1})
    assert error_of(r)["details"] == [
        {"path": "$", "message": "Object contains unknown field `extra`"}
    ]
    r = agent.post("/agent/heartbeat", json={"ticket_id": "nope", "vm_id": "vm-1"})
    assert error_of(r)["details"] == [{"path": "$.ticket_id", "message": "Invalid UUID"}]
    r = agent.post(
        "/agent/heartbeat",
        json={
            "ticket_id": "0b9e5d6e-5c43-4a55-9d59-7f0f0d4e2a11",
            "vm_id": "vm-1",
            "progress": 101,
        },
    )
    assert error_of(r)["details"] == [{"path": "$.progress", "message": "Expected `int` <= 100"}]
    r = agent.post("/agent/claim", json=[1])
    assert error_of(r)["details"] == [{"path": "$", "message": "Expected `object`, got `array`"}]
    assert agent.get("/agent/claim").status_code == 405


def test_concurrent_agents_claim_distinct_tickets(server: LiveServer, database_url: str) -> None:
    ids = insert_pending(database_url, "acme", 60)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await bounded_gather(
                20,
                (
                    client.post(
                        "/agent/claim",
                        json={"vm_id": f"vm-{i % 10}"},
                        headers={"authorization": f"Bearer {token('acme', 'agent', f'a{i % 10}')}"},
                    )
                    for i in range(70)
                ),
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 70
    claimed = [r.json()["ticket"]["_id"] for r in responses if r.json()["ticket"]]
    assert sorted(claimed) == sorted(ids)
    assert sql(database_url, "SELECT count(*) FROM tickets WHERE state = 'claimed'") == [(60,)]
