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


class JSONBytes(Response):
    """A JSON response whose headers are built directly (this runs once per call)."""

    media_type = "application/json"

    def __init__(self, content: bytes, status: int, headers: dict[str, str] | None) -> None:
        self.status_code = status
        self.body = content
        self.background = None
        raw = [(b"content-length", str(len(content)).encode()), (b"content-type", _JSON)]
        if headers:
            raw.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            )
        self.raw_headers = raw


_JSON = b"application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(_encoder.encode(body), status, headers)


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
