"""Per-stage progress: a rich progress bar on the terminal, mirrored (throttled) into the job store,
which is also where a cancel request is noticed."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from distilflow.errors import JobCanceled

if TYPE_CHECKING:
    from distilflow.jobs.store import JobStore

_WRITE_EVERY_S = 0.5
_LOG_EVERY_S = 15.0  # when stderr is not a terminal (a log file), a plain progress line this often


class _RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.2f}/s" if speed else "-/s", style="progress.data.speed")


def stderr_console() -> Console:
    return Console(file=sys.stderr)


class StageProgress:
    """Use as a context manager: `with ctx.progress("generate", total) as p: p.advance(); p.note("...")`."""

    def __init__(self, store: "JobStore | None", job: str, stage: str, total: int | None, description: str) -> None:
        self.store, self.job, self.stage = store, job, stage
        self.total, self.done, self.message = total, 0, ""
        self._last_write = 0.0
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"), console=stderr_console(), transient=False,
        )
        self._task = self._bar.add_task(description, total=total, note="")
        self._description = description
        self._plain = not self._bar.console.is_terminal
        self._last_log = time.monotonic()

    def __enter__(self) -> "StageProgress":
        self._bar.start()
        self._write(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self._write(force=True)
        self._bar.stop()

    def set_total(self, total: int | None) -> None:
        self.total = total
        self._bar.update(self._task, total=total)
        self._write(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._bar.update(self._task, advance=n)
        self._write()

    def update(self, done: int) -> None:
        self.done = done
        self._bar.update(self._task, completed=done)
        self._write()

    def note(self, message: str) -> None:
        """Short live detail shown after the bar and in `jobs show` (tokens, loss, cost, errors)."""
        self.message = message
        self._bar.update(self._task, note=message)
        self._write()

    def check_canceled(self) -> None:
        if self.store is not None and self.store.raw_status(self.job) == "canceled":
            raise JobCanceled(f"job {self.job!r} was canceled")

    def _log_plain(self, now: float) -> None:
        """A live bar is invisible in a log file: write a progress line there now and then instead."""
        if not self._plain or now - self._last_log < _LOG_EVERY_S:
            return
        self._last_log = now
        task = self._bar.tasks[0]
        total = f"/{self.total}" if self.total else ""
        rate = f", {task.speed:.2f}/s" if task.speed else ""
        eta = f", ETA {task.time_remaining:.0f} s" if task.time_remaining else ""
        note = f"  {self.message}" if self.message else ""
        self._bar.console.print(f"{self._description}: {self.done}{total}{rate}{eta}{note}", highlight=False)

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        self._log_plain(now)
        if self.store is None or (not force and now - self._last_write < _WRITE_EVERY_S):
            return
        self._last_write = now
        self.store.update_progress(self.job, self.stage, self.done, self.total, self.message or None)
        self.check_canceled()
