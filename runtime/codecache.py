"""Compiled code of app modules, kept in memory across reloads.

Every reload imports every app module afresh (new module objects), but only a changed file
needs compiling again: the loader reuses the code object of a file whose bytes are the same
as last time. Bytecode files are neither read nor written for app modules, which keeps
reloads fast and exact whether or not PYTHONDONTWRITEBYTECODE is set.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import sys
from pathlib import Path
from types import CodeType
from typing import Any

_codes: dict[tuple[str, bytes], CodeType] = {}
_MAX_ENTRIES = 4096


class CachingSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles from the source it reads now, never from `__pycache__`: a `.pyc` is keyed by
    the source's mtime in whole seconds and its size, so a same-size save within the same
    second would load the previous code."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:  # type: ignore[override]
        key = (str(path), hashlib.blake2b(bytes(data), digest_size=16).digest())
        code = _codes.get(key)
        if code is None:
            if len(_codes) >= _MAX_ENTRIES:
                _codes.clear()
            code = _codes[key] = compile(data, path, "exec", dont_inherit=True, optimize=_optimize)
        return code


def install(root: Path) -> None:
    """Make imports of modules under `root` (every folder of it) use the caching loader."""
    hook = importlib.machinery.FileFinder.path_hook((CachingSourceLoader, [".py"]))
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        if "__pycache__" not in folder.parts:
            sys.path_importer_cache[str(folder)] = hook(str(folder))
