"""Built-in behaviour, written as ordinary plugins and registered first so yours win."""

from __future__ import annotations

from runtime.defaults import dev_token, permissions

DEFAULT_PLUGINS: list[object] = [permissions]
DEV_PLUGINS: list[object] = [dev_token]
