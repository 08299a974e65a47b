"""Per-key rate limits (token buckets) for the vault's routes, and their log lines.

Each process keeps its own buckets, so N server processes behind a load balancer let
through up to N times the configured rate. The guess limit does not depend on them: it
is enforced in the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("backvault.server.vault")

MAX_TRACKED_KEYS = 100_000  # buckets kept before idle ones are dropped
LOG_INTERVAL = 60.0  # seconds between log lines about one rejected key


class RateLimiter:
    """Token buckets that allow ``per_minute`` requests a minute per key, in bursts of up
    to ``per_minute``.

    A ``per_minute`` of 0 turns the limit off.
    """

    def __init__(
        self, per_minute: int, *, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.name = name
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self._rejections: dict[str, tuple[int, float]] = {}  # key -> (count, last logged)

    def check(self, key: str) -> float | None:
        """Take a token for ``key``; return None if allowed, else seconds until one is free."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - updated) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                self._drop_idle_buckets(now)
                return None
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
            self._log_rejection(key, now)
        return wait

    def _drop_idle_buckets(self, now: float) -> None:
        if len(self._buckets) <= MAX_TRACKED_KEYS:
            return
        # A bucket that would be full again carries no state worth keeping.
        full_after = self.per_minute / self._rate
        self._buckets = {
            key: (tokens, updated)
            for key, (tokens, updated) in self._buckets.items()
            if now - updated < full_after
        }
        self._rejections = {
            key: value for key, value in self._rejections.items() if key in self._buckets
        }

    def _log_rejection(self, key: str, now: float) -> None:
        """Log the first rejection of a key, then at most one line a minute with a count."""
        count, last_logged = self._rejections.get(key, (0, -LOG_INTERVAL))
        count += 1
        if now - last_logged >= LOG_INTERVAL:
            logger.warning(
                "vault rate limit reached",
                extra={"limit": self.name, "key": key, "rejected": count,
                       "per_minute": self.per_minute},
            )
            self._rejections[key] = (0, now)
        else:
            self._rejections[key] = (count, last_logged)
