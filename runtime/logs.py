"""Logging: one JSON object per line in production, readable lines in dev."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import msgspec

from runtime.config import Settings

_encode = msgspec.json.Encoder().encode
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of msg
}


class JSONFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra}`; extra fields come from `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that flushes every `interval_s` from a background thread instead of
    after every line: one call line per request would otherwise cost a flush (a write
    system call) on the request path. Warnings and errors are flushed at once."""

    def __init__(self, stream: Any = None, interval_s: float = 0.1) -> None:
        super().__init__(stream)
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, args=(interval_s,), daemon=True, name="log-flush"
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.flush()
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Write an already formatted line (the call log's fast path)."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + self.terminator)

    def _flush_periodically(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def direct_json_handler(logger: logging.Logger) -> BatchingStreamHandler | None:
    """The handler that alone would receive `logger`'s INFO records, when it is the JSON
    handler `configure_logging` installs; None whenever anything else would see them (extra
    handlers, filters, tests capturing logs), so the logging machinery must run as usual."""
    if logger.handlers or logger.filters or not logger.propagate:
        return None
    if not logger.isEnabledFor(logging.INFO):
        return None
    handlers = logging.getLogger().handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is not BatchingStreamHandler
        or handler.filters
        or handler.level > logging.INFO
    ):
        return None
    return handler


_second = -1
_second_text = ""


def utc_timestamp(created: float) -> str:
    """`2026-11-29T12:00:00.123Z`, formatting the whole second once per second."""
    global _second, _second_text
    whole = int(created)
    if whole != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = whole
    return f"{_second_text}.{int((created - whole) * 1000):03d}Z"


def configure_logging(settings: Settings) -> None:
    handler: logging.Handler
    if settings.log_format == "json":
        handler = BatchingStreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("uvicorn.access", "watchfiles", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
