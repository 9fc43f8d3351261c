"""The processes of a job: which pid runs it (checked against its start time, so a reused pid is never taken for
the job), and stopping them: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

GRACE_S = 10.0  # after SIGTERM, how long a job may take to stop (save state, end workers) before SIGKILL


def process_start_time(pid: int | None) -> int | None:
    """Clock ticks since boot at which `pid` started (field 22 of /proc/PID/stat); None if there is no such process."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # exited, not yet reaped: not running any more
        return None
    return int(fields[19])


def same_process(pid: int | None, start_time: int | None) -> bool:
    """Whether `pid` is alive and is the process that started at `start_time` (not a later one reusing the pid)."""
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def signal_job(pid: int, start_time: int | None, sig: int) -> None:
    """Send `sig` to the job's process and, when it leads its own process group (background jobs do), to its
    workers too. Nothing is sent when the pid now belongs to another process."""
    if not same_process(pid, start_time) or pid == os.getpid():
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_job(pid: int | None, start_time: int | None, stopped: Callable[[], bool], grace_s: float = GRACE_S) -> bool:
    """SIGTERM the job, wait until `stopped()`, SIGKILL after `grace_s`, wait again. True when it stopped."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if pid:
            signal_job(pid, start_time, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if stopped():
                return True
            time.sleep(0.1)
    return stopped()
