"""The retry policy and the SQLSTATE classifier, without a database."""

from __future__ import annotations

import random

import pytest

from runtime.retry import Decision, RetryPolicy, classify


@pytest.mark.parametrize(
    ("sqlstate", "during_commit", "decision"),
    [
        ("40001", False, Decision.RETRY),
        ("40P01", False, Decision.RETRY),
        ("40001", True, Decision.RETRY),
        ("08006", False, Decision.CONNECTION),
        ("08006", True, Decision.UNKNOWN_OUTCOME),
        ("57P01", True, Decision.UNKNOWN_OUTCOME),
        ("53300", False, Decision.CONNECTION),
        (
            "57014",
            False,
            Decision.FAIL,
        ),  # query_canceled: a statement timeout, not a lost connection
        ("23505", False, Decision.FAIL),
        (None, True, Decision.UNKNOWN_OUTCOME),
    ],
)
def test_classify(sqlstate: str | None, during_commit: bool, decision: Decision) -> None:
    assert classify(sqlstate, during_commit=during_commit) is decision


def test_delay_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
    rand = random.Random(1)
    for attempt, cap in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (10, 0.05)]:
        delays = [policy.delay(attempt, rand) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # the whole range is used, not just the cap


def test_bounded_by_attempts_and_elapsed_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed_s=1.0)
    assert policy.should_retry(1, 0.0)
    assert policy.should_retry(2, 0.5)
    assert not policy.should_retry(3, 0.0)
    assert not policy.should_retry(1, 1.0)
