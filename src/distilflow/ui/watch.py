"""The one loop per server that watches the store: open pages are told of a change through server-sent events
and never poll, so the work does not grow with the number of open tabs.

Four times a second it asks SQLite whether anything was committed since it last looked (`PRAGMA data_version` on a
connection it keeps: microseconds), probes the locks of the jobs that run (a job killed with SIGKILL writes nothing,
but its lock frees) and looks at the training log of a job that trains (the loss curve is a file, not a row). Only
when one of these changed does it read the jobs (records.py) and build what the pages are sent, once for every
page that shows it. A change in the store reaches an open page within about a quarter of a second.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

from distilflow.jobs.lock import is_locked
from distilflow.jobs.store import JobRecord, JobStore
from distilflow.ui.detail import live_job
from distilflow.ui.overview import job_row
from distilflow.ui.records import read_jobs
from distilflow.workspace import Workspace

log = logging.getLogger(__name__)
POLL_S = 0.25


class StoreWatcher:
    def __init__(self, workspace: Workspace, poll_s: float = POLL_S) -> None:
        self.workspace, self.poll_s = workspace, poll_s
        self.store = JobStore(workspace.db_path)
        self.version = 0
        self.records: dict[str, JobRecord] = {}
        self._db: sqlite3.Connection | None = None
        self._signature: tuple | None = None
        self._built: dict[str, Any] = {}  # what was built for this version: key -> payload
        self._changed = asyncio.Condition()

    def _signature_now(self) -> tuple:
        if self._db is None:
            self._db = sqlite3.connect(self.workspace.db_path, timeout=30)
        data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        active = [r.name for r in self.records.values() if r.status in ("queued", "running")]
        locks = tuple(is_locked(self.workspace.job(name).lock) for name in active)
        logs = []
        for name in active:
            try:
                logs.append(self.workspace.job(name).train_log.stat().st_mtime_ns)
            except OSError:
                logs.append(None)
        return data_version, tuple(active), locks, tuple(logs)

    def refresh(self) -> bool:
        """Read the jobs again if anything changed; True when it did."""
        signature = self._signature_now()
        if signature == self._signature:
            return False
        self.records = {r.name: r for r in read_jobs(self.store)}
        # The statuses just read decide which locks the next look probes: look again at once with them.
        self._signature = self._signature_now()
        self.version += 1
        self._built = {}
        return True

    async def run(self) -> None:
        while True:
            try:
                if self.refresh():
                    async with self._changed:
                        self._changed.notify_all()
            except Exception as error:  # noqa: BLE001 - a busy store, a half-written file: look again next tick
                log.warning("could not read the job store: %s", error)  # (the one loop must not die: pages wait on it)
            await asyncio.sleep(self.poll_s)

    async def newer_than(self, version: int) -> int:
        """Wait until there is a version after `version`; return it."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > version)
        return self.version

    def _once(self, key: str, build: Any) -> Any:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def jobs_payload(self) -> dict[str, Any]:
        """Every job's line for the jobs page, built once per change."""
        return self._once("jobs", lambda: {"jobs": [job_row(r).to_json() for r in self.records.values()]})

    def job_payload(self, name: str) -> dict[str, Any] | None:
        """One job's live part for its page, built once per change (None: no such job)."""
        record = self.records.get(name)
        if record is None:
            return None
        return self._once(f"job:{name}", lambda: live_job(record, self.workspace.job(name)))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
