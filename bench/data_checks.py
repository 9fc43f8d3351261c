"""How long the overlap check (prepare's data.overlap) takes on a real file: the 10,003-row Banking77 training CSV
against a 250-row test file, and how many training rows it finds.

The test file is 250 rows drawn (seed 0) from the same CSV: half of them copied with case and spacing changed, half
re-typed with one word dropped, so the check must find near-duplicates, not only exact copies. It prints the time
of `find_overlap` (index the held-out rows, look up every training row; reading the files apart), how many
training rows it found, and how many of the drawn rows' own originals were among them (recall, per kind).

    PYTHONPATH=src .venv/bin/python bench/data_checks.py --csv /work/shared/data/banking77_train.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path

from distilflow.jobspec import DataSpec
from distilflow.prepare.overlap import find_overlap
from distilflow.tasks import get_task, read_examples


def copied(text: str, rng: random.Random) -> str:
    return "  ".join(text.upper().split()) if rng.random() < 0.5 else " " + text.lower() + " "


def one_word_dropped(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) > 1:
        del words[rng.randrange(len(words))]
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=Path("/work/shared/data/banking77_train.csv"))
    parser.add_argument("--test-rows", type=int, default=250)
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()
    with args.csv.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(0)
    picked = rng.sample(rows, args.test_rows)
    with tempfile.TemporaryDirectory() as folder:
        test = Path(folder) / "test.jsonl"
        half = args.test_rows // 2
        texts = [copied(r["text"], rng) for r in picked[:half]] + [one_word_dropped(r["text"], rng)
                                                                   for r in picked[half:]]
        test.write_text("".join(json.dumps({"text": t, "label": r["category"]}) + "\n" for t, r in zip(texts, picked)))
        task = get_task("classification")
        started = time.perf_counter()
        train_rows = read_examples(args.csv, task, "train")
        test_rows = read_examples(test, task, "test")
        read_s = time.perf_counter() - started
        task = task.for_job({"train": train_rows, "test": test_rows})
        started = time.perf_counter()
        found = find_overlap(task, {"train": train_rows, "test": test_rows}, DataSpec(
            near_duplicate_threshold=args.threshold))
        check_s = time.perf_counter() - started
    print(f"training rows {len(train_rows):,}, test rows {len(test_rows):,}, threshold {args.threshold}")
    print(f"reading both files: {read_s:.2f} s")
    found_texts = {task.input_text(train) for train, _, _ in found.pairs}
    recall = [sum(r["text"] in found_texts for r in part) for part in (picked[:half], picked[half:])]
    print(f"overlap check: {check_s:.2f} s; training rows found: {len(found.training_ids):,}")
    print(f"originals found: {recall[0]} of {half} case/space copies, {recall[1]} of {args.test_rows - half} "
          f"with one word dropped")


if __name__ == "__main__":
    main()
