"""Teacher targets of the training rows on disk, memory-mapped, read batch by batch (sparse_kd, kd across
tokenizers): the rows handed to the Trainer keep only their tokens and an index into this store.

Why: held in the Trainer's dataset (Arrow int64 + double) a kept logit costs 16 bytes of memory, for every row
at once, after the Python lists it was built from (about 60 bytes: two 8-byte list slots and their objects);
here it is one packed record of 6 bytes (uint32 student id, float16 log-prob) and the operating system pages in
only the rows a batch reads (bench/logit_store.py).

Files, in one folder per process (each rank of a distributed launch builds its rows and writes its own store):
  records.bin   [("id", <u4), ("logprob", <f2)] per kept logit (2**32 - 1: no token)
  unmatched.bin float16: a row's teacher probabilities with no student token (ULD), per position
  index.npy     int64 per row: record start, positions, K, unmatched start, U
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from distilflow.train.distill_trainer import (
    TARGET_ROW,
    TOPK_IDS,
    TOPK_LOGPROBS,
    UNMATCHED,
)

RECORD = np.dtype([("id", "<u4"), ("logprob", "<f2")])  # packed: 6 bytes
_NONE = 2**32 - 1


def store_folder(root: Path) -> Path:
    return root / f"rank-{os.environ.get('RANK', '0')}"


def write_store(root: Path, splits: list[list[dict[str, Any]]]) -> TargetStore:
    """Moves the targets of every row of `splits` into the store at `root` (replaced); each row keeps TARGET_ROW."""
    folder = store_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    index: list[list[int]] = []
    records = unmatched = 0
    with open(folder / "records.bin", "wb") as rec_file, open(folder / "unmatched.bin", "wb") as rest_file:
        for rows in splits:
            for row in rows:
                ids, logprobs, rest = row.pop(TOPK_IDS, []), row.pop(TOPK_LOGPROBS, []), row.pop(UNMATCHED, [])
                if not ids:
                    row[TARGET_ROW] = -1
                    continue
                block = np.empty((len(ids), len(ids[0])), dtype=RECORD)
                raw = np.asarray(ids, dtype=np.int64)
                block["id"] = np.where(raw < 0, _NONE, raw)
                block["logprob"] = np.asarray(logprobs, dtype=np.float16)
                rec_file.write(block.tobytes())
                width = len(rest[0]) if rest else 0
                if width:
                    rest_file.write(np.asarray(rest, dtype="<f2").tobytes())
                row[TARGET_ROW] = len(index)
                index.append([records, block.shape[0], block.shape[1], unmatched, width])
                records += block.size
                unmatched += len(rest) * width
    np.save(folder / "index.npy", np.asarray(index, dtype=np.int64).reshape(-1, 5))
    return TargetStore(root)


class TargetStore:
    """Reads one row's targets at a time from the memory-mapped files (nothing is loaded whole)."""

    def __init__(self, root: Path) -> None:
        folder = store_folder(root)
        self.index = np.load(folder / "index.npy")
        self.records = _memmap(folder / "records.bin", RECORD)
        self.unmatched_values = _memmap(folder / "unmatched.bin", np.dtype("<f2"))

    def bytes_per_kept_logit(self) -> float:
        kept = int((self.index[:, 1] * self.index[:, 2]).sum()) if len(self.index) else 0
        return self.records.nbytes / kept if kept else 0.0

    def targets(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(ids [n, K] int64 with -1 for none, log-probs [n, K] float32, unmatched [n, U] float32 or None)."""
        start, n, k, rest_start, width = (int(v) for v in self.index[row])
        block = self.records[start:start + n * k].reshape(n, k)
        ids = block["id"].astype(np.int64)
        ids[ids == _NONE] = -1
        rest = None
        if width:
            rest = np.asarray(self.unmatched_values[rest_start:rest_start + n * width], dtype=np.float32)
            rest = rest.reshape(n, width)
        return ids, block["logprob"].astype(np.float32), rest


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
