"""`EmbeddedPostgres`: placing, creating (initdb), starting, attaching to and stopping a cluster.

The layout of its data dir is in the package docstring (`runtime.embedded_pg`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shlex
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

from .binaries import _Binaries, _candidate_dirs, _find
from .errors import EmbeddedPostgresError
from .locks import _flock, _pid_alive_in, _processes_in
from .privileges import _Account, _blocked_at, _default_account, _owner_account, _run

_SOCKET_PATH_MAX = 100  # bytes; the kernel's limit for a unix socket path is 107
_LOCK_TIMEOUT = 90.0  # initdb (~1-3 s) plus a start (pg_ctl -t 30) by another process
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_INITDB_FLAGS = ("--auth=trust", "-U", "postgres", "--no-sync", "--no-instructions")
_INITDB_LOCALE = ("-E", "UTF8", "--locale=C")  # no dependence on the machine's locales


def _short_hash(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


class EmbeddedPostgres:
    """A private PostgreSQL cluster in `data_dir`, reached over a unix socket.

    `start()` creates the cluster on first use, reuses it afterwards, and attaches to a server
    another process already runs there; `stop()` stops the server unless another process
    still uses it. Both are idempotent; `stop()` never raises, so atexit and signal handlers
    may call it. `fsync=False` trades durability for speed (tests); `port` also listens on
    localhost:`port` (the socket is always there).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: bool = True,
        port: int | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.fsync = fsync
        self.port = port
        self._log = log
        self._mutex = threading.RLock()
        self._home = self.data_dir
        self._account: _Account | None = None
        self._binaries: _Binaries | None = None
        self._users_fd: int | None = None
        self._socket: tuple[str, int] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The conninfo URL of the ``postgres`` database; raises if not started."""
        return self._database_url("postgres")

    @property
    def home(self) -> Path:
        """The folder actually used: `data_dir`, or /tmp/swarm-runtime-<hash> as a fallback.

        Known once `start()` has run; as root the fallback is taken when the server's user
        cannot traverse to `data_dir` (pytest's 0700 tmp_path, a project under /root).
        """
        return self._home

    @property
    def pgdata(self) -> Path:
        """The cluster's folder (PGDATA) inside `home`."""
        return self._home / "pgdata"

    @property
    def log_file(self) -> Path:
        return self._home / "postgres.log"

    def start(self) -> str:
        """Create (first time), start or attach to the server and wait until it is ready."""
        with self._mutex:
            if self._socket is not None:
                return self.url
            self._home, self._account = self._place()
            lock_fd = _flock(self._home / ".lock", fcntl.LOCK_EX, _LOCK_TIMEOUT)
            try:
                self._users_fd = _flock(self._home / ".users", fcntl.LOCK_SH, _LOCK_TIMEOUT)
                try:
                    self._socket = self._start_locked()
                except BaseException:
                    self.stop()
                    raise
            finally:
                os.close(lock_fd)
            return self.url

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) unless another process still uses it."""
        with self._mutex:
            fd, self._users_fd, self._socket = self._users_fd, None, None
            if fd is None:
                return
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._say(f"Left PostgreSQL running in {self.pgdata}: another process uses it")
                    return
                self._pg_ctl_stop()
            except Exception as exc:
                self._say(f"Stopping PostgreSQL in {self.pgdata} failed: {exc}")
            finally:
                os.close(fd)

    def create_database(self, name: str, template: str | None = None) -> str:
        """``CREATE DATABASE name [TEMPLATE template]``; returns the new database's URL."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(query)
        return self._database_url(name)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- placement --------------------------------------------------------------------------

    def _place(self) -> tuple[Path, _Account | None]:
        """The folder the cluster lives in and the account its programs run as."""
        home = self.data_dir.resolve()
        try:
            home.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(f"Cannot create {home.parent}: {exc}") from exc
        if os.geteuid() != 0:
            for path in (home, home / "pgdata"):
                with contextlib.suppress(OSError):
                    if (owner := path.owner()) != pwd.getpwuid(os.geteuid()).pw_name:
                        raise EmbeddedPostgresError(
                            f"The PostgreSQL cluster in {home} belongs to user {owner!r} (made "
                            "as root?); run as root, or delete the folder to create a new cluster"
                        )
            try:
                home.mkdir(exist_ok=True)
            except OSError as exc:
                raise EmbeddedPostgresError(f"Cannot create {home}: {exc}") from exc
            return home, None
        account = _owner_account(home / "pgdata") or _default_account()
        assert account is not None  # we are root
        blocked = _blocked_at(home.parent, account)
        if blocked is not None:
            fallback = Path("/tmp") / f"swarm-runtime-{_short_hash(home)}"
            self._say(
                f"User {account.name!r} cannot traverse {blocked}, so the PostgreSQL cluster "
                f"for {home} lives in {fallback}"
            )
            home = fallback
            account = _owner_account(home / "pgdata") or account
        if home.is_symlink():
            raise EmbeddedPostgresError(f"{home} is a symlink; refusing to use it")
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, account.uid, account.gid)
        os.chmod(home, 0o700)
        return home, account

    def _socket_dir(self, port: int) -> Path:
        """``run/`` in the data dir, or a short folder under /tmp if that path is too long."""
        folder = self._home / "run"
        if len(os.fsencode(folder / f".s.PGSQL.{port}")) > _SOCKET_PATH_MAX:
            folder = Path("/tmp") / f"swarm-pg-{_short_hash(self._home)}"
        if folder.is_symlink():
            raise EmbeddedPostgresError(f"{folder} is a symlink; refusing to use it")
        folder.mkdir(mode=0o700, exist_ok=True)
        if self._account is not None:
            os.chown(folder, self._account.uid, self._account.gid)
            os.chmod(folder, 0o700)
        elif folder.stat().st_uid != os.geteuid():
            raise EmbeddedPostgresError(f"{folder} belongs to another user; delete it")
        return folder

    # -- starting ---------------------------------------------------------------------------

    def _start_locked(self) -> tuple[str, int]:
        """Under the start lock: initdb if needed, then attach or start; (socket dir, port)."""
        pgdata = self.pgdata
        version = pgdata / "PG_VERSION"
        if version.is_file():
            major = int(version.read_text().strip().split(".")[0])
            self._binaries = _find(_candidate_dirs(), self._account, major)
        else:
            self._binaries = _find(_candidate_dirs(), self._account)
            self._initdb()
        running = self._running_server()
        if running is not None:
            pid, socket = running
            self._check_connects(socket)
            self._say(f"Using the PostgreSQL server already running in {pgdata} (pid {pid})")
            return socket
        return self._pg_ctl_start()

    def _initdb(self) -> None:
        assert self._binaries is not None
        pgdata, scratch = self.pgdata, self._home / "pgdata.tmp"
        if pgdata.exists() and any(pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{pgdata} exists but holds no PostgreSQL cluster (no PG_VERSION); delete it"
            )
        shutil.rmtree(scratch, ignore_errors=True)  # left by an interrupted initdb
        scratch.mkdir(mode=0o700)
        if self._account is not None:
            os.chown(scratch, self._account.uid, self._account.gid)
        self._say(f"Creating a PostgreSQL {self._binaries.major} cluster in {pgdata}")
        initdb: list[str | Path] = [self._binaries.bin_dir / "initdb", "-D", scratch]
        initdb += [*_INITDB_FLAGS, *_INITDB_LOCALE]
        code, output = _run(initdb, self._account, self._home, timeout=120)
        if code != 0:
            raise EmbeddedPostgresError(f"initdb failed (exit {code}): {output}")
        os.replace(scratch, pgdata)  # only a complete cluster ever becomes pgdata/

    def _running_server(self) -> tuple[int, tuple[str, int]] | None:
        """The (pid, socket) of a server already running in pgdata, after it is ready.

        Removes a stale postmaster.pid (its process is gone, or the pid was recycled).
        """
        pid_file = self.pgdata / "postmaster.pid"
        unreadable_since: float | None = None
        deadline = time.monotonic() + 30
        while True:
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                return None
            if lines and lines[0].strip().isdigit():
                pid = int(lines[0])
                if not _pid_alive_in(pid, self.pgdata):
                    self._remove_stale(pid_file, pid, lines)
                    return None
                if len(lines) > 7 and lines[7].strip() in ("ready", "standby") and lines[4]:
                    return pid, (lines[4], int(lines[3]))
            else:  # being written, or left truncated by a crash
                unreadable_since = unreadable_since or time.monotonic()
                if time.monotonic() - unreadable_since > 1:
                    self._remove_stale(pid_file, 0, lines)
                    return None
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"A PostgreSQL server is running in {self.pgdata} but was not ready within "
                    f"30 s; see {self.log_file}"
                )
            time.sleep(0.05)

    def _remove_stale(self, pid_file: Path, pid: int, lines: list[str]) -> None:
        self._say(f"Removing the stale {pid_file} (no live server of this cluster owns it)")
        pid_file.unlink(missing_ok=True)
        deadline = time.monotonic() + 10
        while _processes_in(self.pgdata) and time.monotonic() < deadline:
            time.sleep(0.05)  # its children hold the old shared memory until they notice
        if len(lines) > 4 and lines[3].strip().isdigit() and lines[4]:
            socket = Path(lines[4]) / f".s.PGSQL.{lines[3].strip()}"
            lock = socket.with_name(socket.name + ".lock")
            with contextlib.suppress(OSError):
                if lock.read_text().splitlines()[0].strip() == str(pid):
                    lock.unlink()
                    socket.unlink(missing_ok=True)

    def _pg_ctl_start(self) -> tuple[str, int]:
        assert self._binaries is not None
        port = self.port or 5432
        socket_dir = self._socket_dir(port)
        log_file = self.log_file
        with contextlib.suppress(OSError):
            if log_file.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(log_file, log_file.with_name(log_file.name + ".1"))
        log_file.touch(mode=0o600)
        if self._account is not None:
            os.chown(log_file, self._account.uid, self._account.gid)
        settings = {
            "listen_addresses": "localhost" if self.port else "",
            "port": str(port),
            "unix_socket_directories": f'"{socket_dir}"',
            "max_connections": "200",
            "shared_buffers": "128MB",
            "max_pred_locks_per_transaction": "256",
        }
        if not self.fsync:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        options = shlex.join(
            arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")
        )
        pg_ctl: list[str | Path] = [self._binaries.bin_dir / "pg_ctl", "-D", self.pgdata]
        pg_ctl += ["-l", log_file]
        pg_ctl += ["-w", "-t", "30", "-o", options, "start"]
        code, output = _run(pg_ctl, self._account, self._home, timeout=45)
        if code != 0:
            raise EmbeddedPostgresError(
                f"PostgreSQL failed to start (pg_ctl exit {code}): {output}\n"
                f"--- last lines of {log_file} ---\n{self._log_tail()}"
            )
        socket = (str(socket_dir), port)
        self._say(f"PostgreSQL {self._binaries.major} ready at {self._url_for(socket, 'postgres')}")
        return socket

    def _check_connects(self, socket: tuple[str, int]) -> None:
        try:
            with psycopg.connect(self._url_for(socket, "postgres"), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise EmbeddedPostgresError(
                f"A server seems to run in {self.pgdata} but does not answer ({exc}); stop it "
                f"or delete {self.pgdata / 'postmaster.pid'} if no server runs there"
            ) from exc

    # -- stopping ---------------------------------------------------------------------------

    def _pg_ctl_stop(self) -> None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # not running
        if self._binaries is None or not _pid_alive_in(pid, self.pgdata):
            return  # died; the next start() removes the stale postmaster.pid
        pg_ctl = self._binaries.bin_dir / "pg_ctl"
        for mode in ("fast", "immediate"):
            try:
                code, output = _run(
                    [pg_ctl, "-D", self.pgdata, "-m", mode, "-w", "-t", "30", "stop"],
                    self._account,
                    self._home,
                    timeout=40,
                )
            except EmbeddedPostgresError as exc:
                code, output = -1, str(exc)
            if code == 0 or not (self.pgdata / "postmaster.pid").exists():
                self._say(f"Stopped PostgreSQL in {self.pgdata}")
                return
            self._say(f"pg_ctl stop -m {mode} failed (exit {code}): {output}")

    # -- helpers ----------------------------------------------------------------------------

    def _database_url(self, name: str) -> str:
        if self._socket is None:
            raise EmbeddedPostgresError(
                f"The PostgreSQL cluster in {self.data_dir} is not started; call start() first"
            )
        return self._url_for(self._socket, name)

    @staticmethod
    def _url_for(socket: tuple[str, int], name: str) -> str:
        socket_dir, port = socket
        return (
            f"postgresql://postgres@/{quote(name, safe='')}"
            f"?host={quote(socket_dir, safe='/')}&port={port}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(cannot read it: {exc})"

    def _say(self, message: str) -> None:
        """Log, never raising: stop() may run in a signal handler while print() is busy."""
        with contextlib.suppress(Exception):
            self._log(message)
