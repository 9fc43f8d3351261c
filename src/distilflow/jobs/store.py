"""The job store: SQLite (WAL) holding jobs, their stages, progress, metrics and errors."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from distilflow.errors import DistilflowError
from distilflow.jobs.lock import is_locked
from distilflow.jobs.processes import process_start_time
from distilflow.secrets import scrub
from distilflow.workspace import Workspace

# The one list of each name; everything else reads these.
STAGES: tuple[str, ...] = ("prepare", "generate", "train", "evaluate", "report")
JOB_STATUSES = ("queued", "running", "completed", "failed", "canceled")
TERMINAL_STATUSES = ("completed", "failed", "canceled")
# Azure ML's job statuses, read as distilflow's: scripts written for its distillation API compare with these.
AZURE_STATUSES = {"completed": "completed", "failed": "failed", "canceled": "canceled", "cancelled": "canceled",
                  "cancelrequested": "canceled", "running": "running", "finalizing": "running", "queued": "queued",
                  "notstarted": "queued", "starting": "queued", "preparing": "queued", "provisioning": "queued"}


class JobStatus(str):
    """A job's status, spelled distilflow's way ("completed") and equal to Azure ML's spelling of it too:
    `status == "Completed"` and `status in ["Completed", "Failed"]` hold, whatever the case. It hashes as
    distilflow's spelling (sets and dict keys of statuses use that one)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        spelled = other.lower()
        return str.__eq__(self, AZURE_STATUSES.get(spelled, spelled))

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    task_type TEXT NOT NULL,
    spec TEXT NOT NULL,
    inputs_fingerprint TEXT NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    message TEXT,
    metrics TEXT,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (job, stage)
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    label TEXT NOT NULL,
    path TEXT NOT NULL,
    task_type TEXT NOT NULL,
    report TEXT,
    registered_at REAL NOT NULL
);
"""


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid runs (a zombie does not)."""
    return process_start_time(pid) is not None


@dataclass
class StageRecord:
    stage: str
    status: str
    done: int = 0
    total: int | None = None
    message: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def seconds(self) -> float | None:
        """How long the stage's last run took (start to end, whether it completed, failed or was canceled); None
        while it runs or before it ran. A stage resumed after a kill counts from its resumption."""
        if self.started_at is None or self.finished_at is None or self.status in ("pending", "running"):
            return None
        return max(0.0, self.finished_at - self.started_at)

    def elapsed(self, now: float | None = None) -> float | None:
        """`seconds`, or while the stage runs, how long it has run so far (until `now`, default the clock's)."""
        if self.status == "running" and self.started_at is not None:
            return max(0.0, (time.time() if now is None else now) - self.started_at)
        return self.seconds


@dataclass
class RegisteredModel:
    """A model a completed job registered (jobs/registry.py): its name, the job, which of the job's models it is
    (distilled | baseline), where it is (a folder, or a hub id), and the job's report."""

    name: str
    job: str
    label: str
    path: str
    task_type: str
    report: str | None
    registered_at: float


@dataclass
class JobRecord:
    name: str
    status: str
    task_type: str
    spec: dict[str, Any]
    fingerprints: dict[str, str]
    pid: int | None
    pid_start: int | None  # the pid's start time (clock ticks): a reused pid is never taken for the job
    error: str | None
    created_at: float
    updated_at: float
    stages: list[StageRecord] = field(default_factory=list)
    models: list[RegisteredModel] = field(default_factory=list)  # what the job registered when it completed

    @property
    def current_stage(self) -> StageRecord | None:
        for record in self.stages:
            if record.status in ("running", "failed", "canceled"):
                return record
        pending = [s for s in self.stages if s.status != "completed"]
        return pending[0] if pending else None

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.stage == name)

    def stage_seconds(self) -> dict[str, float]:
        """Stage -> how long its last run took, for the stages that ran to an end."""
        return {s.stage: s.seconds for s in self.stages if s.seconds is not None}


class JobStore:
    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(self.db_path.parent)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            if "pid_start" not in columns:  # a workspace from before process start times were kept
                db.execute("ALTER TABLE jobs ADD COLUMN pid_start INTEGER")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    # ----- jobs ---------------------------------------------------------------------------
    def upsert_job(self, name: str, task_type: str, spec: dict[str, Any], fingerprints: dict[str, str]) -> list[str]:
        """Create the job or update its spec. `fingerprints` hash each stage's inputs; the first stage whose
        inputs changed, and every stage after it, goes back to pending. Returns the stages reset."""
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT inputs_fingerprint FROM jobs WHERE name=?", (name,)).fetchone()
            reset: list[str] = []
            if row is None:
                db.execute(
                    "INSERT INTO jobs(name, status, task_type, spec, inputs_fingerprint, created_at, updated_at)"
                    " VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                    (name, task_type, json.dumps(spec), json.dumps(fingerprints), now, now),
                )
                db.executemany("INSERT INTO stages(job, stage) VALUES (?, ?)", [(name, s) for s in STAGES])
            else:
                old = json.loads(row["inputs_fingerprint"] or "{}")
                changed = [i for i, s in enumerate(STAGES) if old.get(s) != fingerprints.get(s)]
                reset = list(STAGES[changed[0]:]) if changed else []
                db.execute(
                    "UPDATE jobs SET task_type=?, spec=?, inputs_fingerprint=?, updated_at=? WHERE name=?",
                    (task_type, json.dumps(spec), json.dumps(fingerprints), now, name),
                )
                db.executemany(
                    "UPDATE stages SET status='pending', done=0, total=NULL, message=NULL, metrics=NULL,"
                    " error=NULL, started_at=NULL, finished_at=NULL WHERE job=? AND stage=?",
                    [(name, s) for s in reset])
            db.execute("COMMIT")
        return reset

    def get(self, name: str) -> JobRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE name=?", (name,)).fetchone()
            if row is None:
                known = [r["name"] for r in db.execute("SELECT name FROM jobs ORDER BY name")]
                hint = f" (jobs here: {', '.join(known)})" if known else " (this workspace has no jobs)"
                raise DistilflowError(f"no job named {name!r} in {self.db_path.parent}{hint}")
            stages = db.execute("SELECT * FROM stages WHERE job=?", (name,)).fetchall()
        order = {s: i for i, s in enumerate(STAGES)}
        return JobRecord(
            name=row["name"], status=JobStatus(self._effective_status(row)), task_type=row["task_type"],
            spec=json.loads(row["spec"]), fingerprints=json.loads(row["inputs_fingerprint"]), pid=row["pid"],
            pid_start=row["pid_start"], error=row["error"], created_at=row["created_at"], updated_at=row["updated_at"],
            stages=sorted((self._stage(s) for s in stages), key=lambda s: order.get(s.stage, 99)),
            models=self.registered_models(job=name),
        )

    def exists(self, name: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM jobs WHERE name=?", (name,)).fetchone() is not None

    def list(self) -> list[JobRecord]:
        with self._connect() as db:
            names = [r["name"] for r in db.execute("SELECT name FROM jobs ORDER BY created_at")]
        return [self.get(n) for n in names]

    def is_running(self, name: str) -> bool:
        """Whether a process holds the job's lock: the only test of "running" (a status column can be stale)."""
        return is_locked(self.workspace.job(name).lock)

    def _effective_status(self, row: sqlite3.Row) -> str:
        running = self.is_running(row["name"])
        # A job marked running whose lock is free was killed (kill -9, power loss): report it as failed.
        if row["status"] == "running" and not running:
            return "failed"
        if running and row["status"] in ("queued", "canceled"):
            return "running"  # started and not yet claimed, or stopping after a cancel: it still runs
        return row["status"]

    @staticmethod
    def _stage(row: sqlite3.Row) -> StageRecord:
        return StageRecord(
            stage=row["stage"], status=row["status"], done=row["done"], total=row["total"],
            message=row["message"], metrics=json.loads(row["metrics"]) if row["metrics"] else {},
            error=row["error"], started_at=row["started_at"], finished_at=row["finished_at"],
        )

    def set_job_status(self, name: str, status: str, *, error: str | None = None) -> None:
        assert status in JOB_STATUSES, status
        with self._connect() as db:
            db.execute("UPDATE jobs SET status=?, error=?, updated_at=? WHERE name=?",
                       (status, None if error is None else scrub(error), time.time(), name))

    def set_process(self, name: str, pid: int) -> None:
        """Record the process that runs the job, with its start time (to recognise the pid later)."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET pid=?, pid_start=?, updated_at=? WHERE name=?",
                       (pid, process_start_time(pid), time.time(), name))

    def raw_status(self, name: str) -> str:
        with self._connect() as db:
            row = db.execute("SELECT status FROM jobs WHERE name=?", (name,)).fetchone()
        return row["status"] if row else "missing"

    def claim(self, name: str, pid: int) -> None:
        """Mark the job running in this process (which holds its lock), and its interrupted stages pending again."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE jobs SET status='running', error=NULL, pid=?, pid_start=?, updated_at=? WHERE name=?",
                       (pid, process_start_time(pid), time.time(), name))
            db.execute("UPDATE stages SET status='pending' WHERE job=? AND status IN ('running','canceled')", (name,))
            db.execute("COMMIT")

    # ----- stages -------------------------------------------------------------------------
    def start_stage(self, name: str, stage: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE stages SET status='running', done=0, total=NULL, message=NULL, error=NULL, started_at=?,"
                " finished_at=NULL WHERE job=? AND stage=?", (time.time(), name, stage))

    def update_progress(self, name: str, stage: str, done: int, total: int | None, message: str | None = None) -> None:
        with self._connect() as db:
            db.execute("UPDATE stages SET done=?, total=?, message=? WHERE job=? AND stage=?",
                       (done, total, None if message is None else scrub(message), name, stage))

    def finish_stage(self, name: str, stage: str, status: str, *, metrics: dict[str, Any] | None = None,
                     error: str | None = None) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE stages SET status=?, metrics=COALESCE(?, metrics), error=?, finished_at=? WHERE job=? AND stage=?",
                (status, scrub(json.dumps(metrics)) if metrics is not None else None,
                 None if error is None else scrub(error), time.time(), name, stage))

    def reset_stages(self, name: str, stages: list[str]) -> None:
        with self._connect() as db:
            db.executemany(
                "UPDATE stages SET status='pending', done=0, total=NULL, message=NULL, error=NULL, started_at=NULL,"
                " finished_at=NULL WHERE job=? AND stage=?", [(name, s) for s in stages])

    # ----- registered models ---------------------------------------------------------------------
    def register_models(self, models: list[RegisteredModel]) -> None:
        """Register (or re-register) models by name; a name another job registered now names this job's model."""
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO models(name, job, label, path, task_type, report, registered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(m.name, m.job, m.label, m.path, m.task_type, m.report, m.registered_at) for m in models])

    def registered_models(self, job: str | None = None) -> list[RegisteredModel]:
        """Every registered model (or one job's), oldest first."""
        where, args = ("WHERE job=?", (job,)) if job is not None else ("", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM models {where} ORDER BY registered_at, name", args).fetchall()
        return [RegisteredModel(**dict(row)) for row in rows]
