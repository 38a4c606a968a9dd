"""When and how long to wait before retrying a transaction.

`classify` is a pure function of the SQLSTATE; `RetryPolicy` is a small value object. Both
are unit-tested without a database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import psycopg


class Decision(Enum):
    RETRY = "retry"  # serialization failure or deadlock: the transaction did not commit
    UNKNOWN_OUTCOME = "unknown_outcome"  # connection lost during COMMIT: never retry blindly
    CONNECTION = "connection"  # connection-class failure before COMMIT: safe to report 503
    FAIL = "fail"  # anything else


SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"


def classify(sqlstate: str | None, *, during_commit: bool = False) -> Decision:
    """Decide what a failed transaction attempt means.

    40001 and 40P01 retry. Connection classes (08, 53, 57 except 57014 query_canceled) lost
    during COMMIT leave the outcome unknown; before COMMIT nothing was committed.
    """
    if sqlstate in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
        return Decision.RETRY
    connection_class = sqlstate is None or (
        sqlstate[:2] in ("08", "53", "57") and sqlstate != "57014"
    )
    if connection_class:
        return Decision.UNKNOWN_OUTCOME if during_commit else Decision.CONNECTION
    return Decision.FAIL


def classify_exception(exc: BaseException, *, during_commit: bool = False) -> Decision:
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate is None and not isinstance(exc, psycopg.OperationalError):
            return Decision.FAIL
        return classify(exc.sqlstate, during_commit=during_commit)
    return Decision.FAIL


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by total time.

    The wait before attempt n+1 (n >= 1) is `uniform(0, min(max_delay, base_delay * 2**(n-1)))`
    seconds; no attempt starts once `max_elapsed` seconds have passed since the first.
    """

    max_attempts: int = 10
    max_elapsed_s: float = 5.0
    base_delay_s: float = 0.002
    max_delay_s: float = 0.1

    def delay(self, attempt: int, rand: random.Random | None = None) -> float:
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return (rand or random).uniform(0, cap)

    def should_retry(self, attempt: int, elapsed_s: float) -> bool:
        return attempt < self.max_attempts and elapsed_s < self.max_elapsed_s
