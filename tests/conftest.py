"""Test fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL), a fresh database per
test cloned from a template, and a real uvicorn server around a runtime built from files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from runtime.config import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an empty PostgreSQL server for this test session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from runtime.embedded_pg import EmbeddedPostgres

    cluster = EmbeddedPostgres(
        tmp_path_factory.mktemp("pg") / "pg", fsync=False, log=lambda _m: None
    )
    url = cluster.start()
    try:
        yield url
    finally:
        cluster.stop()
        # as root the cluster may live outside tmp_path (/tmp/swarm-runtime-<hash>)
        shutil.rmtree(cluster.home, ignore_errors=True)


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def sql(url: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on `url` (autocommit); its rows, or [] when it returns none."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text, params or None)
        return cur.fetchall() if cur.description else []


def _with_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    name = f"swarm_template_{uuid.uuid4().hex[:8]}"
    with _admin(pg_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


@contextmanager
def fresh_database(pg_server: str, template_db: str) -> Iterator[str]:
    """The URL of a new database cloned from the template, dropped on exit."""
    name = f"swarm_test_{uuid.uuid4().hex[:12]}"
    with _admin(pg_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield _with_dbname(pg_server, name)
    finally:
        with _admin(pg_server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with fresh_database(pg_server, template_db) as url:
        yield url


@dataclass
class AppFiles:
    root: Path

    @property
    def functions(self) -> Path:
        return self.root / "app_functions"

    @property
    def schema_path(self) -> Path:
        return self.root / "schema.json"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    def write_module(self, name: str, source: str) -> Path:
        path = self.functions / f"{name.replace('.', '/')}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        return path

    def write_schema(self, schema: dict[str, Any]) -> None:
        self.schema_path.write_text(json.dumps(schema, indent=2))

    def write_plugin(self, name: str, source: str) -> Path:
        self.plugins.mkdir(exist_ok=True)
        path = self.plugins / f"{name}.py"
        path.write_text(source)
        return path

    def settings(self, **overrides: Any) -> Settings:
        base = Settings(
            functions_dir=self.functions,
            schema_path=self.schema_path,
            plugins_dir=self.plugins,
            data_dir=self.root / ".runtime",
            pool_min=2,
            pool_max=8,
        )
        return replace(base, **overrides)


@pytest.fixture
def app_files(tmp_path: Path) -> AppFiles:
    """An empty app folder: write modules, schema.json and plugins into it."""
    files = AppFiles(tmp_path / "app")
    files.functions.mkdir(parents=True)
    files.plugins.mkdir()
    files.write_schema({"tables": {}, "functions": {}})
    return files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, around a Runtime built from `settings`."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        from runtime.engine import Runtime
        from runtime.http.app import build_app

        self.port = free_port()
        self.runtime = Runtime(settings, database_url)
        self.app = build_app(self.runtime)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def serve(database_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server from AppFiles (`serve(app_files, dev=True)`); stopped after the test."""
    servers: list[LiveServer] = []

    def start(files: AppFiles, **overrides: Any) -> LiveServer:
        server = LiveServer(files.settings(**overrides), database_url).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dev_token(app_files: AppFiles) -> str:
    from runtime.defaults.dev_token import ensure_dev_token

    return ensure_dev_token(app_files.root / ".runtime")
