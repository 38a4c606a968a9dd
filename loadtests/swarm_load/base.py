"""What the user classes share: Locust's timeouts for every user, and a person of one tenant.

Both are `abstract`: Locust never spawns them, only the classes built on them.
"""

from __future__ import annotations

from locust.contrib.fasthttp import FastHttpUser

from swarm_load import api
from swarm_load.config import RoundRobin, tenant_of
from swarm_load.world import WORLD, Tenant


class SwarmUser(FastHttpUser):
    """Every user: a request gives up after 10 s, a connect after 5 s."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 5.0


class TenantUser(SwarmUser):
    """A person with a JWT (the next of `tokens`), working on their tenant's data in WORLD."""

    abstract = True
    tokens: RoundRobin

    def on_start(self) -> None:
        token = self.tokens.next()
        self.headers = api.bearer(token)
        self.tenant: Tenant = WORLD[tenant_of(token)]
