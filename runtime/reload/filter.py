"""Which file changes trigger a reload: Python sources and schema.json, not caches or editor
swap files."""

from __future__ import annotations

from pathlib import Path

from watchfiles import Change, DefaultFilter


class SourceFilter(DefaultFilter):
    """Python files under the watched folders, and the schema file itself."""

    def __init__(self, schema_path: Path) -> None:
        super().__init__()
        self.schema_path = str(schema_path.resolve())

    def __call__(self, change: Change, path: str) -> bool:
        if path == self.schema_path:
            return True
        return path.endswith(".py") and super().__call__(change, path)
