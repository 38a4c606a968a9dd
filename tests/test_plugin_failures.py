"""A broken plugin is named: at start-up `swarm-runtime serve` exits 1 with the plugin's file
and traceback (the real CLI, in a subprocess); during a call, a plugin raising in a hook
fails that call only (500 `internal`), logged with the plugin's name."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.defaults import DEFAULT_PLUGINS
from runtime.errors import LoadError
from runtime.plugins import make_plugin_manager
from tests.conftest import AppFiles, LiveServer, free_port
from tests.plugin_app import CLI, PROBE, PROBE_FUNCTIONS, cli_env

BROKEN_IMPORT = """
from runtime import hookimpl


def _configure():
    raise ValueError("no such key file: /etc/swarm/key.pem")


_configure()
"""

RAISES_IN_HOOKS = """
from runtime import Identity, hookimpl


@hookimpl
async def authenticate(request, runtime):
    header = request.headers.get("authorization", "")
    if header == "Bearer boom":
        raise KeyError("plugin bug in authenticate")
    if header.startswith("Bearer user:"):
        return Identity(user_id=header[12:], tenant_id="acme", roles=("viewer",))
    return None


@hookimpl
async def authorize(identity, function, runtime):
    if identity.user_id == "crash":
        raise ZeroDivisionError("plugin bug in authorize")
    return None
"""

RAISES_AT_STARTUP = """
from runtime import hookimpl


@hookimpl
async def startup(runtime):
    raise ConnectionError("cannot reach the secrets vault")
"""

UNKNOWN_HOOK = """
from runtime import hookimpl


@hookimpl
def authentikate(request):
    return None
"""


def app(files: AppFiles, **plugins: str) -> AppFiles:
    files.write_module("probe", PROBE)
    files.write_schema({"tables": {}, "functions": PROBE_FUNCTIONS})
    for name, source in plugins.items():
        files.write_plugin(name, source)
    return files


def serve_cli(files: AppFiles, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CLI,
            "serve",
            "--functions",
            str(files.functions),
            "--schema",
            str(files.schema_path),
            "--plugins",
            str(files.plugins),
            "--data",
            str(files.root / ".runtime"),
            "--database-url",
            database_url,
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(RUNTIME_LOG_FORMAT="text"),
    )


# -- at start-up -----------------------------------------------------------------------------


def test_import_failure_is_a_load_error_naming_the_plugin(app_files: AppFiles) -> None:
    app(app_files, good="X = 1\n", broken_auth=BROKEN_IMPORT)
    with pytest.raises(LoadError) as caught:
        make_plugin_manager(app_files.plugins, defaults=DEFAULT_PLUGINS, entry_points=False)
    [problem] = caught.value.problems
    assert problem.startswith("plugin 'broken_auth.py' failed to load:\nTraceback")
    assert 'broken_auth.py", line 9, in <module>' in problem
    assert problem.rstrip().endswith("ValueError: no such key file: /etc/swarm/key.pem")


def test_unknown_hook_is_a_load_error_naming_the_plugin(app_files: AppFiles) -> None:
    app(app_files, typo=UNKNOWN_HOOK)
    with pytest.raises(LoadError) as caught:
        make_plugin_manager(app_files.plugins, defaults=DEFAULT_PLUGINS, entry_points=False)
    assert "plugins/typo.py" in str(caught.value)
    assert "authentikate" in str(caught.value)


@pytest.mark.slow
def test_serve_exits_1_naming_a_plugin_that_fails_to_import(
    app_files: AppFiles, database_url: str
) -> None:
    result = serve_cli(app(app_files, broken_auth=BROKEN_IMPORT), database_url)
    assert result.returncode == 1, result.stderr
    assert "error: cannot start, 1 problem(s):" in result.stderr
    assert "plugin 'broken_auth.py' failed to load:" in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
    assert f'File "{app_files.plugins / "broken_auth.py"}", line 9, in <module>' in result.stderr
    assert "ValueError: no such key file: /etc/swarm/key.pem" in result.stderr


@pytest.mark.slow
def test_serve_fails_naming_a_plugin_that_fails_in_startup(
    app_files: AppFiles, database_url: str
) -> None:
    result = serve_cli(app(app_files, vault=RAISES_AT_STARTUP), database_url)
    assert result.returncode != 0, result.stderr  # uvicorn's STARTUP_FAILURE, 3
    assert "plugin 'plugins/vault.py' failed in hook 'startup'" in result.stderr
    assert "ConnectionError: cannot reach the secrets vault" in result.stderr
    assert 'vault.py", line 7, in startup' in result.stderr


# -- during a call -----------------------------------------------------------------------------


def test_hook_failure_is_a_500_for_that_call_only(
    app_files: AppFiles, serve: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(app(app_files, flaky=RAISES_IN_HOOKS))
    caplog.set_level(logging.ERROR, logger="runtime.http")
    with server.client() as client:
        boom = client.post("/fn/probe.whoami", json={}, headers={"authorization": "Bearer boom"})
        crash = client.post(
            "/fn/probe.whoami", json={}, headers={"authorization": "Bearer user:crash"}
        )
        fine = client.post(
            "/fn/probe.whoami", json={}, headers={"authorization": "Bearer user:alice"}
        )
    for response in (boom, crash):
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal", "message": "Internal error."}}
        assert "plugin bug" not in response.text  # no internals leak outside dev mode
    assert fine.status_code == 200
    assert fine.json()["value"]["user_id"] == "alice"
    messages = [r.getMessage() for r in caplog.records]
    assert "call probe.whoami: plugin 'plugins/flaky.py' failed in hook 'authenticate'" in messages
    assert "call probe.whoami: plugin 'plugins/flaky.py' failed in hook 'authorize'" in messages
    causes = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(isinstance(c, KeyError) for c in causes)
    assert any(isinstance(c, ZeroDivisionError) for c in causes)


def test_repo_plugins_load(tmp_path: Path) -> None:
    """Every plugin this deployment ships imports and implements only known hooks."""
    from tests.conftest import REPO

    pm = make_plugin_manager(REPO / "plugins", defaults=DEFAULT_PLUGINS, entry_points=False)
    names = {pm.get_name(p) for p in pm.get_plugins()}
    for plugin in ("auth_jwt", "auth_apikey", "rbac", "github_webhooks"):
        assert f"plugins/{plugin}.py" in names


def test_routes_hook_failure_names_the_plugin(app_files: AppFiles, database_url: str) -> None:
    from runtime.engine import Runtime
    from runtime.http.app import build_app

    app_files.write_plugin(
        "bad_routes",
        "from runtime import hookimpl\n\n@hookimpl\ndef routes():\n    raise RuntimeError('x')\n",
    )
    runtime = Runtime(app_files.settings(), database_url)
    with pytest.raises(LoadError) as info:
        build_app(runtime)
    assert "plugins/bad_routes.py" in str(info.value) and "'routes'" in str(info.value)
