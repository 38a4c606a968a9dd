"""Making requests and judging them: the one place a response becomes success or failure.

A request fails when its status is not one the caller expected (a 409 in the middle of an
agent's normal flow is a failure: the gate should see it), or its body is not JSON. The
failure message keeps the error code and message, never the request body.
"""

from __future__ import annotations

from typing import Any

from locust.contrib.fasthttp import FastHttpSession

JSONValue = Any


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def post(
    client: FastHttpSession,
    path: str,
    body: JSONValue,
    headers: dict[str, str],
    *,
    name: str | None = None,
    ok: tuple[int, ...] = (200,),
) -> JSONValue | None:
    """POST `body` as JSON; the decoded response, or None when it failed (and was counted)."""
    with client.post(
        path, json=body, headers=headers, name=name or path, catch_response=True
    ) as response:
        return judge(response, ok)


def post_bytes(
    client: FastHttpSession,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    name: str,
    ok: tuple[int, ...],
) -> JSONValue | None:
    with client.post(path, data=body, headers=headers, name=name, catch_response=True) as response:
        return judge(response, ok)


def call(
    client: FastHttpSession,
    function: str,
    args: dict[str, Any],
    headers: dict[str, str],
    *,
    ok: tuple[int, ...] = (200,),
) -> JSONValue | None:
    """`POST /fn/<function>`; its `value`, or None when it failed."""
    result = post(client, f"/fn/{function}", args, headers, ok=ok)
    return result.get("value") if isinstance(result, dict) else None


def judge(response: Any, ok: tuple[int, ...]) -> JSONValue | None:
    status = response.status_code
    if status not in ok:
        response.failure(f"{status} {describe_error(response)}")
        return None
    try:
        value = response.json()
    except Exception:
        response.failure(f"{status} response is not JSON")
        return None
    response.success()
    return value


def describe_error(response: Any) -> str:
    if not response.status_code:
        return f"no response: {response.error!r}"
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"[:200]
    except Exception:
        return (response.text or "")[:200]
