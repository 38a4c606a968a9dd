"""People watching the dashboard (JWT, role viewer): stats, project boards, ticket pages and
HITL conversations of their tenant."""

from __future__ import annotations

import random

from locust import between, task

from swarm_load import api
from swarm_load.base import TenantUser
from swarm_load.config import VIEWER_TOKENS, RoundRobin

BOARD_STATES = ("pending", "in_progress", "review", "completed")


class DashboardUser(TenantUser):
    weight = 4
    wait_time = between(0.5, 2.0)
    tokens = RoundRobin(VIEWER_TOKENS)

    @task(3)
    def stats(self) -> None:
        args = {}
        if random.random() < 0.5:
            args["project_id"] = random.choice(self.tenant.projects)
        api.call(self.client, "tickets.get_stats", args, self.headers)

    @task(3)
    def board(self) -> None:
        args: dict[str, object] = {"project_id": random.choice(self.tenant.projects), "limit": 50}
        if random.random() < 0.4:
            args["state"] = random.choice(BOARD_STATES)
        page = api.call(self.client, "tickets.get_by_project", args, self.headers)
        if isinstance(page, dict) and page.get("cursor") and random.random() < 0.3:
            api.call(
                self.client,
                "tickets.get_by_project",
                {**args, "cursor": page["cursor"]},
                self.headers,
            )

    @task(3)
    def ticket(self) -> None:
        ticket_id = random.choice(self.tenant.tickets)
        api.call(self.client, "tickets.get_by_id", {"ticket_id": ticket_id}, self.headers)

    @task(2)
    def conversation(self) -> None:
        session_id = random.choice(self.tenant.sessions)
        api.call(
            self.client,
            "hitl.get_messages",
            {"session_id": session_id, "limit": 50},
            self.headers,
        )
