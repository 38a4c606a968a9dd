"""Signing in: `auth.login` trades an email and a password for a JWT; `auth.me` says who you are.

`login` is an action so the slow argon2 check (~50 ms) runs in a worker thread outside any
transaction, and so that a failed attempt stays counted although the call fails:

1. `auth.begin_attempt` (internal mutation, one SERIALIZABLE transaction queued on the email)
   counts the email's unsuccessful attempts in the last WINDOW (since its last success). At
   LIMIT it answers "blocked"; otherwise it records this attempt as unsuccessful *before* the
   password is checked, commits, and hands back the user's hash (if there is a user).
2. The password is verified against that hash, or against a dummy hash when the email is
   unknown, so an unknown email and a wrong password take the same time and get the same
   answer (401 `unauthenticated`, "Invalid email or password").
3. Only a success runs `auth.finish_login`, which marks the attempt successful (resetting the
   count) and stamps `last_login_at`. A failure needs no further write: the attempt committed
   in step 1, and raising the UserError afterwards rolls nothing back.

Concurrent guesses for one email conflict on the count-then-insert and are serialised by the
retry, so no more than LIMIT attempts per window ever reach the verification, across workers.
Unknown emails are limited like known ones, so the limit reveals nothing either.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runtime import UserError, action, internal_mutation, query

from ._accounts import normalize_email, public_user, rehash_if_outdated, verify_password
from ._tokens import issue

LIMIT = 5  # unsuccessful attempts per email ...
WINDOW = timedelta(minutes=15)  # ... within this window
INVALID = "Invalid email or password"


@action(public=True)
async def login(ctx: Any, email: str, password: str) -> dict[str, Any]:
    email = normalize_email(email)
    state = await ctx.run_mutation("auth.begin_attempt", {"email": email, "ip": ctx.client_ip})
    if state["blocked"]:
        raise UserError(
            "rate_limited",
            "Too many failed sign-in attempts; try again later",
            {"retry_after_s": state["retry_after_s"]},
        )
    user = state["user"]
    ok = await verify_password(user["password_hash"] if user else None, password)
    if not ok or user is None or user.get("active") is False:
        ctx.log.info("sign-in refused (attempt %s)", state["attempt_id"])
        raise UserError("unauthenticated", INVALID)
    new_hash = await rehash_if_outdated(user["password_hash"], password)
    await ctx.run_mutation(
        "auth.finish_login",
        {"attempt_id": state["attempt_id"], "user_id": user["_id"], "new_hash": new_hash},
    )
    token, expires_at = issue(user)
    return {
        "token": token,
        "token_type": "bearer",
        "expires_at": expires_at,
        "user": public_user(user),
    }


@internal_mutation(key="email")
async def begin_attempt(ctx: Any, email: str, ip: str | None = None) -> dict[str, Any]:
    """Count the email's recent failures; below the limit, record this attempt as one."""
    since = ctx.now - WINDOW
    attempts = ctx.db.query("login_attempts")
    last_ok = await (
        attempts.with_index("by_email", email=email)
        .where("succeeded", "=", True)
        .order("desc")
        .first()
    )
    if last_ok is not None and last_ok["_creation_time"] > since:
        since = last_ok["_creation_time"]
    failures = await (
        ctx.db.query("login_attempts")
        .with_index("by_email", email=email)
        .where("succeeded", "=", False)
        .range("_creation_time", gt=since)
        .take(LIMIT)
    )
    if len(failures) >= LIMIT:
        free_at = failures[0]["_creation_time"] + WINDOW
        retry_after = max(1, int((free_at - ctx.now).total_seconds()) + 1)
        return {"blocked": True, "retry_after_s": retry_after, "attempt_id": None, "user": None}
    # Keep the table small: this email's attempts older than the window count for nothing.
    await ctx.sql(
        "DELETE FROM login_attempts WHERE email = %s AND _creation_time < %s",
        email,
        ctx.now - WINDOW,
    )
    attempt_id = await ctx.db.insert(
        "login_attempts", {"email": email, "succeeded": False, "ip": ip}
    )
    user = await ctx.db.query("users").with_index("by_email", email=email).first()
    return {"blocked": False, "retry_after_s": 0, "attempt_id": attempt_id, "user": user}


@internal_mutation
async def finish_login(
    ctx: Any, attempt_id: str, user_id: str, new_hash: str | None = None
) -> None:
    await ctx.db.patch("login_attempts", attempt_id, {"succeeded": True, "user_id": user_id})
    fields: dict[str, Any] = {"last_login_at": ctx.now}
    if new_hash:
        fields["password_hash"] = new_hash
    await ctx.db.patch("users", user_id, fields)


@query
async def me(ctx: Any) -> dict[str, Any]:
    """The caller's identity, and their user row when the caller is a signed-in user."""
    identity = ctx.auth
    user = None
    if identity.kind == "user" and identity.user_id:
        row = await ctx.db.get("users", identity.user_id)
        if row is not None and row["tenant_id"] == identity.tenant_id:
            user = public_user(row)
    return {
        "user_id": identity.user_id,
        "tenant_id": identity.tenant_id,
        "roles": list(identity.roles),
        "permissions": sorted(identity.permissions) if identity.permissions is not None else None,
        "kind": identity.kind,
        "user": user,
    }
