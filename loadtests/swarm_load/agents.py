"""Agents on VMs: claim a ticket, heartbeat and report progress, then complete or fail it.

Each simulated VM has its own API key (round-robin when keys are fewer than agents) and
`vm_id`. Every other one speaks the agent routes (`POST /agent/claim`, `/agent/heartbeat` with
progress), half call the functions (`tickets.claim_next`, `heartbeat`, `update_progress`);
both finish with `tickets.complete` (85%) or a retryable `tickets.fail` (15%), which puts the
ticket back in the queue. With nothing to claim an agent polls again after its wait.
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

from locust import between, task

from swarm_load import api
from swarm_load.base import SwarmUser
from swarm_load.config import AGENT_KEYS, RoundRobin

KEYS = RoundRobin(AGENT_KEYS)
_SPAWNED = itertools.count()  # greenlets share one thread: no lock needed
FAIL_SHARE = 0.15


class AgentUser(SwarmUser):
    weight = 5
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.headers = {"x-api-key": KEYS.next()}
        self.vm_id = f"lt-vm-{uuid.uuid4().hex[:10]}"
        self.routes = next(_SPAWNED) % 2 == 0  # this VM speaks /agent/* rather than /fn
        self.ticket: str | None = None
        self.progress = 0

    @task
    def work(self) -> None:
        if self.ticket is None:
            self.claim()
        elif self.progress >= 100:
            self.finish()
        else:
            self.report()

    def claim(self) -> None:
        if self.routes:
            result = api.post(self.client, "/agent/claim", {"vm_id": self.vm_id}, self.headers)
            ticket = result.get("ticket") if isinstance(result, dict) else None
        else:
            ticket = api.call(
                self.client, "tickets.claim_next", {"vm_id": self.vm_id}, self.headers
            )
        if isinstance(ticket, dict):
            self.ticket, self.progress = ticket["_id"], 0

    def report(self) -> None:
        assert self.ticket is not None
        self.progress = min(100, self.progress + random.randint(20, 40))
        args: dict[str, Any] = {"ticket_id": self.ticket, "vm_id": self.vm_id}
        if self.routes:
            body = {**args, "progress": self.progress, "message": "Running the tests"}
            api.post(self.client, "/agent/heartbeat", body, self.headers)
        elif random.random() < 0.5:
            api.call(self.client, "tickets.heartbeat", args, self.headers)
        else:
            progress = {**args, "progress": self.progress, "message": "Writing code"}
            api.call(self.client, "tickets.update_progress", progress, self.headers)

    def finish(self) -> None:
        assert self.ticket is not None
        args: dict[str, Any] = {"ticket_id": self.ticket, "vm_id": self.vm_id}
        if random.random() < FAIL_SHARE:
            args |= {"error": "Tests failed: 2 of 118", "retryable": True}
            api.call(self.client, "tickets.fail", args, self.headers)
        else:
            number = random.randint(1000, 999_999)
            args |= {
                "pr_url": f"https://github.com/loadtest/swarm/pull/{number}",
                "result": {"summary": "Implemented and tested", "files_changed": 3},
            }
            api.call(self.client, "tickets.complete", args, self.headers)
        self.ticket = None
