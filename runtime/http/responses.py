"""JSON responses encoded with msgspec, and the one shape every error takes (DESIGN §6)."""

from __future__ import annotations

import re
import traceback
from typing import Any

import msgspec
from starlette.responses import Response

from runtime.errors import Internal, RuntimeFailure

_encoder = msgspec.json.Encoder()
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_request_id(value: str | None) -> str | None:
    return value if value and _REQUEST_ID.fullmatch(value) else None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status, headers, media_type="application/json")


def error_response(
    exc: RuntimeFailure, request_id: str | None = None, *, headers: dict[str, str] | None = None
) -> Response:
    all_headers = dict(headers or {})
    if request_id:
        all_headers["x-request-id"] = request_id
    return json_response(exc.to_body(), exc.status, all_headers)


def internal_error(exc: BaseException, *, dev: bool) -> Internal:
    """A 500 that never leaks a traceback, except in dev mode where it helps."""
    if not dev:
        return Internal()
    tb = "".join(traceback.format_exception(exc))
    return Internal(f"{type(exc).__name__}: {exc}", {"traceback": tb})
