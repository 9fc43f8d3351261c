"""Bytes per token of stored teacher top-K log-probs: the teacher cache's compact form (teachers/logit_pack.py)
against the compressed npz form before it, on disk in a real SQLite cache; the memory-mapped training store
(train/logit_store.py); and DistillKit's published ~300 bytes per token.

Log-probs are those of a softmax over a 49,152-token vocabulary with Gaussian logits (sd 3), ids the top-K of
that draw (as unordered as real ids); answers of 64 tokens. API answers store strings: a word list stands in.

    python bench/logit_store.py --answers 400
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

from distilflow.teachers.base import TeacherAnswer, TopLogprobs
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.logit_pack import pack, pack_npz
from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS
from distilflow.train.logit_store import write_store

VOCAB, TOKENS, DISTILLKIT = 49_152, 64, 300.0
WORDS = [f" w{i}" for i in range(3_000)]


def _answer(rng: np.random.Generator, k: int, strings: bool) -> TopLogprobs:
    logits = rng.normal(0, 3, size=(TOKENS, VOCAB)).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - \
        logits.max(1, keepdims=True)
    ids = np.argpartition(-log_probs, k, axis=1)[:, :k]
    values = np.take_along_axis(log_probs, ids, 1)
    order = np.argsort(-values, axis=1)
    ids, values = np.take_along_axis(ids, order, 1), np.take_along_axis(values, order, 1)
    if strings:
        return TopLogprobs(logprobs=values.tolist(), tokens=[[WORDS[i % len(WORDS)] for i in row] for row in ids])
    return TopLogprobs(logprobs=values.tolist(), token_ids=ids.tolist())


def _sqlite_bytes(folder: Path, answers: list[TopLogprobs], packer) -> int:
    """Size of a teacher cache holding these answers' log-probs in the given form (VACUUMed; records excluded)."""
    path = folder / f"{packer.__name__}-{len(list(folder.iterdir()))}.sqlite"
    with TeacherCache(path) as cache:
        cache.put_many([TeacherAnswer(key=str(i), texts=[""], top_logprobs=[a]) for i, a in enumerate(answers)])
        cache._db.executemany("UPDATE answers SET top_logprobs=? WHERE key=?",
                              [(packer([a]), str(i)) for i, a in enumerate(answers)])
    db = sqlite3.connect(path)
    db.execute("VACUUM")
    db.close()
    return path.stat().st_size


def measure(k: int, n: int, strings: bool, folder: Path) -> dict[str, float]:
    rng = np.random.default_rng(k)
    answers = [_answer(rng, k, strings) for _ in range(n)]
    tokens = n * TOKENS
    empty = _sqlite_bytes(folder, [], pack)  # the cache with no answer: schema pages
    out = {"npz blob": sum(len(pack_npz([a])) for a in answers) / tokens,
           "compact blob": sum(len(pack([a])) for a in answers) / tokens,
           "npz cache on disk": (_sqlite_bytes(folder, answers, pack_npz) - empty) / tokens,
           "compact cache on disk": (_sqlite_bytes(folder, answers, pack) - empty) / tokens}
    if not strings:
        rows = [{TOPK_IDS: a.token_ids, TOPK_LOGPROBS: a.logprobs} for a in answers]
        store = write_store(folder / f"store-{k}", [rows])
        out["training store"] = store.records.nbytes / tokens
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=400)
    args = parser.parse_args()
    print("| form | K | bytes/token | bytes/kept logit | vs DistillKit ~300 B/token |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for strings in (False, True):
            for k in (8, 20):
                for name, value in measure(k, args.answers, strings, Path(tmp)).items():
                    label = f"{name} ({'API strings' if strings else 'ids'})"
                    print(f"| {label} | {k} | {value:.1f} | {value / k:.2f} | {value / DISTILLKIT:.3f}x |")


if __name__ == "__main__":
    main()
