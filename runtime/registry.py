"""Loading `app_functions/` and schema.json into an immutable `Registry`.

Every load builds fresh module objects off to the side: the package's entries in
`sys.modules` are set aside while it imports and put back if the load fails, so the version
that is serving keeps working and helpers imported between app modules are never stale.
Every problem found is collected into one `LoadError`; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from runtime import codecache
from runtime import schema as schema_mod
from runtime.errors import LoadError
from runtime.functions import FunctionSpec, Kind, argument_names, spec_of


@dataclass(frozen=True)
class FunctionDef:
    """One callable function, ready to serve."""

    name: str
    spec: FunctionSpec
    fn: Callable[..., Any]
    arg_names: tuple[str, ...]
    key_arg: str | None
    decoder: msgspec.json.Decoder[Any] | None
    args_type: type[msgspec.Struct] | None
    to_kwargs: Callable[[Any], dict[str, Any]]
    args_schema: dict[str, Any] | None
    returns_schema: dict[str, Any] | None
    source: str
    fingerprint: str

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def internal(self) -> bool:
        return self.spec.internal

    @property
    def public(self) -> bool:
        return self.spec.public

    @property
    def permission(self) -> str | None:
        return self.spec.permission


@dataclass(frozen=True)
class Registry:
    """What serves: functions and tables of one version of the sources.

    `version` is a hash of the source files, so every worker that loaded the same files
    reports the same version; `generation` counts loads in this process.
    """

    version: str
    generation: int
    functions: dict[str, FunctionDef]
    tables: dict[str, Any]
    schema: Any
    modules: tuple[types.ModuleType, ...] = field(default=(), repr=False)
    schema_digest: str = ""  # of schema.json's bytes: an unchanged file is not re-validated

    def diff(self, older: Registry | None) -> tuple[list[str], list[str], list[str]]:
        """(added, changed, removed) function names compared with `older`."""
        old = older.functions if older else {}
        added = sorted(set(self.functions) - set(old))
        removed = sorted(set(old) - set(self.functions))
        changed = sorted(
            n
            for n in set(self.functions) & set(old)
            if self.functions[n].fingerprint != old[n].fingerprint
        )
        return added, changed, removed


def _code_digest(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, h)
        else:
            h.update(repr(const).encode())


def fingerprint(fn: Callable[..., Any], entry: Any) -> str:
    h = hashlib.blake2b(digest_size=12)
    code = getattr(fn, "__code__", None)
    if code is not None:
        _code_digest(code, h)
    h.update(msgspec.json.encode(entry))
    return h.hexdigest()


def _location(fn: Callable[..., Any], root: Path) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return "?"
    try:
        path = Path(code.co_filename).resolve().relative_to(root.resolve().parent)
    except ValueError:
        path = Path(code.co_filename)
    return f"{path}:{code.co_firstlineno}"


def _describe_import_error(exc: BaseException, module: str) -> str:
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg} (in module {module})"
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f for f in reversed(frames) if "importlib" not in f.filename), None)
    at = f"{where.filename}:{where.lineno}: " if where else ""
    return f"{at}{type(exc).__name__}: {exc} (while importing {module})"


# sys.modules is one per process: two runtimes loading at once (tests run several servers in
# threads of one process) must not interleave their imports of the package.
_IMPORTING = threading.Lock()


def import_package(
    functions_dir: Path,
) -> tuple[list[types.ModuleType], list[str], Callable[[], None]]:
    """Import every module under `functions_dir` as fresh module objects.

    Returns the modules, the problems, and a function that puts the previous modules back
    into `sys.modules` (for when the caller rejects this load).
    """
    package = functions_dir.name
    stashed = {k: m for k, m in sys.modules.items() if k == package or k.startswith(package + ".")}
    for name in stashed:
        del sys.modules[name]
    problems: list[str] = []
    modules: list[types.ModuleType] = []
    codecache.install(functions_dir)
    try:
        init = functions_dir / "__init__.py"
        if init.exists():
            spec = importlib.util.spec_from_file_location(
                package,
                init,
                loader=codecache.CachingSourceLoader(package, str(init)),
                submodule_search_locations=[str(functions_dir)],
            )
            assert spec is not None and spec.loader is not None
            root = importlib.util.module_from_spec(spec)
            sys.modules[package] = root
            spec.loader.exec_module(root)
        else:
            root = types.ModuleType(package)
            root.__path__ = [str(functions_dir)]
            root.__file__ = None
            sys.modules[package] = root
        modules.append(root)
        for path in sorted(functions_dir.rglob("*.py")):
            rel = path.relative_to(functions_dir)
            if "__pycache__" in rel.parts or any(p.startswith((".", "_")) for p in rel.parts):
                continue
            dotted = ".".join((package, *rel.with_suffix("").parts))
            try:
                modules.append(importlib.import_module(dotted))
            except Exception as exc:
                problems.append(_describe_import_error(exc, dotted))
    except Exception as exc:
        problems.append(_describe_import_error(exc, package))

    def restore() -> None:
        for name in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[name]
        sys.modules.update(stashed)

    if problems:
        restore()
    return modules, problems, restore


def _check_signature(
    name: str, fn: Callable[..., Any], entry: dict[str, Any] | None, where: str
) -> tuple[list[str], list[str]]:
    names, required, problems = argument_names(fn)
    problems = [f"{name} ({where}): {p}" for p in problems]
    if entry is None:
        return names, problems
    args = entry.get("args") or {}
    props = set((args.get("properties") or {}).keys())
    schema_required = set(args.get("required") or [])
    for missing in sorted(set(names) - props):
        problems.append(
            f"{name} ({where}): argument {missing!r} is not in schema.json "
            f"functions.{name}.args.properties"
        )
    for extra in sorted(props - set(names)):
        problems.append(
            f"{name} ({where}): schema.json functions.{name}.args.properties.{extra} "
            f"has no matching argument in the function signature"
        )
    defaulted = {
        k
        for k, v in (args.get("properties") or {}).items()
        if isinstance(v, dict) and "default" in v
    }
    for arg in sorted(set(required) - schema_required - defaulted):
        if arg in props:
            problems.append(
                f"{name} ({where}): argument {arg!r} has no default but is optional in "
                f"schema.json functions.{name}.args.required"
            )
    return names, problems


def collect_functions(
    modules: list[types.ModuleType], functions_dir: Path, schema: Any
) -> tuple[dict[str, FunctionDef], list[str]]:
    package = functions_dir.name
    entries: dict[str, Any] = schema.functions
    functions: dict[str, FunctionDef] = {}
    problems: list[str] = []
    for module in modules:
        prefix = module.__name__[len(package) + 1 :]
        for attr, obj in vars(module).items():
            spec = spec_of(obj)
            if spec is None or getattr(obj, "__module__", None) != module.__name__:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            where = _location(obj, functions_dir)
            if not inspect.iscoroutinefunction(obj):
                problems.append(f"{name} ({where}): must be `async def`, found a plain `def`")
                continue
            entry = entries.get(name)
            if entry is None and not spec.internal:
                problems.append(
                    f"{name} ({where}): no entry in schema.json functions.{name} "
                    "(every public function needs an args schema)"
                )
                continue
            arg_names, sig_problems = _check_signature(name, obj, entry, where)
            problems.extend(sig_problems)
            key_arg = spec.key if isinstance(spec.key, str) else None
            key_arg = key_arg or next(
                (a for a in arg_names if a == "id" or a.endswith("_id")), None
            )
            if isinstance(spec.key, str) and spec.key not in arg_names:
                problems.append(f"{name} ({where}): key={spec.key!r} is not an argument")
            args_type = schema.args_types.get(name) if entry is not None else None
            decoder = schema_mod.make_decoder(args_type) if args_type is not None else None
            to_kwargs = schema_mod.kwargs_converter(args_type) if args_type is not None else dict
            functions[name] = FunctionDef(
                name=name,
                spec=spec,
                fn=obj,
                arg_names=tuple(arg_names),
                key_arg=key_arg,
                decoder=decoder,
                args_type=args_type,
                to_kwargs=to_kwargs,
                args_schema=(entry or {}).get("args"),
                returns_schema=(entry or {}).get("returns"),
                source=where,
                fingerprint=fingerprint(obj, entry),
            )
    for name in sorted(set(entries) - set(functions)):
        if not any(p.startswith(f"{name} (") for p in problems):
            problems.append(f"schema.json functions.{name}: no such function in {functions_dir}")
    return functions, problems


def content_version(functions_dir: Path, schema_path: Path) -> str:
    """A short hash of every source file and schema.json: equal files, equal version."""
    h = hashlib.blake2b(digest_size=6)
    for path in sorted(functions_dir.rglob("*.py")):
        if "__pycache__" not in path.parts:
            h.update(str(path.relative_to(functions_dir)).encode() + b"\0" + path.read_bytes())
    if schema_path.exists():
        h.update(schema_path.read_bytes())
    return h.hexdigest()


def _load_schema(schema_path: Path, previous: Registry | None) -> tuple[Any, Any, str]:
    """(schema, tables, digest); reuses `previous`'s when schema.json's bytes are unchanged,
    since validating and compiling it is most of the cost of a reload."""
    try:
        digest = hashlib.blake2b(schema_path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        digest = ""
    if previous is not None and digest and digest == previous.schema_digest:
        return previous.schema, previous.tables, digest
    schema = schema_mod.load_schema(schema_path)  # raises LoadError with JSON paths
    return schema, schema_mod.table_infos(schema), digest


def build_registry(
    functions_dir: Path, schema_path: Path, generation: int, previous: Registry | None = None
) -> Registry:
    """Load schema.json and every app module; raise LoadError listing every problem."""
    if not functions_dir.is_dir():
        raise LoadError([f"functions directory {functions_dir} does not exist"])
    version = content_version(functions_dir, schema_path)
    schema, tables, digest = _load_schema(schema_path, previous)
    with _IMPORTING:
        modules, problems, restore = import_package(functions_dir)
        if not problems:
            functions, problems = collect_functions(modules, functions_dir, schema)
        if problems:
            restore()
            raise LoadError(problems)
    return Registry(version, generation, functions, tables, schema, tuple(modules), digest)
