"""Reading a request body with a size limit, refusing early when Content-Length says so."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from runtime.errors import InvalidJSON, PayloadTooLarge


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidJSON("Invalid Content-Length header") from None
        if size > limit:
            raise PayloadTooLarge(f"The request body is {size} bytes; the limit is {limit}")
    # The ASGI messages themselves: most bodies are one message, and this path runs per call.
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
