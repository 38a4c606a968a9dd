"""What the suite needs from its environment (credentials never travel as command-line flags).

    SWARM_LT_AGENT_KEYS        comma-separated API keys (role agent): one per simulated VM,
                               reused round-robin when there are more agents than keys
    SWARM_LT_VIEWER_TOKENS     comma-separated JWTs (role viewer) for the dashboard readers
    SWARM_LT_OPERATOR_TOKENS   comma-separated JWTs (role operator) for the operators; they
                               also prepare the data (projects, tickets, HITL sessions)
    SWARM_LT_WEBHOOK_SECRET    the GitHub webhook secret; unset: no GitHub deliveries
    SWARM_LT_GITHUB_FIXTURES   folder of GitHub payload examples (tests/fixtures/github)

`swarm-runtime loadtest` sets them all for the runtime it starts.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


AGENT_KEYS = _list("SWARM_LT_AGENT_KEYS")
VIEWER_TOKENS = _list("SWARM_LT_VIEWER_TOKENS")
OPERATOR_TOKENS = _list("SWARM_LT_OPERATOR_TOKENS")
WEBHOOK_SECRET = os.environ.get("SWARM_LT_WEBHOOK_SECRET", "")
GITHUB_FIXTURES = Path(
    os.environ.get("SWARM_LT_GITHUB_FIXTURES", REPO / "tests" / "fixtures" / "github")
)


class RoundRobin:
    """Hands out credentials in turn; safe across the greenlets that start users."""

    def __init__(self, items: list[str]) -> None:
        self._items = items
        self._cycle: Iterator[str] = itertools.cycle(items) if items else iter(())
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._items)

    def next(self) -> str:
        with self._lock:
            return next(self._cycle)


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without verifying it (the server verifies; we only route)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def tenant_of(token: str) -> str:
    return str(jwt_claims(token).get("tenant_id") or "")
