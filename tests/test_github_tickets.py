"""GitHub pull requests drive tickets: `POST /webhooks/github` -> `github.on_event` -> the
ticket whose `pr_url` is the PR's `html_url`."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, AppFiles, LiveServer
from tests.swarm_app import TICKETS, Api, api_fixture, install, sql, token
from tests.test_tickets import new_ticket, pending_ticket

SECRET = "tickets-webhook-secret"
PR_URL = "https://github.com/acme/checkout/pull/42"


@pytest.fixture
def server(
    app_files: AppFiles, serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> LiveServer:
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", SECRET)
    return serve(install(app_files, TICKETS, ["agent_routes", "github_webhooks"]))


api = api_fixture(token("acme", "operator", "alice"))


def pull_request_closed(url: str, merged: bool) -> bytes:
    payload = json.loads((REPO / "tests/fixtures/github/pull_request.closed.json").read_bytes())
    payload["pull_request"]["html_url"] = url
    payload["pull_request"]["merged"] = merged
    return json.dumps(payload).encode()


def deliver(
    server: LiveServer, event: str, body: bytes, delivery: str | None = None
) -> httpx.Response:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "content-type": "application/json",
        "x-hub-signature-256": f"sha256={digest}",
    }
    return httpx.post(f"{server.url}/webhooks/github", content=body, headers=headers, timeout=30)


def in_review(api: Api, url: str = PR_URL, **args: Any) -> dict[str, Any]:
    ticket = pending_ticket(api, **args)
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    review = api.ok("tickets.set_state", ticket_id=ticket["_id"], state="review", pr_url=url)
    assert review["pr_url"] == url and review["lease_expires_at"] is None
    return review  # type: ignore[no-any-return]


def test_merged_pull_request_completes_the_ticket_and_unblocks(
    api: Api, server: LiveServer
) -> None:
    ticket = in_review(api)
    dependent = new_ticket(api, "next step", depends_on=[ticket["_id"]])
    api.ok("tickets.set_state", ticket_id=dependent["_id"], state="pending")  # -> blocked
    delivery = str(uuid.uuid4())
    r = deliver(server, "pull_request", pull_request_closed(PR_URL, merged=True), delivery)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "processed", "delivery_id": delivery, "ticket_id": ticket["_id"]}
    done = api.ok("tickets.get_by_id", ticket_id=ticket["_id"])
    assert done["state"] == "completed" and done["completed_at"]
    assert api.ok("tickets.get_by_id", ticket_id=dependent["_id"])["state"] == "pending"
    assert sql(
        server.runtime.database_url,
        "SELECT event, action, outcome, ticket_id::text FROM github_deliveries",
    ) == [
        ("pull_request", "closed", "processed", ticket["_id"]),
    ]
    again = deliver(server, "pull_request", pull_request_closed(PR_URL, merged=True), delivery)
    assert again.json()["status"] == "duplicate"
    # A new delivery of the same merge changes nothing more.
    r = deliver(server, "pull_request", pull_request_closed(PR_URL, merged=True))
    assert r.json()["status"] == "processed"
    assert api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["state"] == "completed"


def test_pull_request_closed_unmerged_moves_to_review(api: Api, server: LiveServer) -> None:
    ticket = pending_ticket(api)
    api.ok("tickets.claim", ticket_id=ticket["_id"], vm_id="vm-1")
    api.ok("tickets.update_progress", ticket_id=ticket["_id"], progress=90)
    api.ok("tickets.complete", ticket_id=ticket["_id"], pr_url=PR_URL)
    r = deliver(server, "pull_request", pull_request_closed(PR_URL, merged=False))
    assert r.status_code == 200 and r.json()["ticket_id"] == ticket["_id"]
    reopened = api.ok("tickets.get_by_id", ticket_id=ticket["_id"])
    assert reopened["state"] == "review"
    assert reopened["review_note"] == f"Pull request {PR_URL} was closed without being merged"
    # In progress (the agent opened the PR but did not finish): to review, lease ended.
    other = pending_ticket(api, "other")
    api.ok("tickets.claim", ticket_id=other["_id"], vm_id="vm-2")
    url = "https://github.com/acme/checkout/pull/43"
    api.ok("tickets.update_progress", ticket_id=other["_id"], progress=50)
    api.ok("tickets.set_state", ticket_id=other["_id"], state="in_progress", pr_url=url)
    deliver(server, "pull_request", pull_request_closed(url, merged=False))
    moved = api.ok("tickets.get_by_id", ticket_id=other["_id"])
    assert moved["state"] == "review" and moved["lease_expires_at"] is None


def test_other_events_are_recorded_and_ignored(api: Api, server: LiveServer) -> None:
    ticket = in_review(api)
    r = deliver(
        server,
        "pull_request",
        pull_request_closed("https://github.com/acme/checkout/pull/999", merged=True),
    )
    assert (r.status_code, r.json()["status"]) == (202, "ignored")
    opened = (REPO / "tests/fixtures/github/pull_request.opened.json").read_bytes()
    assert deliver(server, "pull_request", opened).status_code == 202
    issues = (REPO / "tests/fixtures/github/issues.opened.json").read_bytes()
    assert deliver(server, "issues", issues).status_code == 202
    assert api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["state"] == "review"
    outcomes = sql(
        server.runtime.database_url,
        "SELECT event, outcome FROM github_deliveries ORDER BY _creation_time",
    )
    assert outcomes == [
        ("pull_request", "ignored"),
        ("pull_request", "ignored"),
        ("issues", "ignored"),
    ]


def test_merge_of_a_ticket_in_an_illegal_state_is_ignored(api: Api, server: LiveServer) -> None:
    ticket = new_ticket(api)
    sql(
        server.runtime.database_url,
        "UPDATE tickets SET pr_url = %s WHERE _id = %s",
        PR_URL,
        ticket["_id"],
    )
    r = deliver(server, "pull_request", pull_request_closed(PR_URL, merged=True))
    assert (r.status_code, r.json()["status"]) == (202, "ignored")
    assert api.ok("tickets.get_by_id", ticket_id=ticket["_id"])["state"] == "draft"
