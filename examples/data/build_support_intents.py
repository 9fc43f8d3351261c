"""Builds the customer-support intent data of examples/support-intents-smollm2.yaml from Banking77.

Source: PolyAI-LDN/task-specific-datasets, banking_data/train.csv (CC BY 4.0), via the project's shared data
folder. Ten intents are kept; each intent's messages are shuffled with a fixed seed and split into disjoint parts:
  support_test.jsonl        25 per intent, labelled (250)      what the report scores
  support_validation.jsonl  10 per intent, labelled (100)      validation loss, `distilflow tune`
  support_train.jsonl       10 per intent labelled, the rest unlabelled: what a user has (a few labelled
                            messages per intent, many unlabelled ones); the teacher labels them all.
Run: python examples/data/build_support_intents.py [path/to/banking77_train.csv]
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

INTENTS = ("activate_my_card", "age_limit", "cancel_transfer", "card_arrival", "change_pin", "exchange_rate",
           "lost_or_stolen_card", "passcode_forgotten", "terminate_account", "top_up_failed")
TEST, VALIDATION, LABELLED_TRAIN = 25, 10, 10
HERE = Path(__file__).resolve().parent


def main(source: Path) -> None:
    by_intent: dict[str, list[str]] = {intent: [] for intent in INTENTS}
    with source.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in by_intent:
                by_intent[row["category"]].append(row["text"])
    splits: dict[str, list[dict]] = {"test": [], "validation": [], "train": []}
    rng = random.Random(77)
    for intent, texts in by_intent.items():
        rng.shuffle(texts)
        test, rest = texts[:TEST], texts[TEST:]
        validation, rest = rest[:VALIDATION], rest[VALIDATION:]
        splits["test"] += [{"text": t, "label": intent} for t in test]
        splits["validation"] += [{"text": t, "label": intent} for t in validation]
        splits["train"] += [{"text": t, "label": intent} for t in rest[:LABELLED_TRAIN]]
        splits["train"] += [{"text": t} for t in rest[LABELLED_TRAIN:]]
    for name, rows in splits.items():
        rng.shuffle(rows)
        with (HERE / f"support_{name}.jsonl").open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"support_{name}.jsonl: {len(rows)} rows")
    write_subsets(splits)


def write_subsets(splits: dict[str, list[dict]]) -> None:
    """The smaller files of examples/xtok-gemma-smollm2.yaml (a served teacher with log-probs is slow on a CPU):
    every labelled training row and the first 100 unlabelled ones, in file order; the first 40 validation rows."""
    unlabelled = [row for row in splits["train"] if "label" not in row][:100]
    subsets = {"train_200": [row for row in splits["train"] if "label" in row or row in unlabelled],
               "validation_40": splits["validation"][:40]}
    for name, rows in subsets.items():
        with (HERE / f"support_{name}.jsonl").open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"support_{name}.jsonl: {len(rows)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data" / "banking77_train.csv")
