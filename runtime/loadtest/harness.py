"""What `loadtest` measures when no `--host` is given: a runtime it starts and stops itself.

In order: the embedded PostgreSQL under `<data>/pg` and a fresh database `swarm_loadtest`;
random JWT and webhook secrets; `swarm-runtime seed --demo`; one API key (role agent) per
agent and a viewer and an operator JWT per tenant; then `swarm-runtime serve` on a free local
port, until `/readyz` answers. Everything the server prints goes to `server.log` in the
report folder. `stop()` sends SIGTERM (serve drains) and stops PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from runtime.embedded_pg import EmbeddedPostgres

DATABASE = "swarm_loadtest"
TOKEN_TTL_S = 6 * 3600
READY_TIMEOUT_S = 90.0


class HarnessError(Exception):
    """The runtime under test could not be started; the message says where to look."""


@dataclass
class Credentials:
    """What the Locust suite authenticates with (the SWARM_LT_* environment)."""

    agent_keys: list[str] = field(default_factory=list)
    viewer_tokens: list[str] = field(default_factory=list)
    operator_tokens: list[str] = field(default_factory=list)
    webhook_secret: str = ""

    def env(self) -> dict[str, str]:
        return {
            "SWARM_LT_AGENT_KEYS": ",".join(self.agent_keys),
            "SWARM_LT_VIEWER_TOKENS": ",".join(self.viewer_tokens),
            "SWARM_LT_OPERATOR_TOKENS": ",".join(self.operator_tokens),
            "SWARM_LT_WEBHOOK_SECRET": self.webhook_secret,
        }


def cli_command() -> list[str]:
    """How to run this installation's `swarm-runtime`."""
    script = Path(sys.executable).parent / "swarm-runtime"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runtime.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign_people_tokens(tenants: list[str], secret: bytes | None = None) -> Credentials:
    """A viewer and an operator JWT per tenant (with RUNTIME_JWT_SECRET when `secret` is None)."""
    from runtime.auth.tokens import sign_token, sign_token_from_env

    creds = Credentials()
    for tenant in tenants:
        for role, bucket in (("viewer", creds.viewer_tokens), ("operator", creds.operator_tokens)):
            user = f"loadtest-{role}@{tenant}"
            if secret is None:
                token = sign_token_from_env(
                    user_id=user, tenant_id=tenant, roles=[role], ttl_s=TOKEN_TTL_S
                )
            else:
                token = sign_token(
                    secret, user_id=user, tenant_id=tenant, roles=[role], ttl_s=TOKEN_TTL_S
                )
            bucket.append(token)
    return creds


class LocalRuntime:
    """The runtime under test, on the embedded PostgreSQL; `start()` then `stop()`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        report_dir: Path,
        tenants: list[str],
        agent_keys: int,
        workers: int,
        app_args: list[str],
        say: Callable[[str], None],
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.report_dir = report_dir
        self.tenants = tenants
        self.agent_keys = agent_keys
        self.workers = workers
        self.app_args = app_args
        self.say = say
        self.cluster: EmbeddedPostgres | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.postgres_pid: int | None = None

    @property
    def server_log(self) -> Path:
        return self.report_dir / "server.log"

    def start(self) -> Credentials:
        from runtime.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

        cluster = EmbeddedPostgres(self.data_dir / "pg", log=lambda _m: None)
        self.cluster = cluster
        try:
            admin_url = cluster.start()
        except EmbeddedPostgresError as exc:
            raise HarnessError(f"embedded PostgreSQL: {exc}") from exc
        self.postgres_pid = _postmaster_pid(cluster.pgdata)
        database_url = _fresh_database(admin_url, DATABASE)
        jwt_secret = secrets.token_urlsafe(48)
        webhook_secret = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            DATABASE_URL=database_url,
            RUNTIME_DATA=str(self.data_dir),
            RUNTIME_JWT_SECRET=jwt_secret,
            GITHUB_WEBHOOK_SECRET=webhook_secret,
            RUNTIME_LOG_FORMAT="json",
            RUNTIME_DEV="0",
            RUNTIME_RELOAD="0",
        )

        self.say(f"seeding the demo data (tenants {', '.join(self.tenants)})")
        seed = [*cli_command(), "seed", "--demo", *self.app_args]
        for tenant in self.tenants:
            seed += ["--tenant", tenant]
        with (self.report_dir / "seed.log").open("wb") as out:
            done = subprocess.run(seed, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise HarnessError(
                f"`swarm-runtime seed --demo` failed (exit {done.returncode}); see "
                f"{self.report_dir / 'seed.log'}"
            )

        creds = sign_people_tokens(self.tenants, jwt_secret.encode())
        creds.webhook_secret = webhook_secret
        creds.agent_keys = _create_agent_keys(database_url, self.tenants, self.agent_keys)

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        serve = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        serve += ["--workers", str(self.workers), *self.app_args]
        self.say(f"starting `swarm-runtime serve --workers {self.workers}` on {self.url}")
        with self.server_log.open("wb") as out:
            self.server = subprocess.Popen(
                serve, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready()
        return creds

    def _wait_ready(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise HarnessError(
                    f"serve exited with {self.server.returncode} before it was ready; see "
                    f"{self.server_log}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise HarnessError(
            f"serve was not ready within {READY_TIMEOUT_S:.0f} s; see {self.server_log}"
        )

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=45)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def _create_agent_keys(database_url: str, tenants: list[str], count: int) -> list[str]:
    from runtime.auth.keystore import create_key

    keys = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i in range(count):
            tenant = tenants[i % len(tenants)]
            key = create_key(conn, tenant_id=tenant, role="agent", name=f"loadtest-vm-{i}")
            keys.append(key.token)
    return keys
