"""Operators (JWT, role operator): file tickets into the queue the agents drain, now and then
start a project."""

from __future__ import annotations

import random
import uuid

from locust import between, task

from swarm_load import api
from swarm_load.base import TenantUser
from swarm_load.config import OPERATOR_TOKENS, RoundRobin

VERBS = ("Add", "Fix", "Refactor", "Document", "Test")
TOPICS = ("the billing export", "login throttling", "the webhook retries", "search paging")


class OperatorUser(TenantUser):
    weight = 1
    wait_time = between(1.0, 3.0)
    tokens = RoundRobin(OPERATOR_TOKENS)

    @task(5)
    def file_ticket(self) -> None:
        args = {
            "title": f"{random.choice(VERBS)} {random.choice(TOPICS)}",
            "description": "Filed by the load test. Done when the tests pass.",
            "project_id": random.choice(self.tenant.projects),
            "priority": random.randint(0, 4),
        }
        ticket = api.call(self.client, "tickets.create", args, self.headers)
        if isinstance(ticket, dict):
            self.tenant.tickets.append(ticket["_id"])
            api.call(
                self.client,
                "tickets.set_state",
                {"ticket_id": ticket["_id"], "state": "pending"},
                self.headers,
            )

    @task(1)
    def start_project(self) -> None:
        args = {
            "name": f"lt-{uuid.uuid4().hex[:8]}",
            "description": "Created by the load test",
            "repo_url": "https://github.com/loadtest/swarm",
            "state": "active",
        }
        api.call(self.client, "projects.create", args, self.headers)
