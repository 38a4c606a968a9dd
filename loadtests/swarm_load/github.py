"""GitHub delivering `pull_request` webhooks, signed like GitHub signs them.

Payloads are the octokit/webhooks examples in tests/fixtures/github/ with the pull request
pointed at a real ticket's `pr_url`: merged closes complete the ticket, unmerged ones send it
back to review, `opened` is acknowledged and ignored (202), and now and then GitHub redelivers
an earlier delivery (same `X-GitHub-Delivery`: answered "duplicate", no second effect).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import uuid
from typing import Any

from locust import between, task

from swarm_load import api
from swarm_load.base import SwarmUser
from swarm_load.config import GITHUB_FIXTURES, WEBHOOK_SECRET
from swarm_load.world import pr_urls

ACCEPTED = (200, 202)


def _fixture(name: str) -> dict[str, Any]:
    with (GITHUB_FIXTURES / f"{name}.json").open() as handle:
        payload: dict[str, Any] = json.load(handle)
    return payload


class GitHubUser(SwarmUser):
    weight = 1
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.closed = _fixture("pull_request.closed")
        self.opened = _fixture("pull_request.opened")
        self.sent: list[tuple[str, str, bytes]] = []  # (event/action, delivery id, body)

    def _payload(self, template: dict[str, Any], merged: bool | None) -> dict[str, Any]:
        payload = copy.deepcopy(template)
        urls = pr_urls()
        url = random.choice(urls) if urls else payload["pull_request"]["html_url"]
        number = int(url.rstrip("/").rsplit("/", 1)[-1]) if url[-1].isdigit() else 1
        pr = payload["pull_request"]
        pr.update(html_url=url, number=number)
        payload["number"] = number
        if merged is not None:
            pr["merged"] = merged
        return payload

    def deliver(self, label: str, body: bytes, delivery_id: str) -> None:
        signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "content-type": "application/json",
            "user-agent": "GitHub-Hookshot/loadtest",
            "x-github-event": "pull_request",
            "x-github-delivery": delivery_id,
            "x-hub-signature-256": f"sha256={signature}",
        }
        name = f"/webhooks/github {label}"
        api.post_bytes(self.client, "/webhooks/github", body, headers, name=name, ok=ACCEPTED)

    def send(self, label: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        delivery_id = str(uuid.uuid4())
        self.sent = [*self.sent[-9:], (label, delivery_id, body)]
        self.deliver(label, body, delivery_id)

    @task(3)
    def merged(self) -> None:
        self.send("pull_request.closed", self._payload(self.closed, merged=True))

    @task(1)
    def closed_unmerged(self) -> None:
        self.send("pull_request.closed", self._payload(self.closed, merged=False))

    @task(2)
    def opened(self) -> None:
        self.send("pull_request.opened", self._payload(self.opened, merged=None))

    @task(1)
    def redelivery(self) -> None:
        if self.sent:
            label, delivery_id, body = random.choice(self.sent)
            self.deliver(label, body, delivery_id)
