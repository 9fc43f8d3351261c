"""Rate limits and retry timing for remote teachers: token buckets, backoff with jitter, Retry-After.

Written here rather than taken from a library: the tokens-per-minute bucket must be charged an estimate
before a request and corrected with the real usage after it (aiolimiter and friends cannot do that),
and retry timing must honour the server's Retry-After while we count every retry ourselves.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import email.utils
import math
import random
import time
from collections.abc import Mapping

# Exponential backoff: the k-th retry waits about BASE * 2**k seconds (capped), with jitter.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A Retry-After longer than this is treated as this (a misconfigured server must not stall a run for hours).
RETRY_AFTER_CAP_S = 300.0


class Clock:
    """The time source of pacing and retry waits. This one is the real clock; a test gives a virtual one (its
    `sleep` advances its `monotonic` at once) to check what was waited without waiting."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = Clock()


class CircuitOpen(Exception):
    """`limit` requests in a row failed with no success between them: the endpoint is dead, not busy."""

    def __init__(self, failures: int, last_reason: str) -> None:
        super().__init__(f"{failures} requests in a row failed and none succeeded (the last: {last_reason})")
        self.failures, self.last_reason = failures, last_reason


class CircuitBreaker:
    """Counts failures since the last success; the `limit`-th raises CircuitOpen.

    Measured before it existed: 1,000 rows at 16 in flight against a closed port had failed 40 rows after 90 s,
    each request retrying on its own for ~30 s; the whole stage would have taken about half an hour to give up.
    Callers count only failures that say the endpoint itself is wrong (unreachable, a client error, a request
    that used up its retries), never a 429 or 5xx that a retry may fix, so a busy server is not mistaken for a
    dead one. One breaker is shared by every request in flight (one event loop or one lock: no races).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures = 0

    def success(self) -> None:
        self.failures = 0

    def failure(self, reason: str) -> None:
        self.failures += 1
        if self.failures >= self.limit:
            raise CircuitOpen(self.failures, reason)


class TokenBucket:
    """A bucket of `per_minute` units refilled continuously; holds at most one second's worth (smooth pacing).

    `acquire(n)` waits until n units are there (a request larger than the bucket waits for a full bucket
    and leaves it in debt); `adjust(delta)` corrects a charge once the real cost is known.
    """

    def __init__(self, per_minute: float, burst_seconds: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.clock = clock
        self._updated = clock.monotonic()
        self._lock: asyncio.Lock | None = None  # created in the running loop

    def _refill(self) -> None:
        now = self.clock.monotonic()
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
                await self.clock.sleep((needed - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Give back (delta > 0) or take more (delta < 0) once a request's real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level + delta)


def backoff_delay(attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    With a usable Retry-After from the server (positive and finite, see parse_retry_after), wait that long, plus
    up to 10% jitter so that the requests it stopped do not all return at once; otherwise exponential backoff
    with "equal jitter", so a server that says 0 (or nonsense) never gets a burst of instant retries.
    """
    rng = rng or random
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        return min(retry_after, RETRY_AFTER_CAP_S) * (1.0 + 0.1 * rng.random())
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    return ceiling / 2 + rng.random() * ceiling / 2


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (delay-seconds or an HTTP-date, RFC 9110 10.2.3).

    None when absent, unreadable, not finite, zero or negative, or a date in the past: the caller then backs off
    exponentially instead of retrying at once.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    seconds: float | None = None
    if lowered.get("retry-after-ms") is not None:
        seconds = _number(lowered["retry-after-ms"])
        seconds = None if seconds is None else seconds / 1000.0
    if seconds is None and lowered.get("retry-after") is not None:
        value = lowered["retry-after"].strip()
        seconds = _number(value)
        if seconds is None:
            when = http_date(value)
            seconds = None if when is None else when - time.time()
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


# RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must accept. Always GMT.
_HTTP_DATE_FORMATS = ("%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y")


def http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP-date; a timezone other than GMT (like `-0000` or `+0200`) is honoured, and a
    date without one is GMT, never local time."""
    text = " ".join(value.split())
    for form in _HTTP_DATE_FORMATS:
        try:
            return datetime.datetime.strptime(text, form).replace(tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            continue
    parsed = email.utils.parsedate_tz(text)  # lenient RFC 5322 forms, e.g. with a numeric offset
    if parsed is None:
        return None
    offset = parsed[9] or 0  # None (no zone, or -0000 "unknown zone"): read as GMT per RFC 9110
    return calendar.timegm(parsed[:6] + (0, 0, 0)) - offset
