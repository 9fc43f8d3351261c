"""Errors a user can act on. The CLI prints these as one sentence, without a traceback.

Besides distilflow's own errors, the file-system errors a user causes and can fix (a folder this user may not
write, a model file it may not read, a file where a folder belongs, a full disk) are turned into one sentence
that names the path and what to do (`user_message`), so they never reach the terminal as "internal error".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class DistilflowError(Exception):
    """A problem with the user's input or environment, stated in one clear sentence."""


class SpecError(DistilflowError):
    """The job spec is invalid (unknown key, wrong type, missing file)."""


class DataError(DistilflowError):
    """A data file is unreadable or holds a bad row; the message names the file and line."""


class StageError(DistilflowError):
    """A stage cannot go on (no usable teacher data, too many failed requests, ...)."""


class JobCanceled(DistilflowError):
    """The job was canceled by the user while it ran."""


def user_message(error: BaseException) -> str | None:
    """The one sentence a user is shown for `error`; None for an error that is a bug (reported as internal)."""
    if isinstance(error, DistilflowError):
        return str(error)
    if isinstance(error, OSError):
        return os_error_message(error)
    return None


def os_error_message(error: OSError) -> str | None:
    """A file-system error the user can fix, as one sentence naming the path and the fix; None for any other."""
    if not error.filename:
        return None
    path = Path(os.fsdecode(error.filename))
    if error.errno in (errno.EACCES, errno.EPERM):
        return permission_message(path)
    if error.errno in (errno.ENOTDIR, errno.EEXIST) and (in_the_way := file_in_the_way(path)) is not None:
        return (f"{in_the_way} is a file, but a folder is needed there (for {path}); move the file away or "
                f"choose another path")
    if error.errno == errno.EISDIR:
        return f"{path} is a folder, but a file is needed there; rename the folder or choose another path"
    if error.errno == errno.ENOSPC:
        return (f"no space left on the disk that holds {path}; free some space and run the same command again "
                f"(finished work is kept)")
    if error.errno == errno.EROFS:
        return f"{path} is on a read-only file system; choose a folder on a writable disk"
    return None


def file_in_the_way(path: Path) -> Path | None:
    """The file (not a folder) at `path` or at the nearest of its parents that exists; None when that is a folder
    (then `path` is, or can be created as, a folder)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return None if os.path.isdir(candidate) else candidate
    return None


def permission_message(path: Path) -> str:
    """Why this user may not use `path` (a folder on the way it may not enter, the file it may not read, the folder
    it may not write in) and the command that allows it."""
    closed = _closed_folder(path)
    if closed is not None:
        on_the_way = f" (on the way to {path})" if closed != path else ""
        return (f"permission denied: user {_user()} may not enter the folder {closed}{on_the_way}; "
                f"{_grant(closed, 'u+rx', 'accessible')} or choose another path")
    if os.path.lexists(path) and not os.access(path, os.R_OK):
        return f"permission denied: user {_user()} may not read {path}; {_grant(path, 'u+r', 'readable')}"
    target = path if os.path.lexists(path) else path.parent
    if os.access(target, os.W_OK):  # not a plain mode problem (an ACL, a security module, an immutable file)
        return f"permission denied on {path}; check the permissions of {path} and of its folder"
    # A file in a read-only folder: the folder is what to fix (the next file would fail too), all of it at once.
    while target.parent != target and not os.access(target.parent, os.W_OK) and _owned(target.parent):
        target = target.parent
    what = f"in the folder {target}" if target.is_dir() else str(target)
    flags = "-R u+w" if target.is_dir() else "u+w"
    return (f"permission denied: user {_user()} may not write {what}; {_grant(target, flags, 'writable')} or "
            f"choose another folder")


def unreadable_part(path: Path) -> Path | None:
    """What keeps this user from reading `path`: a folder on the way it may not enter, `path` itself, or (a folder
    of files, like a model's) the first file or folder in it that it may not read; None when all can be read."""
    closed = _closed_folder(path)
    if closed is not None or not os.path.lexists(path):
        return closed
    if not os.access(path, os.R_OK):
        return path
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if not os.access(child, os.R_OK) or (child.is_dir() and not os.access(child, os.X_OK)):
                return child
    return None


def _closed_folder(path: Path) -> Path | None:
    """The first folder, from the top down to `path` itself, that this user may not enter (no x permission)."""
    for folder in (*reversed(path.parents), path):
        if not os.path.lexists(folder):
            return None
        if os.path.isdir(folder) and not os.access(folder, os.X_OK):
            return folder
    return None


def _owned(path: Path) -> bool:
    try:
        return path.lstat().st_uid == os.geteuid()
    except OSError:
        return False


def _grant(path: Path, mode: str, adjective: str) -> str:
    """What to do to get `mode` (chmod's, like u+r) on `path`: chmod it when this user owns it, else ask its owner."""
    if _owned(path):
        return f"make it {adjective} (chmod {mode} {path})"
    try:
        owner = f" ({_user(path.lstat().st_uid)})"
    except OSError:
        owner = ""
    return f"ask its owner{owner} to make it {adjective} for you"


def _user(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)
