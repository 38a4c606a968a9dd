"""Built-in behaviour, written as ordinary plugins and registered first so yours win."""

from __future__ import annotations

from runtime.defaults import call_log, dev_token, metrics, permissions

DEFAULT_PLUGINS: list[object] = [permissions, metrics, call_log]
DEV_PLUGINS: list[object] = [dev_token]
