"""Teacher answers keyed by request fingerprint, in SQLite (WAL).

An answer counts only once its transaction has committed, so after `kill -9` at any moment a re-run asks
again only for requests without a stored answer: nothing is paid twice except requests in flight.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distilflow.teachers import logit_pack
from distilflow.teachers.base import TeacherAnswer, TopLogprobs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    top_logprobs BLOB,
    created_at REAL NOT NULL
);
"""


def pack_top_logprobs(samples: list[TopLogprobs]) -> bytes:
    """Every sample's top-K in the compact stored form (logit_pack.py: 6 bytes per kept logit)."""
    return logit_pack.pack(samples)


def unpack_top_logprobs(blob: bytes) -> list[TopLogprobs]:
    """Either stored form: the compact one, or the compressed npz of earlier versions (caches are kept)."""
    return logit_pack.unpack(blob)


class TeacherCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed answer survives the process being killed at any moment.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def known_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in self._db.execute(f"SELECT key FROM answers WHERE key IN ({marks})", chunk))
        return found

    def put_many(self, answers: list[TeacherAnswer]) -> None:
        """Store answers in one transaction (durable when this returns)."""
        rows = [(a.key, json.dumps(a.to_record(), ensure_ascii=False),
                 pack_top_logprobs(a.top_logprobs) if a.top_logprobs else None, time.time()) for a in answers]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO answers(key, record, top_logprobs, created_at) VALUES (?,?,?,?)",
                                 rows)
            self._db.execute("COMMIT")

    def get(self, key: str, with_logprobs: bool = False) -> TeacherAnswer | None:
        with self._lock:
            row = self._db.execute("SELECT record, top_logprobs FROM answers WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        record = json.loads(row[0])
        top = unpack_top_logprobs(row[1]) if with_logprobs and row[1] is not None else None
        return TeacherAnswer(key=key, texts=record["texts"], prompt_tokens=record.get("prompt_tokens", 0),
                             completion_tokens=record.get("completion_tokens", 0),
                             finish_reasons=record.get("finish_reasons", []), top_logprobs=top)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
