"""Swarm Runtime load test: `swarm-runtime loadtest` (or `make loadtest`) runs this file.

Run by hand against a runtime you started (credentials in the environment, see
swarm_load/config.py):

    locust -f loadtests/locustfile.py --headless -u 40 -r 10 -t 60s --host http://127.0.0.1:3210

User classes and weights: AgentUser 5, DashboardUser 4, OperatorUser 1, GitHubUser 1 (left
out without SWARM_LT_WEBHOOK_SECRET). The gate (swarm_load/gate.py) sets the exit code:
0 go, 1 no-go, 2 the data could not be prepared.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from locust import events
from swarm_load import gate  # noqa: F401  (registers the arguments and the gate)
from swarm_load.agents import AgentUser
from swarm_load.config import WEBHOOK_SECRET
from swarm_load.dashboard import DashboardUser
from swarm_load.operators import OperatorUser
from swarm_load.world import SetupError, prepare

log = logging.getLogger("swarm_load")

__all__ = ["AgentUser", "DashboardUser", "OperatorUser"]

if WEBHOOK_SECRET:
    from swarm_load.github import GitHubUser

    __all__ += ["GitHubUser"]


@events.test_start.add_listener
def _prepare(environment: Any, **_kwargs: Any) -> None:
    try:
        prepare(environment.host)
    except SetupError as exc:
        log.error("cannot prepare the load test's data: %s", exc)
        environment.process_exit_code = 2
        gevent.spawn(environment.runner.quit)  # not from inside the start: it would be ignored
