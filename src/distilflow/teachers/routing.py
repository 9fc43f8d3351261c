"""Several endpoints serving one teacher (`teacher.base_url` as a list: vLLM replicas, provider deployments): each
request attempt goes to the endpoint with the fewest requests in flight, at most `max_concurrency` on each, and an
endpoint that keeps failing is taken out for a cool-down while the others carry on.

Everything here runs on the teacher's one event loop (async_bridge.py), so the counters need no locks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Failed attempts in a row (no connection, 5xx, timeouts: not 429, which says busy, not broken) that take an endpoint
# out, and for how long; each further cool-down of the same endpoint doubles, up to the cap. With one endpoint there
# is nowhere else to go: the stage's circuit breaker decides alone.
COOL_DOWN_AFTER = 3
COOL_DOWN_S = 30.0
COOL_DOWN_CAP_S = 300.0


@dataclass
class Route:
    """One endpoint of the pool: its client and what the router knows about it."""

    url: str
    endpoint: Any  # models.openai.OpenAIEndpoint
    client: Any = None
    in_flight: int = 0
    failures_in_a_row: int = 0
    cool_downs: int = 0
    cooling_until: float = 0.0
    answers: int = 0


class EndpointPool:
    def __init__(self, routes: list[Route], per_endpoint: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.routes = routes
        self.per_endpoint = per_endpoint
        self.clock = clock
        self._changed: asyncio.Condition | None = None  # made on the running loop

    @property
    def capacity(self) -> int:
        """Requests the pool can have in flight at once."""
        return self.per_endpoint * len(self.routes)

    def _pick(self, now: float) -> Route | None:
        open_routes = [r for r in self.routes if r.cooling_until <= now and r.in_flight < self.per_endpoint]
        return min(open_routes, key=lambda r: (r.in_flight, r.answers)) if open_routes else None

    @asynccontextmanager
    async def route(self) -> AsyncIterator[Route]:
        """The endpoint for one attempt, held while it is in flight (waits while every endpoint is busy or cooling)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while (chosen := self._pick(self.clock())) is None:
                wake = min((r.cooling_until for r in self.routes if r.cooling_until > self.clock()), default=None)
                timeout = None if wake is None else max(0.0, wake - self.clock())
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            chosen.in_flight += 1
        try:
            yield chosen
        finally:
            chosen.in_flight -= 1
            async with self._changed:
                self._changed.notify_all()

    def succeeded(self, route: Route) -> None:
        route.failures_in_a_row = 0
        route.cool_downs = 0
        route.answers += 1

    def failed(self, route: Route) -> None:
        """An attempt failed in a way that says the endpoint is unwell; enough in a row start its cool-down."""
        route.failures_in_a_row += 1
        if len(self.routes) > 1 and route.failures_in_a_row >= COOL_DOWN_AFTER:
            pause = min(COOL_DOWN_CAP_S, COOL_DOWN_S * 2 ** route.cool_downs)
            route.cooling_until = self.clock() + pause
            route.cool_downs += 1
            route.failures_in_a_row = 0
            log.warning("teacher endpoint %s failed %d times in a row: no requests go to it for %.0f s (the other "
                        "endpoints carry on)", route.url, COOL_DOWN_AFTER, pause)

    def answers_by_endpoint(self) -> dict[str, int]:
        return {route.url: route.answers for route in self.routes}
