"""The token buckets of the vault's rate limits, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from backvault.vault.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rejects() -> None:
    clock = FakeClock()
    limiter = RateLimiter(6, name="account", clock=clock)
    assert [limiter.check("a") for _ in range(6)] == [None] * 6

    wait = limiter.check("a")
    assert wait == pytest.approx(10.0)  # 6 a minute: one token every 10 s


def test_refills_over_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(6, name="account", clock=clock)
    for _ in range(6):
        limiter.check("a")
    clock.now += 10.0
    assert limiter.check("a") is None
    assert limiter.check("a") is not None


def test_keys_are_independent() -> None:
    limiter = RateLimiter(1, name="address", clock=FakeClock())
    assert limiter.check("192.0.2.1") is None
    assert limiter.check("192.0.2.1") is not None
    assert limiter.check("192.0.2.2") is None


def test_zero_turns_limit_off() -> None:
    limiter = RateLimiter(0, name="account", clock=FakeClock())
    assert all(limiter.check("a") is None for _ in range(1000))


def test_rejections_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, name="address", clock=clock)
    limiter.check("192.0.2.1")
    with caplog.at_level(logging.WARNING, logger="backvault.server.vault"):
        for _ in range(5):
            limiter.check("192.0.2.1")
        clock.now += 61.0
        limiter.check("192.0.2.1")
        limiter.check("192.0.2.1")

    records = [record for record in caplog.records if "rate limit" in record.getMessage()]
    assert len(records) == 2
    assert [record.__dict__["rejected"] for record in records] == [1, 5]
    assert all(record.__dict__["key"] == "192.0.2.1" for record in records)
