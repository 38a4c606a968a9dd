"""`ctx.db` and `ctx.sql` inside real transactions: documents, index queries, pagination."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import AppFiles, LiveServer

TASKS = """
from runtime import mutation, query

@mutation
async def seed(ctx, n: int):
    ids = []
    for i in range(n):
        ids.append(await ctx.db.insert("tasks", {
            "title": f"t{i}", "rank": i % 5, "labels": ["even" if i % 2 == 0 else "odd"],
            "meta": {"i": i},
        }))
    return ids

@query
async def ranked(ctx, low: int, high: int):
    rows = await (ctx.db.query("tasks").with_index("by_rank")
                  .range("rank", gte=low, lt=high).order("desc").collect())
    return [r["rank"] for r in rows]

@query
async def page(ctx, cursor: str | None = None):
    return await ctx.db.query("tasks").with_index("by_rank", rank=1).paginate(cursor, 3)

@query
async def filtered(ctx):
    q = ctx.db.query("tasks")
    return {
        "in": await q.where("rank", "in", [0, 4]).count(),
        "contains": await ctx.db.query("tasks").where("labels", "contains", "odd").count(),
        "first": (await ctx.db.query("tasks").order("asc", "title").first())["title"],
        "take": len(await ctx.db.query("tasks").take(4)),
    }

@mutation
async def edit(ctx, id: str):
    await ctx.db.patch("tasks", id, {"title": "patched"})
    patched = await ctx.db.get("tasks", id)
    await ctx.db.replace("tasks", id, {"title": "replaced"})
    replaced = await ctx.db.get("tasks", id)
    await ctx.db.delete("tasks", id)
    gone = await ctx.db.get("tasks", id)
    return {"patched": patched["title"], "replaced": [replaced["title"], replaced["rank"]],
            "gone": gone}

@mutation
async def patch_missing(ctx):
    await ctx.db.patch("tasks", "00000000-0000-0000-0000-000000000000", {"title": "x"})

@mutation
async def gathered(ctx, ids: list):
    # Concurrent ctx.db calls in one call share the connection's reusable cursor.
    import asyncio
    rows = await asyncio.gather(*(ctx.db.get("tasks", i) for i in ids))
    await asyncio.gather(*(ctx.db.patch("tasks", i, {"rank": 7}) for i in ids))
    new = await asyncio.gather(*(ctx.db.insert("tasks", {"title": f"n{k}"}) for k in range(5)))
    return {"titles": [r["title"] for r in rows], "new": len(set(new))}

@query
async def raw(ctx, rank: int):
    rows = await ctx.sql("SELECT count(*) AS n FROM tasks WHERE rank = %s", rank)
    return rows[0]["n"]
"""

OBJECT: dict[str, Any] = {"type": "object"}
SCHEMA: dict[str, Any] = {
    "tables": {
        "tasks": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "rank": {"type": "integer"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "meta": {},
            },
            "required": ["title"],
            "indexes": {"by_rank": ["rank"]},
        }
    },
    "functions": {
        "tasks.seed": {
            "args": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        },
        "tasks.ranked": {
            "args": {
                "type": "object",
                "properties": {"low": {"type": "integer"}, "high": {"type": "integer"}},
                "required": ["low", "high"],
            }
        },
        "tasks.page": {
            "args": {"type": "object", "properties": {"cursor": {"type": ["string", "null"]}}}
        },
        "tasks.filtered": {"args": OBJECT},
        "tasks.edit": {
            "args": {
                "type": "object",
                "properties": {"id": {"type": "string", "format": "uuid"}},
                "required": ["id"],
            }
        },
        "tasks.patch_missing": {"args": OBJECT},
        "tasks.gathered": {
            "args": {
                "type": "object",
                "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
                "required": ["ids"],
            }
        },
        "tasks.raw": {
            "args": {
                "type": "object",
                "properties": {"rank": {"type": "integer"}},
                "required": ["rank"],
            }
        },
    },
}


@pytest.fixture
def client(
    app_files: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> Iterator[httpx.Client]:
    app_files.write_module("tasks", TASKS)
    app_files.write_schema(SCHEMA)
    with serve(app_files, dev=True).client(dev_token) as client:
        yield client


def call(client: httpx.Client, name: str, **args: Any) -> Any:
    r = client.post(f"/fn/tasks.{name}", json=args)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_range_and_descending_order(client: httpx.Client) -> None:
    call(client, "seed", n=20)
    assert call(client, "ranked", low=1, high=3) == [2, 2, 2, 2, 1, 1, 1, 1]


def test_paginate_walks_every_row_once(client: httpx.Client) -> None:
    call(client, "seed", n=40)  # 8 rows with rank 1
    seen: list[str] = []
    cursor = None
    while True:
        page = call(client, "page", cursor=cursor)
        seen += [row["_id"] for row in page["page"]]
        if page["is_done"]:
            assert page["cursor"] is None
            break
        assert len(page["page"]) == 3
        cursor = page["cursor"]
    assert len(seen) == len(set(seen)) == 8
    r = client.post("/fn/tasks.page", json={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid pagination cursor"


def test_filters_count_first_take(client: httpx.Client) -> None:
    call(client, "seed", n=10)
    assert call(client, "filtered") == {"in": 4, "contains": 5, "first": "t0", "take": 4}


def test_patch_replace_delete(client: httpx.Client) -> None:
    [task_id] = call(client, "seed", n=1)
    assert call(client, "edit", id=task_id) == {
        "patched": "patched",
        "replaced": ["replaced", None],
        "gone": None,
    }
    r = client.post("/fn/tasks.patch_missing", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_raw_sql_in_the_same_transaction(client: httpx.Client) -> None:
    call(client, "seed", n=10)
    assert call(client, "raw", rank=3) == 2


def test_concurrent_documents_calls_in_one_function_read_their_own_rows(
    client: httpx.Client,
) -> None:
    ids = call(client, "seed", n=12)
    assert call(client, "gathered", ids=ids) == {
        "titles": [f"t{i}" for i in range(12)],
        "new": 5,
    }
    assert call(client, "ranked", low=7, high=8) == [7] * 12
