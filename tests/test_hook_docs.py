"""Every hook of runtime/hookspecs.py is documented in docs/plugins.md's "Hook reference",
with its arguments, and the first-answer-wins hooks say so (after datasette's test_docs)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from runtime import hookspecs
from tests.conftest import REPO

DOC = REPO / "docs" / "plugins.md"
HEADING = re.compile(r"^### `(\w+)\(([^)]*)\)`\n\n(.*?)(?=^### |\Z)", re.MULTILINE | re.DOTALL)


def hookspecs_by_name() -> dict[str, Callable[..., Any]]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(hookspecs).items() if hasattr(fn, marker)}


def hook_reference() -> dict[str, tuple[list[str], str]]:
    """{hook: (documented arguments, paragraph)} from the "Hook reference" section."""
    text = DOC.read_text()
    assert "\n## Hook reference\n" in text, "docs/plugins.md has no '## Hook reference' section"
    section = text.split("\n## Hook reference\n", 1)[1].split("\n## ", 1)[0]
    return {
        m.group(1): ([a.strip() for a in m.group(2).split(",") if a.strip()], m.group(3))
        for m in HEADING.finditer(section)
    }


def test_there_are_hooks() -> None:
    assert {"authenticate", "authorize", "verify_webhook", "routes", "startup"} <= set(
        hookspecs_by_name()
    )


def test_every_hook_is_documented() -> None:
    missing = sorted(set(hookspecs_by_name()) - set(hook_reference()))
    assert not missing, f"hooks missing from docs/plugins.md's Hook reference: {missing}"


def test_no_documented_hook_is_unknown() -> None:
    unknown = sorted(set(hook_reference()) - set(hookspecs_by_name()))
    assert not unknown, f"docs/plugins.md documents hooks runtime/hookspecs.py lacks: {unknown}"


@pytest.mark.parametrize("name", sorted(hookspecs_by_name()))
def test_documented_arguments_and_semantics_match(name: str) -> None:
    spec = hookspecs_by_name()[name]
    documented = hook_reference().get(name)
    if documented is None:
        pytest.skip("reported by test_every_hook_is_documented")
    arguments, paragraph = documented
    assert arguments == list(inspect.signature(spec).parameters), name
    options = getattr(spec, f"{hookspecs.PROJECT}_spec")
    says_first = "**first answer wins**" in paragraph
    assert says_first == bool(options.get("firstresult")), (
        f"{name}: firstresult={options.get('firstresult')}, docs say otherwise"
    )
    kind = "Async" if inspect.iscoroutinefunction(spec) else "Sync"
    assert paragraph.startswith(kind), f"{name} is {kind.lower()}; its paragraph should say so"
    assert (spec.__doc__ or "").strip(), f"hookspec {name} has no docstring"
