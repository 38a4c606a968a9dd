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


@internal_mutation
async def on_event(
    ctx: Any, event: str, delivery_id: str, payload: dict[str, Any], action: str | None = None
) -> dict[str, Any]:
    """Record delivery `delivery_id` and apply it once.

    Returns `{"status": "processed" | "ignored" | "duplicate", "delivery_id": ...}` (plus
    `ticket_id` when a ticket changed); the plugin answers 200, 202 and 200 respectively.
    """
    seen = await ctx.db.query("github_deliveries").with_index(
        "by_delivery_id", delivery_id=delivery_id
    ).first()
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
    return "ignored", None
