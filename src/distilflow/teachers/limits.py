"""Rate limits and retry timing for remote teachers: token buckets, backoff with jitter, Retry-After.

Written here rather than taken from a library: the tokens-per-minute bucket must be charged an estimate
before a request and corrected with the real usage after it (aiolimiter and friends cannot do that),
and retry timing must honour the server's Retry-After while we count every retry ourselves.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping

# Exponential backoff: the k-th retry waits about BASE * 2**k seconds (capped), with jitter.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A Retry-After longer than this is treated as this (a misconfigured server must not stall a run for hours).
RETRY_AFTER_CAP_S = 300.0


class TokenBucket:
    """A bucket of `per_minute` units refilled continuously; holds at most one second's worth (smooth pacing).

    `acquire(n)` waits until n units are there (a request larger than the bucket waits for a full bucket
    and leaves it in debt); `adjust(delta)` corrects a charge once the real cost is known.
    """

    def __init__(self, per_minute: float, burst_seconds: float = 1.0) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self._updated = time.monotonic()
        self._lock: asyncio.Lock | None = None  # created in the running loop

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served
            needed = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= needed:
                    self.level -= amount
                    return
                await asyncio.sleep((needed - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Give back (delta > 0) or take more (delta < 0) once a request's real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level + delta)


def backoff_delay(attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    With a Retry-After from the server, wait that long (plus up to 10% jitter so that the requests
    it stopped do not all return at once); otherwise exponential backoff with "equal jitter".
    """
    rng = rng or random
    if retry_after is not None:
        wait = min(max(retry_after, 0.0), RETRY_AFTER_CAP_S)
        return wait * (1.0 + 0.1 * rng.random())
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    return ceiling / 2 + rng.random() * ceiling / 2


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent or unreadable."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
