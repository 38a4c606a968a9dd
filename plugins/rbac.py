"""Role-based access control: `@mutation(permission="tickets:claim")` is enforced here.

A caller's roles come from its identity (a JWT's `roles`/`role` claim, an API key's role).
When the identity is a user whose id is a row of table `users`, that row wins: its `role`
replaces the token's roles (a demotion takes effect at once, not when the token expires) and
`active = false` refuses every call. A role's permissions are the rows of `role_permissions`
joining `roles` to `permissions`. Two wildcards: `*` grants everything, `tickets:*` every
`tickets:...` permission. A missing permission answers 403 `forbidden` naming it.

Seeding (the `startup` hook, idempotent, safe for several workers starting at once): the
roles admin, operator, agent and viewer and the Swarm permissions are inserted with
`ON CONFLICT DO NOTHING` on their unique indexes; a role's default grants are inserted only
in the transaction that created the role, so grants an operator removed later are not put
back on the next start. Permissions declared by loaded functions are added too (admin holds
`*`, so it can call them; grant them to other roles yourself).

Cache and invalidation: the permissions of each set of roles and each user's row are cached
in memory, so the hot path makes no database round trip. Statement-level triggers on roles,
permissions, role_permissions and users (INSERT, DELETE, TRUNCATE, and UPDATE of the
columns that matter) call `pg_notify('swarm_rbac', <table>)`; every worker holds one
LISTEN connection and empties its cache when a notification arrives (~1 ms after the
commit). LISTEN/NOTIFY was chosen over a version counter because a counter must be read on
every call (a round trip, which is what the cache avoids) or polled (a stale window as long
as the poll interval). While the LISTEN connection is down the cache is bypassed and every
check reads the tables, so a missed notification can never leave a stale grant in place;
when it reconnects the cache starts empty.

Identities of kind "dev" and "system" are left to the built-in rule (they may do anything).
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from runtime import Forbidden, Identity, Unavailable, hookimpl

log = logging.getLogger("plugins.rbac")

CHANNEL = "swarm_rbac"
TABLES = ("roles", "permissions", "role_permissions", "users")
MAX_CACHED_USERS = 10_000
LISTEN_READY_TIMEOUT_S = 5.0

# name: (level, description, default grants). A higher level includes more.
ROLES: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "admin": (100, "Everything, including users, keys and secrets", ("*",)),
    "operator": (
        50,
        "Runs the swarm: tickets, projects, HITL, design sessions, workflows and VMs",
        (
            "tickets:*",
            "projects:*",
            "hitl:*",
            "design:*",
            "workflows:*",
            "vms:*",
            "secrets:read",
            "users:read",
        ),
    ),
    "agent": (
        20,
        "An agent VM working on tickets",
        (
            "tickets:read",
            "tickets:claim",
            "tickets:update",
            "tickets:complete",
            "projects:read",
            "hitl:read",
            "hitl:write",
            "secrets:read",
        ),
    ),
    "viewer": (
        10,
        "Reads what the dashboards show",
        ("tickets:read", "projects:read", "hitl:read", "design:read", "workflows:read", "vms:read"),
    ),
}

# The permissions the Swarm functions use, with a description each.
PERMISSIONS: dict[str, str] = {
    "*": "Every permission",
    "tickets:*": "Every tickets permission",
    "tickets:create": "Create tickets",
    "tickets:read": "Read tickets",
    "tickets:update": "Edit tickets and report progress",
    "tickets:claim": "Claim a pending ticket",
    "tickets:complete": "Complete or fail a claimed ticket",
    "tickets:review": "Approve or reject a ticket in review",
    "tickets:delete": "Delete tickets",
    "projects:*": "Every projects permission",
    "projects:read": "Read projects",
    "projects:write": "Create, edit, pause and archive projects",
    "hitl:*": "Every human-in-the-loop permission",
    "hitl:read": "Read HITL sessions",
    "hitl:write": "Open HITL sessions, ask and answer",
    "hitl:approve": "Approve or reject a HITL request",
    "design:*": "Every design-session permission",
    "design:read": "Read design sessions",
    "design:write": "Run design sessions",
    "workflows:*": "Every workflows permission",
    "workflows:read": "Read workflows",
    "workflows:write": "Create and edit workflows",
    "vms:*": "Every VM permission",
    "vms:read": "List VMs and their state",
    "vms:spawn": "Start VMs",
    "vms:write": "Stop VMs and change their state",
    "secrets:read": "Read secrets",
    "secrets:write": "Create, rotate and delete secrets",
    "users:read": "List users",
    "users:admin": "Manage users, roles and API keys",
}

# -- SQL ------------------------------------------------------------------------------------

SETUP_LOCK = "SELECT pg_advisory_xact_lock(hashtext('swarm_rbac_setup'))"
MISSING_TABLES = "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL"
NOTIFY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION swarm_rbac_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
  RETURN NULL;
END $$"""
TRIGGER_EXISTS = """
SELECT 1 FROM pg_trigger WHERE tgname = 'swarm_rbac_notify' AND tgrelid = to_regclass(%s)"""
# users changes often (last_login_at): only the columns that decide access notify.
TRIGGERS = {
    "roles": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "permissions": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "role_permissions": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    "users": "INSERT OR UPDATE OF role, active OR DELETE OR TRUNCATE",
}
CREATE_TRIGGER = """
CREATE TRIGGER swarm_rbac_notify AFTER {events} ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION swarm_rbac_notify()"""
INSERT_ROLES = """
INSERT INTO roles (name, level, description)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[])
ON CONFLICT (name) DO NOTHING
RETURNING name"""
INSERT_PERMISSIONS = """
INSERT INTO permissions (name, category, description)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
ON CONFLICT (name) DO NOTHING"""
INSERT_GRANTS = """
INSERT INTO role_permissions (role_id, permission_id)
SELECT r._id, p._id
FROM unnest(%s::text[], %s::text[]) AS g(role_name, permission_name)
JOIN roles r ON r.name = g.role_name
JOIN permissions p ON p.name = g.permission_name
ON CONFLICT (role_id, permission_id) DO NOTHING"""
PERMISSIONS_OF_ROLES = """
SELECT DISTINCT p.name
FROM roles r
JOIN role_permissions rp ON rp.role_id = r._id
JOIN permissions p ON p._id = rp.permission_id
WHERE r.name = ANY(%s::text[])"""
USER_ROW = "SELECT role, active FROM users WHERE _id = %s::uuid"

_UUID = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


def category_of(permission: str) -> str:
    return permission.partition(":")[0] if ":" in permission else "all"


def grants(held: frozenset[str], needed: str) -> bool:
    """Whether the permissions `held` include `needed`, directly or by a wildcard."""
    return needed in held or "*" in held or f"{needed.partition(':')[0]}:*" in held


# -- state, one per runtime ---------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    role: str | None
    active: bool


@dataclass
class RbacState:
    """The caches of one runtime and the task that keeps them honest."""

    database_url: str
    permissions: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)
    users: dict[str, UserRow | None] = field(default_factory=dict)
    generation: int = 0  # bumped on every invalidation
    listening: bool = False  # the cache is only used while LISTEN is up
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    loads: int = 0  # cache misses that read the tables (tests and metrics read it)
    listener: asyncio.Task[None] | None = None

    def invalidate(self) -> None:
        self.generation += 1
        self.permissions.clear()
        self.users.clear()


_states: weakref.WeakKeyDictionary[Any, RbacState] = weakref.WeakKeyDictionary()


def state_of(runtime: Any) -> RbacState:
    state = _states.get(runtime)
    if state is None:
        state = _states[runtime] = RbacState(runtime.database_url)
    return state


async def _listen(state: RbacState) -> None:
    """Hold a LISTEN connection; empty the cache on each notification; reconnect on loss."""
    delay = 0.1
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                state.database_url, autocommit=True, application_name="swarm-runtime-rbac"
            )
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                state.invalidate()
                state.listening = True
                state.ready.set()
                delay = 0.1
                async for _notify in conn.notifies():
                    state.invalidate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("rbac: LISTEN lost (%s); checks read the tables until it is back", exc)
        finally:
            state.listening = False
            state.invalidate()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


# -- reading the tables -------------------------------------------------------------------


async def _fetch(runtime: Any, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    try:
        async with runtime.pool.connection(timeout=runtime.settings.pool_timeout_s) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()
    except PoolTimeout:
        raise Unavailable("No database connection became free to check permissions") from None
    except psycopg.OperationalError:
        raise Unavailable("The database is unavailable to check permissions") from None


async def permissions_of(runtime: Any, roles: tuple[str, ...]) -> frozenset[str]:
    state = state_of(runtime)
    key = frozenset(roles)
    cached = state.permissions.get(key) if state.listening else None
    if cached is not None:
        return cached
    generation = state.generation
    state.loads += 1
    rows = await _fetch(runtime, PERMISSIONS_OF_ROLES, (sorted(key),))
    permissions = frozenset(row[0] for row in rows)
    if state.listening and generation == state.generation:  # no change arrived meanwhile
        state.permissions[key] = permissions
    return permissions


async def user_row(runtime: Any, user_id: str) -> UserRow | None:
    if not _UUID.fullmatch(user_id):
        return None  # not one of ours (e.g. an external identity provider's subject)
    state = state_of(runtime)
    if state.listening and user_id in state.users:
        return state.users[user_id]
    generation = state.generation
    state.loads += 1
    rows = await _fetch(runtime, USER_ROW, (user_id,))
    row = UserRow(rows[0][0], rows[0][1] is not False) if rows else None
    if state.listening and generation == state.generation:
        if len(state.users) >= MAX_CACHED_USERS:
            state.users.clear()
        state.users[user_id] = row
    return row


# -- hooks --------------------------------------------------------------------------------


@hookimpl
async def startup(runtime: Any) -> None:
    timeout = max(runtime.settings.pool_timeout_s, 10.0)
    async with runtime.pool.connection(timeout=timeout) as conn, conn.transaction():
        await _install_triggers(conn)
        await _seed(conn, runtime)
    state = state_of(runtime)
    state.listener = runtime.spawn(_listen(state))
    try:
        await asyncio.wait_for(state.ready.wait(), LISTEN_READY_TIMEOUT_S)
    except TimeoutError:
        log.warning("rbac: LISTEN connection not up yet; checks read the tables meanwhile")


async def _install_triggers(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(SETUP_LOCK)  # one worker at a time; the others find it done
    cur = await conn.execute(MISSING_TABLES, (list(TABLES),))
    missing = [row[0] for row in await cur.fetchall()]
    if missing:
        raise RuntimeError(
            f"plugins/rbac.py needs the tables {', '.join(TABLES)} of the Swarm schema.json; "
            f"missing: {', '.join(missing)}"
        )
    await conn.execute(NOTIFY_FUNCTION)
    for table, events in TRIGGERS.items():
        cur = await conn.execute(TRIGGER_EXISTS, (table,))
        if await cur.fetchone() is None:
            await conn.execute(CREATE_TRIGGER.format(events=events, table=table))


async def _seed(conn: psycopg.AsyncConnection[Any], runtime: Any) -> None:
    declared = {
        fn.permission
        for fn in (runtime.registry.functions.values() if runtime.registry else ())
        if fn.permission
    }
    permissions = dict(PERMISSIONS)
    for name in sorted(declared - set(permissions)):
        permissions[name] = "Declared by a function"
    names = list(permissions)
    await conn.execute(
        INSERT_PERMISSIONS,
        (names, [category_of(n) for n in names], [permissions[n] for n in names]),
    )
    roles = list(ROLES)
    cur = await conn.execute(
        INSERT_ROLES,
        (roles, [ROLES[r][0] for r in roles], [ROLES[r][1] for r in roles]),
    )
    created = [row[0] for row in await cur.fetchall()]
    pairs = [(role, permission) for role in created for permission in ROLES[role][2]]
    if pairs:
        await conn.execute(INSERT_GRANTS, ([p[0] for p in pairs], [p[1] for p in pairs]))
        log.info("rbac: seeded roles %s", ", ".join(created))


@hookimpl
async def shutdown(runtime: Any) -> None:
    state = _states.pop(runtime, None)
    if state is not None and state.listener is not None:
        state.listener.cancel()
        await asyncio.gather(state.listener, return_exceptions=True)


async def _roles(identity: Identity, runtime: Any) -> tuple[str, ...]:
    """The identity's roles; a `users` row overrides the token's, and a deactivated user
    is refused outright."""
    roles = identity.roles
    if identity.kind == "user" and identity.user_id:
        row = await user_row(runtime, identity.user_id)
        if row is not None:
            if not row.active:
                raise Forbidden(f"User {identity.user_id} is deactivated")
            roles = (row.role,) if row.role else ()
    return roles


@hookimpl
async def resolve_permissions(identity: Identity, runtime: Any) -> frozenset[str] | None:
    if identity.kind in ("dev", "system"):
        return None
    roles = await _roles(identity, runtime)
    return await permissions_of(runtime, roles) if roles else frozenset()


@hookimpl
async def authorize(identity: Identity, function: Any, runtime: Any) -> bool | None:
    if identity.kind in ("dev", "system"):
        return None  # the built-in rule lets them do anything
    roles = await _roles(identity, runtime)
    needed = function.permission
    if needed is None:
        return None  # authenticated is enough
    if roles and grants(await permissions_of(runtime, roles), needed):
        return True
    held = ", ".join(roles) if roles else "none"
    raise Forbidden(f"Missing permission {needed!r} for {function.name} (roles: {held})")
