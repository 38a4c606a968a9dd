"""seed.demo and the `swarm-runtime call` / `seed --demo` commands, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from runtime.cli.call import call_function
from tests.conftest import REPO, AppFiles
from tests.swarm_app import TICKET_PLUGINS, TICKET_STATES, TICKETS, install, sql


def seed(files: AppFiles, database_url: str, **args: Any) -> Any:
    return asyncio.run(call_function(files.settings(), database_url, "seed.demo", args))


def test_demo_data_is_consistent_and_seeded_once(app_files: AppFiles, database_url: str) -> None:
    install(app_files, TICKETS, TICKET_PLUGINS)
    report = seed(app_files, database_url)["tenants"]
    assert set(report) == {"acme", "globex"}
    for tenant, r in report.items():
        assert r["created"] is True
        assert r["projects"] == ["checkout-service", "agent-dashboard", "data-pipeline"]
        assert r["tickets"] == 150 and sum(r["by_state"].values()) == 150
        assert r["users"] == sorted(
            f"{role}@{tenant}.example.com" for role in ("admin", "operator", "viewer", "agent")
        )
    states = dict(sql(database_url, "SELECT state, count(*) FROM tickets GROUP BY state"))
    assert sum(states.values()) == 300
    assert set(states) == TICKET_STATES
    assert sql(database_url, "SELECT tenant_id, count(*) FROM users GROUP BY 1 ORDER BY 1") == [
        ("acme", 4),
        ("globex", 4),
    ]
    # The ticket rules hold: nothing pending or leased waits on an unfinished dependency,
    # every blocked ticket does, leased tickets hold a live lease and a VM, one VM one ticket.
    assert sql(
        database_url,
        """
        SELECT count(*) FROM tickets t
        WHERE t.state IN ('pending', 'claimed', 'in_progress', 'review', 'completed')
          AND EXISTS (SELECT 1 FROM tickets d WHERE d._id = ANY(t.depends_on)
                      AND d.state <> 'completed')""",
    ) == [(0,)]
    assert sql(
        database_url,
        """
        SELECT count(*) FROM tickets t WHERE t.state = 'blocked'
          AND NOT EXISTS (SELECT 1 FROM tickets d WHERE d._id = ANY(t.depends_on)
                          AND d.state <> 'completed')""",
    ) == [(0,)]
    assert sql(
        database_url,
        """
        SELECT count(*) FROM tickets WHERE state IN ('claimed', 'in_progress')
          AND (vm_id IS NULL OR lease_expires_at <= now())""",
    ) == [(0,)]
    assert sql(
        database_url,
        """
        SELECT count(*) FROM (SELECT vm_id FROM tickets WHERE vm_id IS NOT NULL
                              GROUP BY vm_id HAVING count(*) > 1) x""",
    ) == [(0,)]
    assert sql(
        database_url,
        "SELECT count(*) FROM tickets WHERE state = 'completed'"
        " AND (pr_url IS NULL OR completed_at IS NULL)",
    ) == [(0,)]
    [(with_deps,)] = sql(database_url, "SELECT count(*) FROM tickets WHERE depends_on <> '{}'")
    [(children,)] = sql(database_url, "SELECT count(*) FROM tickets WHERE parent_id IS NOT NULL")
    assert with_deps > 30 and children > 30
    # Again: nothing more is created.
    again = seed(app_files, database_url)["tenants"]
    assert again == {t: {"created": False, "reason": "already seeded"} for t in ("acme", "globex")}
    assert sql(database_url, "SELECT count(*) FROM tickets") == [(300,)]


def test_seed_other_tenants(app_files: AppFiles, database_url: str) -> None:
    install(app_files, TICKETS, TICKET_PLUGINS)
    report = seed(app_files, database_url, tenants=["initech"], tickets_per_project=10)["tenants"]
    assert report["initech"]["tickets"] == 30
    assert sql(database_url, "SELECT DISTINCT tenant_id FROM tickets") == [("initech",)]


def _cli(files: AppFiles, database_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "RUNTIME_LEASE_SWEEP_S": "0"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from runtime.cli import main; sys.exit(main())",
            *argv,
            "--functions",
            str(files.functions),
            "--schema",
            str(files.schema_path),
            "--plugins",
            str(files.plugins),
            "--data",
            str(files.root / ".runtime"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def test_cli_seed_and_call(app_files: AppFiles, database_url: str) -> None:
    install(app_files, TICKETS, TICKET_PLUGINS)
    out = _cli(
        app_files, database_url, "seed", "--demo", "--tenant", "acme", "--tickets-per-project", "20"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        "acme: 4 users (admin@acme.example.com, agent@acme.example.com, "
        "operator@acme.example.com, viewer@acme.example.com)"
    )
    assert lines[1] == "acme: 3 projects (checkout-service, agent-dashboard, data-pipeline)"
    assert lines[2].startswith("acme: 60 tickets (")
    out = _cli(app_files, database_url, "seed", "--demo", "--tenant", "acme")
    assert out.returncode == 0 and out.stdout == "acme: skipped (already seeded)\n"
    # `call` runs any function as the system identity (every tenant), internal ones too.
    out = _cli(app_files, database_url, "call", "tickets.get_stats")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["total"] == 60
    out = _cli(app_files, database_url, "call", "tickets.expire_leases", '{"limit": 10}')
    assert out.returncode == 0 and json.loads(out.stdout)["expired"] == 0
    out = _cli(app_files, database_url, "call", "tickets.get_by_id", '{"ticket_id": "nope"}')
    assert out.returncode == 1
    assert json.loads(out.stderr)["error"]["code"] == "invalid_args"
    out = _cli(app_files, database_url, "call", "tickets.get_stats", "[1]")
    assert out.returncode == 2 and "must be a JSON object" in out.stderr
