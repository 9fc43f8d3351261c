"""Reading JSONL files, and writing result files and folders so that a kill never leaves half of one.

Whole files go through a temp file + fsync + rename; folders are written under a staging name beside the
target and renamed over it. Readers therefore see the old version or the complete new one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distilflow.errors import DataError

STAGING_PREFIX = ".staging-"  # folders being written; stale ones (a kill mid-write) are removed by remove_stale_staging


def _open_user_file(path: Path, what: str) -> Any:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected {what}")
    try:
        return path.open("rb")
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None


def read_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a user's JSONL file; the first bad line raises
    DataError naming the file, the line and what is wrong. A UTF-8 byte order mark (Excel, Windows tools) is
    skipped; a JSON array or one object spread over several lines is named as such (JSONL has one object a line)."""
    path = Path(path)
    with _open_user_file(path, "a JSONL file") as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}, line {line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: is not valid UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: {_json_line_problem(line, error, path.name)}") from None
            if isinstance(row, list) and row and all(isinstance(item, dict) for item in row):
                raise DataError(f"{where}: this file is a JSON array; JSONL has one object per line "
                                f"(convert it with `jq -c '.[]' {path.name}`)")
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def _json_line_problem(line: str, error: json.JSONDecodeError, name: str) -> str:
    """What is wrong with a line that is not JSON, saying so when the file is pretty-printed JSON."""
    start = line.strip()
    if start == "[" or (start.startswith("[") and start[1:].lstrip()[:1] in ("{", "")):
        return f"this file is a JSON array; JSONL has one object per line (convert it with `jq -c '.[]' {name}`)"
    if start == "{":
        return "this file holds JSON spread over several lines; JSONL has one whole object per line"
    return f"invalid JSON ({error.msg} at column {error.colno})"


def read_csv_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each data row of a CSV file with a header naming the fields (as Banking77 ships:
    `text,category`); empty cells are left out (an unlabelled row), a UTF-8 byte order mark is skipped."""
    path = Path(path)
    with _open_user_file(path, "a CSV file") as handle:
        try:
            text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            header = next(reader, None)
            if not header or not any(name.strip() for name in header):
                raise DataError(f"{path}, line 1: a CSV file needs a header line naming its fields (e.g. text,label)")
            names = [name.strip() for name in header]
            for fields in reader:
                line_no = reader.line_num
                if not any(cell.strip() for cell in fields):
                    continue
                if len(fields) > len(names):
                    raise DataError(f"{path}, line {line_no}: {len(fields)} cells but the header names "
                                    f"{len(names)} fields ({', '.join(names)}); quote cells that hold a comma")
                yield line_no, {name: cell for name, cell in zip(names, fields) if cell != ""}
        except UnicodeDecodeError:
            raise DataError(f"{path}: is not valid UTF-8 text (save it as CSV UTF-8)") from None
        except csv.Error as error:
            raise DataError(f"{path}: not a readable CSV file ({error})") from None


def read_data_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """A user's data file row by row: CSV with a header for `.csv` files, JSONL for any other."""
    if Path(path).suffix.lower() == ".csv":
        return read_csv_rows(path)
    return read_json_objects(path)


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


def read_json(path: str | Path, default: Any = None) -> Any:
    """A JSON file distilflow wrote, or `default` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows to `path` at once: readers see the old file or the complete new one."""
    count = 0
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json_atomic(path: str | Path, value: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Any]:
    """A text handle on a temp file in the target's folder, fsynced and renamed over the target on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """A staging folder beside `target`; on success it replaces `target` (renames are atomic on one file system),
    on error it is removed. `with atomic_folder(final) as staging: model.save_pretrained(staging)`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = target.with_name(f"{STAGING_PREFIX}{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Remove staging folders and temp files a killed process left in `folder` (call it only while no other
    process of this job can be writing: under the job lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if path.name.startswith(STAGING_PREFIX) or (path.name.startswith(".") and path.name.endswith(".tmp")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
