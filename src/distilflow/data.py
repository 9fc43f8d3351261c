"""Reading task data (JSONL) with one clear error per bad row, and writing result files safely.

Writers never leave a half-written file behind: whole files go through a temp file + fsync + rename,
and appended rows are flushed and fsynced before they count.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distilflow.errors import DataError
from distilflow.tasks import Example, RowError, Task


def read_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a user's JSONL file; the first bad line raises
    DataError naming the file, the line and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a JSONL file")
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}, line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: is not valid UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def read_examples(path: str | Path, task: Task, split: str, limit: int | None = None) -> list[Example]:
    """Every row of a JSONL file as an Example; the first bad row stops with file, line and reason."""
    examples: list[Example] = []
    for line_no, row in read_json_objects(path):
        if limit is not None and len(examples) >= limit:
            break
        try:
            messages, reference = task.example_from_row(row)
        except RowError as error:
            raise DataError(f"{path}, line {line_no}: {error} (task type {task.name})") from None
        examples.append(Example(id=f"{split}-{line_no}", messages=messages, reference=reference,
                                source_file=str(path), source_line=line_no, fields=row))
    if not examples:
        raise DataError(f"{path}: the file is empty (expected one JSON object per line)")
    return examples


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file that distilflow wrote itself (a torn last line after a crash is skipped)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn write: the process died mid-line; the row was never counted
            if line.strip():
                yield json.loads(line)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows to `path` at once: readers see the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with _atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json_atomic(path: str | Path, value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_file(path) as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_file(path) as handle:
        handle.write(text)


class _atomic_file:
    """Context manager: a temp file in the target folder, fsynced and renamed over the target on success."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.handle = os.fdopen(fd, "w", encoding="utf-8")
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
            self.handle.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
