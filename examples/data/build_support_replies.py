"""Builds the customer-support reply data of examples/support-replies-smollm2.yaml from Banking77.

Source: PolyAI-LDN/task-specific-datasets, banking_data/train.csv (CC BY 4.0), via the project's shared data
folder. The messages of the 67 intents that the intent demo (build_support_intents.py) does not use are shuffled
with a fixed seed and split into disjoint parts, as conversation rows (one user turn; no reference reply: the
teacher writes the replies):
  replies_train.jsonl       160 messages   the teacher replies; the student learns from its replies
  replies_validation.jsonl   16 messages   validation loss
  replies_test.jsonl         32 messages   what the report scores and the judge judges (held out: no message of
                                           it is in the other two, nor in the intent demo's data)
Each row keeps its Banking77 intent as `intent` (distilflow ignores it; it says what the customer asks about).
Run: python examples/data/build_support_replies.py [path/to/banking77_train.csv]
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

from build_support_intents import INTENTS as INTENT_DEMO_INTENTS

SIZES = {"train": 160, "validation": 16, "test": 32}
HERE = Path(__file__).resolve().parent


def main(source: Path) -> None:
    with source.open(newline="", encoding="utf-8") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle)
                if row["category"] not in INTENT_DEMO_INTENTS]
    rng = random.Random(19)
    rng.shuffle(rows)
    start = 0
    for name, size in SIZES.items():
        part = rows[start:start + size]
        start += size
        with (HERE / f"replies_{name}.jsonl").open("w", encoding="utf-8") as out:
            for text, intent in part:
                out.write(json.dumps({"messages": [{"role": "user", "content": text.strip()}], "intent": intent},
                                     ensure_ascii=False) + "\n")
        print(f"replies_{name}.jsonl: {len(part)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data" / "banking77_train.csv")
