"""Benchmark functions (benchmarks/bench_calls.py): one point read and one patch per call.

Both are public (no auth lookup in the way) and do exactly what benchmarks/handwritten.py does
by hand: `SELECT * ... WHERE _id = $1`, then `UPDATE ... SET touches, heartbeat_at WHERE _id`,
in one SERIALIZABLE transaction.
"""

from runtime import UserError, mutation


@mutation(public=True)
async def touch(ctx, ticket_id: str):
    ticket = await ctx.db.get("tickets", ticket_id)
    if ticket is None:
        raise UserError("not_found", "Ticket not found")
    touches = ticket["touches"] + 1
    await ctx.db.patch("tickets", ticket_id, {"touches": touches, "heartbeat_at": ctx.now})
    return {"touches": touches}


@mutation(public=True, key="ticket_id")
async def hot(ctx, ticket_id: str):
    ticket = await ctx.db.get("tickets", ticket_id)
    if ticket is None:
        raise UserError("not_found", "Ticket not found")
    touches = ticket["touches"] + 1
    await ctx.db.patch("tickets", ticket_id, {"touches": touches, "heartbeat_at": ctx.now})
    return {"touches": touches}
