"""One process per job: an OS file lock in the job's folder, held by the process that runs the job for as long as
it runs. The operating system drops it when that process exits, `kill -9` and power loss included, so "is the job
running?" never depends on a status column or on a pid that may have been reused.

Written with fcntl.flock (no library needed): the lock belongs to one open file description. A process that
launches a job in the background takes the lock, writes what the job needs, then hands the same descriptor to the
child (pass_fds + DISTILFLOW_LOCK_FD), so no other run can slip in between.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

LOCK_FD_ENV = "DISTILFLOW_LOCK_FD"  # set in a background job's environment: it already holds its job's lock
_PROBE_RETRY_S = 1.0  # a status probe holds the lock for microseconds: a run that meets one tries again this long


class JobLock:
    """`lock = JobLock(path); lock.acquire()` -> True when this process now holds the job; False when another does."""

    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def inherited(cls, path: Path) -> "JobLock | None":
        """The lock a launching process handed to this one, if it did (and it is this job's lock file)."""
        value = os.environ.pop(LOCK_FD_ENV, None)
        if value is None or not value.isdigit():
            return None
        fd = int(value)
        try:
            if os.fstat(fd).st_ino != path.stat().st_ino:
                return None
        except OSError:
            return None
        return cls(path, fd)

    def acquire(self) -> bool:
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _PROBE_RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
                continue
            self.fd = fd
            return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor of the description drops the lock
            self.fd = None


def is_locked(path: Path) -> bool:
    """Whether some process holds the job's lock (runs it). Probes with a shared lock, released at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: the job never ran here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
