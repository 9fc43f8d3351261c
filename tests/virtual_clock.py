"""A virtual clock for the remote teacher's pacing and retry waits (teachers/limits.py `Clock`): its `sleep` records
how long was asked for and advances the time at once. A test then checks what the code waited, exactly, without
waiting on the real clock (which a busy 2-core machine makes unreliable).

    teacher = load_teacher(spec); teacher.clock = VirtualClock(); ...; teacher.clock.sleeps, teacher.clock.now
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from distilflow.teachers.limits import Clock


class VirtualClock(Clock):
    def __init__(self, on_sleep: Callable[["VirtualClock", float], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep  # called at the start of each wait (the time is still the wait's start)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(self, seconds)
        # A real sleep always lets some time pass; so does this one (a wait too short to change a float would
        # otherwise leave the clock where it was).
        self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))
        await asyncio.sleep(0)  # still a point where the other requests in flight go on
