"""Retry an operation on transient errors, with exponential backoff and jitter.

Network backends (S3, the backvault server) call :func:`call_with_retry` around each
request. The caller decides which errors are transient. Every other error is raised at
once, and the last transient error is raised when the attempts run out.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts.

    The wait before retry ``n`` (counting from 1) is ``min(max_delay, base_delay * 2**(n-1))``
    seconds, of which the second half is random ("equal jitter"). The fixed half keeps a
    minimum wait so that a briefly unavailable service has time to return, and the random
    half spreads out clients that failed at the same moment.
    """

    attempts: int = 5
    base_delay: float = 0.25  # seconds
    max_delay: float = 8.0  # seconds
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must not be negative")

    def delay(self, retry: int) -> float:
        """Return the wait in seconds before retry number ``retry`` (1 for the first)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling / 2 + self.uniform(0.0, ceiling / 2)


DEFAULT_POLICY = RetryPolicy()


def call_with_retry(
    operation: Callable[[], T],
    *,
    is_transient: Callable[[Exception], bool],
    description: str,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> T:
    """Call ``operation`` until it succeeds, for at most ``policy.attempts`` attempts.

    ``is_transient`` decides whether an error is worth another attempt. ``description``
    names the operation in the log line of each retry, for example ``"PUT s3://b/k"``.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except Exception as error:
            if attempt == policy.attempts or not is_transient(error):
                raise
            wait = policy.delay(attempt)
            logger.warning(
                "%s failed (attempt %d of %d), retrying in %.2f s: %s",
                description, attempt, policy.attempts, wait, error,
            )
            policy.sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")
