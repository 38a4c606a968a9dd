"""Demo data for development, the dashboard and load tests (`swarm-runtime seed --demo`).

Per tenant: four users (admin, operator, viewer, agent), three projects, and
`tickets_per_project` tickets per project with epics and children, dependencies, priorities
and every ticket state, consistent with the ticket rules (a ticket with an unfinished
dependency is never pending, leased tickets have a VM and a live lease, completed ones a PR).
Deterministic per tenant name. Idempotent: a tenant that already holds seeded projects is
skipped and reported as such.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from runtime import internal_mutation

SEED_MARK = "seed:demo"
DEFAULT_TENANTS = ("acme", "globex")
ROLES = ("admin", "operator", "viewer", "agent")

PROJECTS = (
    ("checkout-service", "Payments and checkout API", "active"),
    ("agent-dashboard", "Operator dashboard for the agent fleet", "active"),
    ("data-pipeline", "Nightly ingestion and reporting jobs", "paused"),
)
VERBS = ("Add", "Fix", "Refactor", "Document", "Test", "Speed up", "Migrate", "Harden")
TOPICS = (
    "rate limiting on the public API",
    "retry logic in the webhook consumer",
    "pagination of the ticket list",
    "login form validation",
    "the CSV export",
    "database connection pooling",
    "error messages of the CLI",
    "the settings page",
    "flaky integration tests",
    "the metrics endpoint",
    "audit logging",
    "the search index",
    "dark mode",
    "the onboarding flow",
    "timezone handling in reports",
    "S3 upload retries",
)
ERRORS = (
    "Tests failed: 3 of 214 (test_export_unicode, ...)",
    "Build failed: type error in src/api/handlers.py:88",
    "Agent exceeded its time budget",
)
# Weights of the states a ticket may take when all its dependencies are completed.
READY_STATES = (
    ("completed", 30),
    ("pending", 26),
    ("in_progress", 8),
    ("claimed", 4),
    ("review", 8),
    ("failed", 4),
    ("draft", 10),
    ("hold", 4),
)
UNREADY_STATES = (("blocked", 80), ("draft", 15), ("hold", 5))


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([s for s, _ in weighted], [w for _, w in weighted])[0]


@internal_mutation
async def demo(
    ctx: Any, tenants: list[str] | None = None, tickets_per_project: int = 50
) -> dict[str, Any]:
    """Seed the demo data set for each tenant that has none yet; report what was created."""
    report: dict[str, Any] = {}
    for tenant in tenants or DEFAULT_TENANTS:
        seeded = await ctx.sql(
            "SELECT 1 FROM projects WHERE tenant_id = %s AND created_by = %s LIMIT 1",
            tenant,
            SEED_MARK,
        )
        if seeded:
            report[tenant] = {"created": False, "reason": "already seeded"}
            continue
        report[tenant] = await _seed_tenant(ctx, tenant, tickets_per_project)
    return {"tenants": report}


async def _seed_tenant(ctx: Any, tenant: str, per_project: int) -> dict[str, Any]:
    rng = random.Random(f"swarm-demo:{tenant}")
    users = await _seed_users(ctx, tenant)
    agent = f"agent@{tenant}.example.com"
    projects: list[str] = []
    by_state: dict[str, int] = {}
    vm_counter = 0
    pr_counter = 100
    for name, description, state in PROJECTS:
        repo = f"https://github.com/{tenant}/{name}"
        project_id = await ctx.db.insert(
            "projects",
            {
                "tenant_id": tenant,
                "name": name,
                "description": description,
                "state": state,
                "repo_url": repo,
                "settings": {"default_branch": "main", "max_parallel_agents": 4},
                "created_by": SEED_MARK,
                "updated_at": ctx.now,
            },
        )
        projects.append(name)
        tickets: list[tuple[str, str]] = []  # (id, state) in creation order
        epics: list[str] = []
        for i in range(per_project):
            is_epic = i % 15 == 0
            deps: list[str] = []
            if tickets and not is_epic and rng.random() < 0.35:
                window = tickets[-12:]
                deps = [t for t, _ in rng.sample(window, k=min(len(window), rng.choice((1, 1, 2))))]
            states = dict(tickets)
            ready = all(states[d] == "completed" for d in deps)
            state = _pick(rng, READY_STATES if ready else UNREADY_STATES)
            title = f"{rng.choice(VERBS)} {rng.choice(TOPICS)}"
            if is_epic:
                title = f"Epic: {title}"
            doc: dict[str, Any] = {
                "tenant_id": tenant,
                "project_id": project_id,
                "parent_id": (
                    rng.choice(epics) if epics and not is_epic and rng.random() < 0.5 else None
                ),
                "title": title,
                "description": f"{title} in {name}. Done when tests pass and it is documented.",
                "state": state,
                "priority": rng.choices((0, 1, 2, 3, 4), (25, 30, 25, 15, 5))[0],
                "depends_on": deps,
                "rejection_count": 0,
                "created_by": users["operator"],
                "updated_at": ctx.now,
            }
            if state in ("claimed", "in_progress"):
                vm_counter += 1
                doc.update(
                    {
                        "assignee_type": "agent",
                        "assignee_id": agent,
                        "vm_id": f"vm-{tenant}-{vm_counter:03d}",
                        "lease_expires_at": ctx.now + timedelta(minutes=rng.randint(5, 30)),
                        "heartbeat_at": ctx.now - timedelta(seconds=rng.randint(5, 120)),
                        "progress": 0 if state == "claimed" else rng.randint(5, 95),
                    }
                )
                if state == "in_progress":
                    doc["progress_message"] = rng.choice(
                        ("Running tests", "Writing code", "Reading the codebase", "Opening PR")
                    )
            if state in ("review", "completed"):
                pr_counter += 1
                doc.update(
                    {
                        "pr_url": f"{repo}/pull/{pr_counter}",
                        "progress": 100,
                        "assignee_type": "agent",
                        "assignee_id": agent,
                        "result": {
                            "summary": f"Done: {title.lower()}",
                            "files_changed": rng.randint(1, 20),
                        },
                    }
                )
                if state == "completed":
                    doc["completed_at"] = ctx.now - timedelta(hours=rng.randint(1, 72))
            if state == "pending":
                doc["rejection_count"] = rng.choices((0, 1, 2), (85, 10, 5))[0]
            if state == "failed":
                doc.update({"rejection_count": 3, "last_error": rng.choice(ERRORS)})
            if state == "hold":
                doc["review_note"] = "Waiting for a product decision"
            ticket_id = await ctx.db.insert("tickets", doc)
            tickets.append((ticket_id, state))
            if is_epic:
                epics.append(ticket_id)
            by_state[state] = by_state.get(state, 0) + 1
    return {
        "created": True,
        "users": sorted(users.values()),
        "projects": projects,
        "tickets": sum(by_state.values()),
        "by_state": dict(sorted(by_state.items())),
    }


async def _seed_users(ctx: Any, tenant: str) -> dict[str, str]:
    """One user per role (emails `<role>@<tenant>.example.com`), reusing existing ones."""
    emails = {role: f"{role}@{tenant}.example.com" for role in ROLES}
    existing = await ctx.sql(
        "SELECT email FROM users WHERE email = ANY(%s::text[])", list(emails.values())
    )
    have = {r["email"] for r in existing}
    for role, email in emails.items():
        if email not in have:
            await ctx.db.insert(
                "users",
                {
                    "tenant_id": tenant,
                    "email": email,
                    "name": f"{tenant.title()} {role.title()}",
                    "role": role,
                    "active": True,
                    "password_hash": None,
                },
            )
    return emails
