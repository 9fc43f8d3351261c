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
_POLL_S = 0.25  # how often the waiting consumer checks should_stop()
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
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[], Awaitable[Any]] | None = None,
    on_finish: Callable[[], Awaitable[Any]] | None = None,
) -> Iterator[TeacherResult]:
    """Yield `ask(request)` for every request as each completes (any order).

    `ask` runs on the background loop and should turn expected errors into TeacherFailure; an exception
    it raises stops everything and is re-raised here. `on_start`/`on_finish` run on the loop (to open and
    close clients that must live on it).
    """
    results: queue.Queue[Any] = queue.Queue()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(max_concurrency)
        state["loop"], state["stopping"] = loop, asyncio.Event()
        state["main"] = asyncio.current_task()
        ready.set()

        def release() -> None:
            try:
                loop.call_soon_threadsafe(slots.release)
            except RuntimeError:  # every request is done and the loop has closed: nothing waits for a slot
                pass

        async def one(request: TeacherRequest) -> None:
            try:
                result = await ask(request)
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # noqa: BLE001 - handed to the consumer thread
                results.put(_Raised(error))
                state["stopping"].set()
                return
            results.put((result, release))

        tasks: set[asyncio.Task[None]] = set()
        try:
            if on_start is not None:
                await on_start()
            ramp_step = min(_RAMP_STEP_S, _RAMP_TOTAL_S / max_concurrency)
            for index, request in enumerate(requests):
                await slots.acquire()  # released by the consumer once it is done with the result
                if state["stopping"].is_set():
                    break
                if 0 < index < max_concurrency:
                    await asyncio.sleep(ramp_step)
                task = asyncio.create_task(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if on_finish is not None:
                await on_finish()

    def run() -> None:
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as error:  # noqa: BLE001
            results.put(_Raised(error))
        finally:
            ready.set()
            results.put(_DONE)

    thread = threading.Thread(target=run, name="teacher-requests", daemon=True)
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(previous_interval, _SWITCH_INTERVAL_S))
    thread.start()
    ready.wait()
    try:
        while True:
            try:
                item = results.get(timeout=_POLL_S)
            except queue.Empty:
                if should_stop():
                    return
                continue
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            result, release = item
            yield result
            # The consumer is back for more: the previous result is durable, its slot may go to a new request.
            release()
            if should_stop():
                return
    finally:
        _shutdown(state, thread)
        sys.setswitchinterval(previous_interval)


def _shutdown(state: dict[str, Any], thread: threading.Thread) -> None:
    loop: asyncio.AbstractEventLoop | None = state.get("loop")
    if loop is not None and thread.is_alive():
        def cancel() -> None:
            state["stopping"].set()
            main = state.get("main")
            if main is not None:
                main.cancel()

        try:
            loop.call_soon_threadsafe(cancel)
        except RuntimeError:  # the loop has already closed
            pass
    thread.join(30)
