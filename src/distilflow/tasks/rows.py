"""A user's task data file -> Examples, with one clear error (file, line, what is wrong) for the first bad row."""

from __future__ import annotations

from pathlib import Path

from distilflow.errors import DataError
from distilflow.io import read_data_rows
from distilflow.tasks.base import Example, RowError, Task


def read_examples(path: str | Path, task: Task, split: str, limit: int | None = None) -> list[Example]:
    """Every row of a JSONL (or CSV) file as an Example; the first bad row stops with file, line and reason."""
    examples: list[Example] = []
    for line_no, row in read_data_rows(path):
        if limit is not None and len(examples) >= limit:
            break
        try:
            messages, reference = task.example_from_row(row)
        except RowError as error:
            raise DataError(f"{path}, line {line_no}: {error} (task type {task.name})") from None
        examples.append(Example(id=f"{split}-{line_no}", messages=messages, reference=reference,
                                source_file=str(path), source_line=line_no,
                                fields={k: v for k, v in row.items() if isinstance(v, (str, int, float, bool))}))
    if not examples:
        raise DataError(f"{path}: the file is empty (expected one JSON object per line, or a CSV file with a header)")
    return examples
