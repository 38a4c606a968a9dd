"""The `GET /ws` messages: JSON text frames, decoded with msgspec (docs/subscriptions.md).

Client to server, told apart by `type`:

    {"type": "subscribe", "id": "s1", "function": "tickets.get_stats", "args": {...}}
    {"type": "unsubscribe", "id": "s1"}
    {"type": "authenticate", "token": "<bearer token>"}

Server to client:

    {"type": "result", "id": "s1", "value": ...}
    {"type": "error", "id": "s1" | null, "error": {"code", "message", "details"?}}
"""

from __future__ import annotations

import traceback
from typing import Annotated, Any

import msgspec

from runtime.errors import Internal, InvalidJSON, InvalidMessage, RuntimeFailure
from runtime.schema import validation_details

MAX_ID_LENGTH = 256

SubscriptionId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    id: SubscriptionId
    function: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True):
    id: SubscriptionId


class Authenticate(
    msgspec.Struct, tag="authenticate", tag_field="type", forbid_unknown_fields=True
):
    token: Annotated[str, msgspec.Meta(min_length=1)]


Message = Subscribe | Unsubscribe | Authenticate

_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_encoder = msgspec.json.Encoder()


class MessageError(Exception):
    """A frame that is not a valid message: answer `failure` as an error frame for `id`."""

    def __init__(self, failure: RuntimeFailure, id: str | None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.id = id


def decode(data: str | bytes) -> Message:
    """One client message, or MessageError (invalid_json, invalid_message) naming its id."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        failure = InvalidMessage(f"Invalid message: {exc}", validation_details(exc))
        raise MessageError(failure, _id_of(data)) from None
    except msgspec.DecodeError as exc:
        raise MessageError(InvalidJSON(str(exc)), None) from None


def _id_of(data: str | bytes) -> str | None:
    """The `id` of a message that failed validation, to answer under it when there is one."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_ID_LENGTH else None


def encode_value(value: Any) -> bytes:
    """A query's result as JSON (raises TypeError for what msgspec cannot encode)."""
    return _encoder.encode(value)


def result_frame(id: str, value_json: bytes) -> bytes:
    return b'{"type":"result","id":' + _encoder.encode(id) + b',"value":' + value_json + b"}"


def error_frame(id: str | None, failure: RuntimeFailure) -> bytes:
    return _encoder.encode({"type": "error", "id": id, **failure.to_body()})


def internal_failure(exc: BaseException, *, dev: bool) -> Internal:
    """An `internal` error that shows the exception only in dev mode (as `POST /fn` does)."""
    if not dev:
        return Internal()
    tb = "".join(traceback.format_exception(exc))
    return Internal(f"{type(exc).__name__}: {exc}", {"traceback": tb})
