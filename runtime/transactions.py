"""BEGIN, COMMIT and the automatic retry of serialization failures.

`run_transaction` owns one pooled connection for the whole call: it optionally queues on the
hot-key advisory lock, begins a SERIALIZABLE transaction, runs the body, commits, and on
SQLSTATE 40001/40P01 rolls back and tries again under the `RetryPolicy`. It knows nothing of
HTTP; failures leave as `runtime.errors` classes. A body that wrote tables may have a change
notification sent with its COMMIT, in the same round trip (`changes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runtime import errors
from runtime.db.connection import RuntimeConnection
from runtime.hotkeys import HotKeyTracker, lock_id
from runtime.retry import Decision, RetryPolicy, classify_exception
from runtime.sql import load

T = TypeVar("T")
Conn = RuntimeConnection
Body = Callable[[Conn, int], Awaitable[T]]
Changes = Callable[[], str | None]

SQL = load("runtime.sql")
ABORTED_BY_CAUGHT_ERROR = (
    "A database error inside the function was caught and not re-raised, which aborted its "
    "transaction: nothing it wrote was committed. Let database errors propagate"
)
CONTENDED_LOCK_WAIT_S = 0.002
CHANGES_SQL = load("changes.sql")


BEGIN_READ_WRITE = SQL["begin_read_write"].encode()
BEGIN_READ_ONLY = SQL["begin_read_only"].encode()
COMMIT = SQL["commit"].encode()
ROLLBACK = SQL["rollback"].encode()


@lru_cache(maxsize=1024)
def notify_commit(tables: str) -> bytes:
    """`NOTIFY swarm_changes, '<tables>'; COMMIT`: one simple query, one round trip."""
    return sql.SQL(CHANGES_SQL["notify_commit"]).format(tables=sql.Literal(tables)).as_bytes(None)


def commit_statement(tables: str | None, lock: int | None) -> bytes:
    """COMMIT, with the change notice before it and the hot-key unlock after it."""
    commit = notify_commit(tables) if tables else COMMIT
    if lock is None:
        return commit
    return commit + lock_statement("then_unlock", lock)


def lock_statement(name: str, lock: int) -> bytes:
    """`advisory_lock`, `advisory_unlock` or `then_unlock` for this lock id."""
    return SQL[name].format(lock=int(lock)).encode()


@dataclass
class TxOutcome(Generic[T]):
    value: T
    attempts: int
    waited_on_hot_key: bool


@dataclass
class TxStats:
    """Counters the metrics plugin reads; per process."""

    transactions: int = 0
    retries: int = 0
    exhausted: int = 0
    hot_key_waits: int = 0


class Transactor:
    """Runs transaction bodies on a pool with retry and hot-key queuing."""

    def __init__(
        self,
        pool: AsyncConnectionPool[RuntimeConnection],
        policy: RetryPolicy,
        hot_keys: HotKeyTracker,
        pool_timeout_s: float,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.hot_keys = hot_keys
        self.pool_timeout_s = pool_timeout_s
        self.stats = TxStats()

    async def run(
        self,
        body: Body[T],
        *,
        read_only: bool,
        function: str,
        key: str,
        timeout_ms: int | None = None,
        changes: Changes | None = None,
    ) -> TxOutcome[T]:
        """Run `body` in a transaction, retried; `changes()`, asked just before COMMIT, names
        the tables the attempt wrote for a `swarm_changes` notification (None: no notice)."""
        hot = not read_only and self.hot_keys.is_hot(function, key)
        try:
            conn = await self.pool.getconn(timeout=self.pool_timeout_s)
        except PoolTimeout as exc:
            raise errors.Unavailable(
                "No database connection became free in time; try again shortly"
            ) from exc
        except psycopg.OperationalError as exc:
            raise errors.Unavailable() from exc
        try:
            return await self._attempts(
                conn, body, read_only, function, key, timeout_ms, changes, hot
            )
        except BaseException:
            if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                # Cancelled mid-statement or the connection broke: never hand back a
                # connection that may hold a transaction or a session lock.
                await conn.close()
            raise
        finally:
            await self.pool.putconn(conn)

    async def _attempts(
        self,
        conn: Conn,
        body: Body[T],
        read_only: bool,
        function: str,
        key: str,
        timeout_ms: int | None,
        changes: Changes | None,
        hot: bool,
    ) -> TxOutcome[T]:
        begin = BEGIN_READ_ONLY if read_only else BEGIN_READ_WRITE
        lock = 0
        locked = waited = False
        started = time.monotonic()
        attempt = 0
        self.stats.transactions += 1
        try:
            if hot:
                lock = lock_id(function, key)
                locked = waited = True
                self._count_wait(function, key)
                asked = time.monotonic()
                await _take_lock(conn, lock, attempt)
                if time.monotonic() - asked > CONTENDED_LOCK_WAIT_S:  # another process had it
                    self.hot_keys.record_contention(function, key)
            while True:
                attempt += 1
                committing = False
                try:
                    await conn.command(begin)
                    if timeout_ms is not None:
                        await conn.execute(SQL["set_local_statement_timeout"], (str(timeout_ms),))
                    value = await body(conn, attempt)
                    committing = True
                    aborted = conn.pgconn.transaction_status == pq.TransactionStatus.INERROR
                    if aborted and not read_only:  # its COMMIT would roll back, silently
                        raise errors.Internal(ABORTED_BY_CAUGHT_ERROR)
                    tables = changes() if changes is not None else None
                    await conn.command(commit_statement(tables, lock if locked else None))
                    locked = False  # released by the same round trip as COMMIT
                    return TxOutcome(value, attempt, waited)
                except psycopg.Error as exc:
                    decision = classify_exception(exc, during_commit=committing)
                    await _rollback_quietly(conn)
                    if decision is Decision.RETRY:
                        self.hot_keys.record_conflict(function, key)
                        if not self.policy.should_retry(attempt, time.monotonic() - started):
                            self.stats.exhausted += 1
                            exhausted = errors.RetriesExhausted(
                                f"The transaction conflicted with concurrent transactions "
                                f"{attempt} times and retries were exhausted; try again"
                            )
                            exhausted.attempts = attempt
                            raise exhausted from exc
                        self.stats.retries += 1
                        if not locked and not read_only:
                            # The key just became hot: queue on its lock before the retry.
                            lock = lock_id(function, key)
                            locked = waited = True
                            self._count_wait(function, key)
                            await _take_lock(conn, lock, attempt)
                        else:
                            await asyncio.sleep(self.policy.delay(attempt))
                        continue
                    failure = (
                        errors.OutcomeUnknown()
                        if decision is Decision.UNKNOWN_OUTCOME
                        else errors.translate_db_error(exc)
                    )
                    failure.attempts = attempt
                    raise failure from exc
                except BaseException as exc:
                    await _rollback_quietly(conn)
                    if isinstance(exc, errors.RuntimeFailure):
                        exc.attempts = attempt  # e.g. a UserError: reported with its attempts
                    raise
        finally:
            if locked and not conn.closed:
                await _unlock_or_close(conn, lock)

    def _count_wait(self, function: str, key: str) -> None:
        self.hot_keys.record_wait(function, key)
        self.stats.hot_key_waits += 1


async def _take_lock(conn: Conn, lock: int, attempts: int) -> None:
    """Queue on a hot key's session lock; the wait is bounded by the statement timeout.

    The caller counts the lock as held before this returns (a cancellation may race the
    grant); unlocking a lock that was never granted only draws a warning.
    """
    try:
        await conn.command(lock_statement("advisory_lock", lock))
    except psycopg.Error as exc:
        failure = (
            errors.Timeout(
                "Waited longer than the statement timeout for this key's turn: other calls "
                "on the same key held it; try again"
            )
            if isinstance(exc, pg_errors.QueryCanceled)
            else errors.translate_db_error(exc)
        )
        failure.attempts = attempts
        raise failure from exc


async def _rollback_quietly(conn: Conn) -> None:
    status = conn.pgconn.transaction_status
    if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        try:
            await conn.command(ROLLBACK)
        except psycopg.Error:
            await conn.close()


async def _unlock_or_close(conn: Conn, lock: int) -> None:
    """Release the session lock; if that is impossible, closing the session releases it."""
    try:
        if conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            await conn.command(lock_statement("advisory_unlock", lock))
            return
    except (psycopg.Error, asyncio.CancelledError):
        pass
    await conn.close()
