"""The decorators app code uses to declare functions: query, mutation, action and internals.

A decorator only tags the coroutine function with a `FunctionSpec`; the registry
(`runtime/registry.py`) finds tagged functions when it loads `app_functions/` and pairs
them with their schema.json entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Kind = Literal["query", "mutation", "action"]
F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTRIBUTE = "__swarm_function__"
KeyFunction = Callable[[Any, dict[str, Any]], object]


@dataclass(frozen=True)
class FunctionSpec:
    """What a decorator declared about one function."""

    kind: Kind
    internal: bool = False
    public: bool = False
    permission: str | None = None
    # What identifies the contended row, for hot-key queuing: an argument name, or a
    # callable `(identity, kwargs) -> str` (e.g. the caller's tenant for a shared queue).
    key: str | KeyFunction | None = None
    timeout_ms: int | None = None


def _declare(kind: Kind, internal: bool) -> Callable[..., Any]:
    def decorator(
        fn: F | None = None,
        *,
        public: bool = False,
        permission: str | None = None,
        key: str | KeyFunction | None = None,
        timeout_ms: int | None = None,
    ) -> Any:
        spec = FunctionSpec(kind, internal, public, permission, key, timeout_ms)

        def tag(target: F) -> F:
            setattr(target, SPEC_ATTRIBUTE, spec)
            return target

        return tag(fn) if fn is not None else tag

    decorator.__name__ = f"{'internal_' if internal else ''}{kind}"
    name = decorator.__name__
    decorator.__doc__ = (
        f"Declare an async {'internal ' if internal else ''}{kind}. Use bare (`@{name}`) or "
        f"with options (`@{name}(public=True, permission='x:y', key='id')`)."
    )
    return decorator


query = _declare("query", internal=False)
mutation = _declare("mutation", internal=False)
action = _declare("action", internal=False)
internal_query = _declare("query", internal=True)
internal_mutation = _declare("mutation", internal=True)
internal_action = _declare("action", internal=True)


def spec_of(obj: object) -> FunctionSpec | None:
    spec = getattr(obj, SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, FunctionSpec) else None


def argument_names(fn: Callable[..., Any]) -> tuple[list[str], list[str], list[str]]:
    """(all keyword arguments after ctx, the required ones, problems with the signature)."""
    problems: list[str] = []
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        return [], [], ["must take ctx as its first argument"]
    names, required = [], []
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            problems.append(f"*{p.name}/**{p.name} arguments are not supported")
            continue
        if p.kind is p.POSITIONAL_ONLY:
            problems.append(f"argument {p.name!r} is positional-only")
        names.append(p.name)
        if p.default is p.empty:
            required.append(p.name)
    return names, required, problems
