"""GitHub webhook deliveries, dispatched by plugins/github_webhooks.py.

The plugin verifies the signature, then calls `github.on_event` once per delivery as the
SYSTEM identity. This one mutation records the delivery in table `github_deliveries` and
applies its effect in the same SERIALIZABLE transaction, so a redelivery (same
`X-GitHub-Delivery`) answers "duplicate" and changes nothing. Two concurrent copies of one
delivery conflict on the unique `delivery_id` and the retry turns the second into a duplicate.
"""

from __future__ import annotations

from typing import Any

from runtime import internal_mutation

from . import _ticket_ops as ops


@internal_mutation
async def on_event(
    ctx: Any, event: str, delivery_id: str, payload: dict[str, Any], action: str | None = None
) -> dict[str, Any]:
    """Record delivery `delivery_id` and apply it once.

    Returns `{"status": "processed" | "ignored" | "duplicate", "delivery_id": ...}` (plus
    `ticket_id` when a ticket changed); the plugin answers 200, 202 and 200 respectively.
    """
    seen = (
        await ctx.db.query("github_deliveries")
        .with_index("by_delivery_id", delivery_id=delivery_id)
        .first()
    )
    if seen is not None:
        return {"status": "duplicate", "delivery_id": delivery_id}
    outcome, ticket_id = await handle_event(ctx, event, action, payload)
    record: dict[str, Any] = {"delivery_id": delivery_id, "event": event, "outcome": outcome}
    if action is not None:
        record["action"] = action
    if ticket_id is not None:
        record["ticket_id"] = ticket_id
    await ctx.db.insert("github_deliveries", record)
    result: dict[str, Any] = {"status": outcome, "delivery_id": delivery_id}
    if ticket_id is not None:
        result["ticket_id"] = ticket_id
    return result


# -- event handlers ------------------------------------------------------------------------
# `handle_event` runs inside on_event's transaction: whatever it writes commits together with
# the delivery record. Return ("processed", ticket_id or None) when the event changed
# something and ("ignored", None) when nothing handles it.


async def handle_event(
    ctx: Any, event: str, action: str | None, payload: dict[str, Any]
) -> tuple[str, str | None]:
    if event == "pull_request" and action == "closed":
        return await pull_request_closed(ctx, payload.get("pull_request") or {})
    return "ignored", None


async def pull_request_closed(ctx: Any, pr: dict[str, Any]) -> tuple[str, str | None]:
    """The ticket whose `pr_url` is the PR's `html_url`: a merged PR completes it (through
    the ticket completion logic: dependents are unblocked); a PR closed without merging moves
    it to review with a note for a human. Tickets in states where that move is not legal are
    left alone ("ignored")."""
    url = pr.get("html_url")
    if not isinstance(url, str) or not url:
        return "ignored", None
    ticket = await ctx.db.query("tickets").with_index("by_pr_url", pr_url=url).order("desc").first()
    if ticket is None:
        return "ignored", None
    if pr.get("merged") is True:
        if ticket["state"] == "completed":
            return "processed", ticket["_id"]
        if "completed" not in ops.TRANSITIONS[ticket["state"]]:
            ctx.log.warning("merged PR %s: ticket %s is %s", url, ticket["_id"], ticket["state"])
            return "ignored", ticket["_id"]
        await ops.complete_ticket(ctx, ticket, pr_url=url)
        return "processed", ticket["_id"]
    note = f"Pull request {url} was closed without being merged"
    if ticket["state"] != "review" and "review" not in ops.TRANSITIONS[ticket["state"]]:
        ctx.log.warning("closed PR %s: ticket %s is %s", url, ticket["_id"], ticket["state"])
        return "ignored", ticket["_id"]
    fields = {"state": "review", "review_note": note, "lease_expires_at": None}
    await ops.update(ctx, ticket, fields)
    return "processed", ticket["_id"]
