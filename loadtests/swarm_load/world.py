"""The data the users work on, found (or made) once before any user starts.

For each tenant of the operator tokens: its projects, a sample of its tickets, the pull
request URLs of its tickets in review or completed (the GitHub deliveries close those), and
two HITL sessions with messages for the dashboards to read. A tenant without projects or
tickets gets a few, so the suite also runs against a deployment that was never seeded.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import requests

from swarm_load.config import OPERATOR_TOKENS, tenant_of

log = logging.getLogger("swarm_load.world")

MAX_PROJECTS = 10
MAX_TICKETS = 500
HITL_SESSIONS = 2
HITL_MESSAGES = 25


class SetupError(Exception):
    """The data could not be prepared: the run cannot measure anything meaningful."""


@dataclass
class Tenant:
    name: str
    projects: list[str] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    pr_urls: list[str] = field(default_factory=list)


WORLD: dict[str, Tenant] = {}


def pr_urls() -> list[str]:
    return [url for tenant in WORLD.values() for url in tenant.pr_urls]


class _Client:
    def __init__(self, host: str, token: str) -> None:
        self.host = host.rstrip("/")
        self.session = requests.Session()
        self.session.headers["authorization"] = f"Bearer {token}"

    def call(self, function: str, **args: Any) -> Any:
        try:
            r = self.session.post(f"{self.host}/fn/{function}", json=args, timeout=30)
        except requests.RequestException as exc:
            raise SetupError(f"{function}: {exc}") from exc
        if r.status_code != 200:
            raise SetupError(f"{function} answered {r.status_code}: {r.text[:300]}")
        return r.json()["value"]


def prepare(host: str) -> None:
    """Fill WORLD, once per tenant; raises SetupError."""
    if not OPERATOR_TOKENS:
        raise SetupError("SWARM_LT_OPERATOR_TOKENS is empty: nobody can prepare the data")
    for token in OPERATOR_TOKENS:
        name = tenant_of(token)
        if not name:
            raise SetupError("an operator token has no tenant_id claim")
        if name not in WORLD:
            WORLD[name] = _prepare_tenant(_Client(host, token), name)
            t = WORLD[name]
            log.info(
                "tenant %s: %d projects, %d tickets, %d PRs, %d HITL sessions",
                name,
                len(t.projects),
                len(t.tickets),
                len(t.pr_urls),
                len(t.sessions),
            )


def _prepare_tenant(client: _Client, name: str) -> Tenant:
    tenant = Tenant(name)
    projects = client.call("projects.list", limit=MAX_PROJECTS)["page"]
    if not projects:
        projects = [client.call("projects.create", name="loadtest", state="active")]
    tenant.projects = [p["_id"] for p in projects]
    for project_id in tenant.projects:
        page = client.call("tickets.get_by_project", project_id=project_id, limit=200)["page"]
        for ticket in page:
            if len(tenant.tickets) < MAX_TICKETS:
                tenant.tickets.append(ticket["_id"])
            if ticket.get("pr_url") and ticket["state"] in ("review", "completed"):
                tenant.pr_urls.append(ticket["pr_url"])
    if not tenant.tickets:
        for i in range(20):
            ticket = client.call(
                "tickets.create", title=f"Load test ticket {i}", project_id=tenant.projects[0]
            )
            client.call("tickets.set_state", ticket_id=ticket["_id"], state="pending")
            tenant.tickets.append(ticket["_id"])
    rng = random.Random(name)
    for s in range(HITL_SESSIONS):
        session = client.call(
            "hitl.create_session",
            title=f"Load test session {s}",
            project_id=rng.choice(tenant.projects),
        )
        for m in range(HITL_MESSAGES):
            client.call(
                "hitl.send_message",
                session_id=session["_id"],
                content=f"Message {m}: the agent asks whether to keep the old API around.",
            )
        tenant.sessions.append(session["_id"])
    return tenant
