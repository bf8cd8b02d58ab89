"""Retry policy: what is retried, exponential backoff with jitter, Retry-After honoured."""

from __future__ import annotations

import random

import pytest

from client.retry import RetryPolicy, classify, parse_retry_after


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        *[(200, "ok"), (429, "retry"), (503, "retry"), (504, "retry"), (502, "retry")],
        *[(401, "fatal"), (404, "fatal"), (413, "split"), (422, "split"), (400, "split"), (500, "split")],
    ],
)
def test_statuses_are_classified(status, kind):
    assert classify(status) == kind


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half():
    policy = RetryPolicy(base=0.1, cap=2.0, rng=random.Random(0))
    for attempt in range(12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        waits = [policy.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # really jittered


def test_retry_after_replaces_the_backoff_and_is_capped():
    policy = RetryPolicy(base=0.1, cap=2.0, max_retry_after=30.0, rng=random.Random(1))
    assert 5.0 <= policy.delay(0, retry_after=5.0) <= 5.1
    assert 30.0 <= policy.delay(0, retry_after=3600.0) <= 30.1
    assert 0.0 <= policy.delay(3, retry_after=0.0) <= 0.01


def test_attempts_are_bounded():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(a) for a in range(4)] == [True, True, False, False]
