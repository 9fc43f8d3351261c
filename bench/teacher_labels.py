"""Teacher labels you can trust: the demo's 40-shot SmolLM2-135M teacher (examples/support-intents-smollm2.yaml,
answer_mode rank) on the demo's ten intents and on three sets of ten other Banking77 intents (several of them
confusable), per few-shot order (`generation.few_shot_order`) and calibration (`generation.calibration`):
its accuracy, its largest label share and the bias check's distance (total variation between the teacher's
answers and the labelled rows' label shares; `biased` where the check fires).

Each set has 25 test messages and 10 labelled training messages per intent (the demo's own files for the demo
set; for the others drawn from /work/shared/data/banking77_train.csv with a fixed seed: their intents are not the
demo's, so none of their messages is a demo test message). The teacher sees 40 shots (4 per intent) chosen as the
generate stage chooses them, through the same request builder and backend (`HFTeacher`, shared prefix cached).

Collecting the teacher's label scores is the slow part (a few minutes per set and order on 2 CPU cores); it is
stored per run in bench/results/teacher_labels.json and a re-run only collects what is missing. Calibrations are
computed from the stored scores with the functions the generate stage uses (teachers/calibration.py). `prior`
is fitted as the job fits it, on inputs other than those scored: the test messages are split in two halves, and
each half is calibrated with the mean of the other's.

    python bench/teacher_labels.py                          # every set, both orders, seed 0; then the table
    python bench/teacher_labels.py --sets demo cards --orders round_robin --seeds 0 1
    python bench/teacher_labels.py --table                  # the table from what is stored
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from distilflow.jobspec import CALIBRATIONS, FEW_SHOT_ORDERS, load_spec  # noqa: E402
from distilflow.tasks import get_task  # noqa: E402
from distilflow.tasks.rows import read_examples  # noqa: E402
from distilflow.teachers.base import TeacherRequest, TeacherAnswer  # noqa: E402
from distilflow.teachers.calibration import (best_label, calibrate, content_free_offsets,  # noqa: E402
                                             labelled_shares, prior_offsets)
from distilflow.teachers.hf import HFTeacher  # noqa: E402
from distilflow.teachers.requests import content_free_requests, teacher_messages, teacher_plan  # noqa: E402

BANKING77 = Path("/work/shared/data/banking77_train.csv")
RESULTS = REPO / "bench" / "results" / "teacher_labels.json"
DEMO_SPEC = REPO / "examples" / "support-intents-smollm2.yaml"
# Ten intents each, none of them the demo's; several groups mean nearly the same (the refund pair, a transfer that
# is pending / failed / late / not in the balance; a physical card got or ordered; three identity checks). The labels
# of a set start with different tokens: labels that share their first token are scored whole, without the prefix
# cache, ~10x slower (models/scoring.py) - too slow for this bench on 2 cores.
SETS: dict[str, tuple[str, ...]] = {
    "payments": ("pending_transfer", "failed_transfer", "declined_card_payment", "transfer_timing", "request_refund",
                 "Refund_not_showing_up", "wrong_amount_of_cash_received", "balance_not_updated_after_bank_transfer",
                 "direct_debit_payment_not_recognised", "transaction_charged_twice"),
    "cards": ("get_physical_card", "order_physical_card", "getting_virtual_card", "virtual_card_not_working",
              "disposable_card_limits", "compromised_card", "pin_blocked", "contactless_not_working",
              "visa_or_mastercard", "apple_pay_or_google_pay"),
    "identity": ("verify_my_identity", "unable_to_verify_identity", "why_verify_identity", "automatic_top_up",
                 "topping_up_by_card", "cash_withdrawal_charge", "extra_charge_on_statement", "fiat_currency_support",
                 "country_support", "supported_cards_and_currencies"),
}
TEST, LABELLED = 25, 10


def write_set(name: str, folder: Path) -> tuple[Path, Path, tuple[str, ...]]:
    """The set's training (labelled only: the shots come from them) and test files, and its labels."""
    if name == "demo":
        spec = load_spec(DEMO_SPEC)
        return Path(spec.training_data), Path(spec.test_data), tuple(spec.labels)
    intents = SETS[name]
    by_intent: dict[str, list[str]] = {i: [] for i in intents}
    with BANKING77.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in by_intent:
                by_intent[row["category"]].append(row["text"])
    rng = random.Random(18)
    test, train = [], []
    for intent, texts in by_intent.items():
        rng.shuffle(texts)
        test += [{"text": t, "label": intent} for t in texts[:TEST]]
        train += [{"text": t, "label": intent} for t in texts[TEST:TEST + LABELLED]]
    rng.shuffle(test)
    paths = folder / f"{name}_train.jsonl", folder / f"{name}_test.jsonl"
    for path, rows in zip(paths, (train, test)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths[0], paths[1], intents


def collect(teacher: HFTeacher, set_name: str, order: str, seed: int, folder: Path,
            messages: int | None = None) -> dict[str, Any]:
    """The teacher's label log-probs for every test message and the content-free inputs, with the references."""
    train_path, test_path, labels = write_set(set_name, folder)
    spec = load_spec(DEMO_SPEC)
    generation = spec.generation.model_copy(update={"few_shot_order": order, "seed": seed,
                                                    "calibration": "content_free"})
    spec = spec.model_copy(update={"labels": list(labels), "generation": generation})
    task = get_task(spec.task_type, spec.labels)
    train = read_examples(str(train_path), task, "train")
    test = read_examples(str(test_path), task, "test", limit=messages)
    params, shots = teacher_plan(spec, task, train)
    requests = [TeacherRequest(key=str(i), messages=teacher_messages(e, spec, shots)) for i, e in enumerate(test)]
    requests += content_free_requests(spec, task, {}, params, shots)
    started = time.perf_counter()
    answers = {a.key: a for a in teacher.generate(requests, params) if isinstance(a, TeacherAnswer)}
    scores = [answers[r.key].top_logprobs[0].logprobs[0] for r in requests]  # type: ignore[index]
    return {"set": set_name, "order": order, "seed": seed, "labels": list(labels),
            "references": [e.reference for e in test], "labelled": [e.reference for e in train],
            "scores": scores[:len(test)], "content_free": scores[len(test):],
            "seconds": round(time.perf_counter() - started, 1)}


def calibrated_answers(run: dict[str, Any], calibration: str) -> list[int]:
    """Each test message's label index under `calibration` (prior: fitted on the other half of the messages)."""
    scores = run["scores"]
    if calibration == "none":
        return [best_label(s) for s in scores]
    if calibration == "content_free":
        offsets = content_free_offsets(run["content_free"])
        return [best_label(calibrate(s, offsets)) for s in scores]
    shares = labelled_shares(run["labels"], run["labelled"])
    half = len(scores) // 2
    first, second = scores[:half], scores[half:]
    out = [best_label(calibrate(s, prior_offsets(second, shares))) for s in first]
    return out + [best_label(calibrate(s, prior_offsets(first, shares))) for s in second]


def figures(run: dict[str, Any], calibration: str) -> dict[str, Any]:
    task = get_task("classification", run["labels"])
    answers = [run["labels"][i] for i in calibrated_answers(run, calibration)]
    accuracy = sum(a == r for a, r in zip(answers, run["references"])) / len(answers)
    balance = task.label_balance(answers, run["labelled"])
    return {"accuracy": accuracy, **balance}


def table(runs: list[dict[str, Any]]) -> None:
    print("| set | messages | order | seed | calibration | accuracy | largest label (share) | distance | check |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for calibration in CALIBRATIONS:
            f = figures(run, calibration)
            summary.setdefault((run["order"], calibration), []).append(f["accuracy"])
            print(f"| {run['set']} | {len(run['references'])} | {run['order']} | {run['seed']} | {calibration} | "
                  f"{f['accuracy']:.3f} | "
                  f"{f['top_label']} ({f['top_share']:.0%}) | {f['distance']:.2f} | "
                  f"{'fires' if f['biased'] else '-'} |")
    print("\n| order | calibration | mean accuracy | min | max | runs |")
    print("|---|---|---|---|---|---|")
    for (order, calibration), values in sorted(summary.items()):
        print(f"| {order} | {calibration} | {statistics.mean(values):.3f} | {min(values):.3f} | {max(values):.3f} "
              f"| {len(values)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["demo", *SETS], choices=["demo", *SETS])
    parser.add_argument("--orders", nargs="+", default=list(FEW_SHOT_ORDERS), choices=FEW_SHOT_ORDERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--table", action="store_true", help="only print the table of what is stored")
    parser.add_argument("--messages", type=int, default=None, help="only the first N test messages (a quick try)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: Path = args.results
    runs: list[dict[str, Any]] = json.loads(results.read_text()) if results.exists() else []
    if not args.table:
        teacher = HFTeacher(load_spec(DEMO_SPEC).teacher)
        with tempfile.TemporaryDirectory() as folder:
            for set_name in args.sets:
                for order in args.orders:
                    for seed in args.seeds:
                        if any((r["set"], r["order"], r["seed"]) == (set_name, order, seed) for r in runs):
                            continue
                        runs.append(collect(teacher, set_name, order, seed, Path(folder), args.messages))
                        results.parent.mkdir(parents=True, exist_ok=True)
                        results.write_text(json.dumps(runs))
                        print(f"collected {set_name} {order} seed {seed} in {runs[-1]['seconds']} s", flush=True)
    table(runs)


if __name__ == "__main__":
    main()
