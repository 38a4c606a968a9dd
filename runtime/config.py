"""Settings: environment variables, overridden by CLI flags (DESIGN §9)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RetrySettings:
    """Bounds of the automatic retry of serialization failures (see runtime/retry.py)."""

    max_attempts: int = 10
    max_elapsed_s: float = 5.0
    base_delay_s: float = 0.002
    max_delay_s: float = 0.1


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 3210
    workers: int = 1
    functions_dir: Path = Path("app_functions")
    schema_path: Path = Path("schema.json")
    plugins_dir: Path = Path("plugins")
    data_dir: Path = Path(".runtime")
    dev: bool = False
    reload: bool = False
    allow_destructive: bool = False
    max_body_bytes: int = 1024 * 1024
    statement_timeout_ms: int = 10_000
    pool_min: int = 4
    pool_max: int = 16
    pool_timeout_s: float = 2.0
    hot_key_window_s: float = 2.0
    # Set by `serve`/`dev` (not in tests): after start-up, move every object alive then out of
    # the collector's sight (gc.freeze), so full collections stop rescanning the libraries
    # and the registry on the request path; p99 latency is what it buys.
    freeze_gc: bool = False
    retry: RetrySettings = field(default_factory=RetrySettings)
    log_format: str = "json"  # "json" or "text"
    subscriptions: bool = True  # GET /ws and the change notices mutations send on COMMIT
    ws_max_subscriptions: int = 100  # per WebSocket connection

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read RUNTIME_* variables; keyword overrides (from CLI flags) win when not None."""
        settings = cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            host=os.environ.get("RUNTIME_HOST", "127.0.0.1"),
            port=_env_int("RUNTIME_PORT", 3210),
            workers=_env_int("RUNTIME_WORKERS", 1),
            functions_dir=Path(os.environ.get("RUNTIME_FUNCTIONS", "app_functions")),
            schema_path=Path(os.environ.get("RUNTIME_SCHEMA", "schema.json")),
            plugins_dir=Path(os.environ.get("RUNTIME_PLUGINS", "plugins")),
            data_dir=Path(os.environ.get("RUNTIME_DATA", ".runtime")),
            dev=_env_bool("RUNTIME_DEV"),
            reload=_env_bool("RUNTIME_RELOAD"),
            freeze_gc=_env_bool("RUNTIME_FREEZE_GC"),
            allow_destructive=_env_bool("RUNTIME_ALLOW_DESTRUCTIVE"),
            max_body_bytes=_env_int("RUNTIME_MAX_BODY_BYTES", 1024 * 1024),
            statement_timeout_ms=_env_int("RUNTIME_STATEMENT_TIMEOUT_MS", 10_000),
            pool_min=_env_int("RUNTIME_POOL_MIN", 4),
            pool_max=_env_int("RUNTIME_POOL_MAX", 16),
            pool_timeout_s=_env_float("RUNTIME_POOL_TIMEOUT_S", 2.0),
            hot_key_window_s=_env_float("RUNTIME_HOT_KEY_WINDOW_S", 2.0),
            retry=RetrySettings(
                max_attempts=_env_int("RUNTIME_RETRY_MAX_ATTEMPTS", 10),
                max_elapsed_s=_env_float("RUNTIME_RETRY_MAX_ELAPSED_S", 5.0),
                base_delay_s=_env_float("RUNTIME_RETRY_BASE_DELAY_S", 0.002),
                max_delay_s=_env_float("RUNTIME_RETRY_MAX_DELAY_S", 0.1),
            ),
            log_format=os.environ.get("RUNTIME_LOG_FORMAT", "json"),
            subscriptions=_env_bool("RUNTIME_SUBSCRIPTIONS", True),
            ws_max_subscriptions=_env_int("RUNTIME_WS_MAX_SUBSCRIPTIONS", 100),
        )
        known = {f.name for f in fields(cls)}
        return replace(
            settings, **{k: v for k, v in overrides.items() if k in known and v is not None}
        )
