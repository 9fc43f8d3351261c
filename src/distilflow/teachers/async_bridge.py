"""Answering requests concurrently on an asyncio loop in a background thread, for a synchronous consumer.

The resume guarantee lives here. A request holds one of `max_concurrency` slots from before it is sent
until the consumer has *finished with its result*, which the consumer signals by asking for the next
result (generate.py commits each answer to the SQLite cache before it does). So at any instant at most
`max_concurrency` requests are in flight or answered-but-not-yet-durable, and after `kill -9` a re-run
pays again for at most that many.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from distilflow.teachers.base import TeacherRequest, TeacherResult

_DONE = object()
# Two busy threads hand results back and forth; with Python's default 5 ms GIL switch interval each hand-off
# can wait that long, which adds to every slot's hold time (measured: ~3% fewer answers/s at C=64, L=0.2 s).
_SWITCH_INTERVAL_S = 0.001
# The first max_concurrency requests start a little apart. Started together, they come back together, and so
# do their successors, for the whole run: each wave of answers then queues for the CPU (measured at C=64 against
# a fixed-latency server: ~6 ms more per request than with a 2 ms ramp). The ramp costs at most 0.25 s once.
_RAMP_STEP_S = 0.002
_RAMP_TOTAL_S = 0.25


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def answer_concurrently(
    requests: Sequence[TeacherRequest],
    ask: Callable[[TeacherRequest], Awaitable[TeacherResult]],
    max_concurrency: int,
    on_start: Callable[[], Awaitable[Any]] | None = None,
    on_finish: Callable[[], Awaitable[Any]] | None = None,
) -> Iterator[TeacherResult]:
    """Yield `ask(request)` for every request as each completes (any order).

    `ask` runs on the background loop and should turn expected errors into TeacherFailure; an exception
    it raises stops everything and is re-raised here. `on_start`/`on_finish` run on the loop (to open and
    close clients that must live on it).
    """
    bridge = _Bridge(requests, ask, max_concurrency, on_start, on_finish)
    thread = threading.Thread(target=bridge.run, name="teacher-requests", daemon=True)
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(previous_interval, _SWITCH_INTERVAL_S))
    thread.start()
    bridge.ready.wait()
    try:
        while True:
            item = bridge.results.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            result, release = item
            yield result
            # The consumer is back for more: the previous result is durable, its slot may go to a new request.
            release()
    finally:
        bridge.shutdown(thread)
        sys.setswitchinterval(previous_interval)


class _Bridge:
    """The background side: an event loop that keeps up to `max_concurrency` requests in flight and hands each
    result, with the function that frees its slot, to the consumer through a thread-safe queue."""

    def __init__(self, requests: Sequence[TeacherRequest], ask: Callable[[TeacherRequest], Awaitable[TeacherResult]],
                 max_concurrency: int, on_start: Callable[[], Awaitable[Any]] | None,
                 on_finish: Callable[[], Awaitable[Any]] | None) -> None:
        self.requests, self.ask, self.max_concurrency = requests, ask, max_concurrency
        self.on_start, self.on_finish = on_start, on_finish
        self.results: queue.Queue[Any] = queue.Queue()
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.main_task: asyncio.Task[Any] | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except BaseException as error:  # noqa: BLE001
            self.results.put(_Raised(error))
        finally:
            self.ready.set()
            self.results.put(_DONE)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping, self.main_task = asyncio.Event(), asyncio.current_task()
        slots = asyncio.Semaphore(self.max_concurrency)
        self.ready.set()
        tasks: set[asyncio.Task[None]] = set()
        try:
            if self.on_start is not None:
                await self.on_start()
            ramp_step = min(_RAMP_STEP_S, _RAMP_TOTAL_S / self.max_concurrency)
            for index, request in enumerate(self.requests):
                await slots.acquire()  # released by the consumer once it is done with the result
                if self.stopping.is_set():
                    break
                if 0 < index < self.max_concurrency:
                    await asyncio.sleep(ramp_step)
                task = asyncio.create_task(self._one(request, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self.on_finish is not None:
                await self.on_finish()

    async def _one(self, request: TeacherRequest, slots: asyncio.Semaphore) -> None:
        try:
            result = await self.ask(request)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - handed to the consumer thread
            self.results.put(_Raised(error))
            assert self.stopping is not None
            self.stopping.set()
            return
        self.results.put((result, lambda: self._release(slots)))

    def _release(self, slots: asyncio.Semaphore) -> None:
        try:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(slots.release)
        except RuntimeError:  # every request is done and the loop has closed: nothing waits for a slot
            pass

    def shutdown(self, thread: threading.Thread) -> None:
        """Cancel what is still in flight (the consumer stopped early or failed) and wait for the loop to end."""
        if self.loop is not None and thread.is_alive():
            def cancel() -> None:
                assert self.stopping is not None
                self.stopping.set()
                if self.main_task is not None:
                    self.main_task.cancel()

            try:
                self.loop.call_soon_threadsafe(cancel)
            except RuntimeError:  # the loop has already closed
                pass
        thread.join(30)
