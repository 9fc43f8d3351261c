"""Latency of pruned students against the teacher, interleaved so that every model sees the same machine load.

The setting is the support-intents demo job (examples/support-intents-smollm2.yaml): the teacher is
SmolLM2-135M-Instruct ranking the ten intents after its 40-shot prompt, timed as the evaluate stage times it (one
message at a time, its shared few-shot prefix cached; and, on a few messages, without the cache); each student is
a copy of it pruned to N evenly spread layers, ranking the labels after the message alone. For every test message
the teacher and every student answer one after the other, so a busy machine slows them alike and the ratios hold
(the evaluate stage times one model after another, which a shared machine can skew). Untrained students: latency
depends on depth, not on the weights.

    python bench/depth_latency.py                      # 40 messages, depths 20 16 12 8
    python bench/depth_latency.py --messages 80 --depths 16 12
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from prefix_cache import requests_of  # noqa: E402
from quality import evenly  # noqa: E402

from distilflow.models.prompts import completion_answer, render_completion  # noqa: E402
from distilflow.models.scoring import score_labels  # noqa: E402
from distilflow.tasks import get_task  # noqa: E402
from distilflow.tasks.rows import read_examples  # noqa: E402
from distilflow.teachers.hf import HFTeacher  # noqa: E402
from distilflow.train.prune import prune_layers  # noqa: E402

UNCACHED_MESSAGES = 8  # the whole-prompt teacher takes ~1.5 s a message: a few are enough for its median


def timed(model: Any, tokenizer: Any, prompt: str, labels: list[str], prefix: Any = None) -> float:
    started = time.perf_counter()
    score_labels(model, tokenizer, [prompt], labels, prefix)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "support-intents-smollm2.yaml")
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 16, 12, 8])
    args = parser.parse_args()
    spec, requests, params = requests_of(args.spec, args.messages)
    task = get_task(spec.task_type, spec.labels)
    student_prompts = [render_completion(e.messages) for e in read_examples(spec.test_data, task, "test",
                                                                            limit=args.messages)]
    teacher = HFTeacher(spec.teacher)
    model, tokenizer = teacher.model, teacher.tokenizer
    teacher_prompts = [teacher.render(r.messages) for r in requests]
    labels = [completion_answer(label) for label in params.choices]
    prefix = teacher.prefix_cache(teacher_prompts)
    students = {n: prune_layers(copy.deepcopy(model), evenly(n)).eval() for n in args.depths}
    timed(model, tokenizer, teacher_prompts[0], labels, prefix)  # warm-up (first calls allocate), not timed
    for student in students.values():
        timed(student, tokenizer, student_prompts[0], labels)
    times: dict[str, list[float]] = {"teacher": [], "teacher_uncached": [], **{f"{n} layers": [] for n in students}}
    for i, (teacher_prompt, student_prompt) in enumerate(zip(teacher_prompts, student_prompts)):
        times["teacher"].append(timed(model, tokenizer, teacher_prompt, labels, prefix))
        if i < UNCACHED_MESSAGES:
            times["teacher_uncached"].append(timed(model, tokenizer, teacher_prompt, labels))
        for n, student in students.items():
            times[f"{n} layers"].append(timed(student, tokenizer, student_prompt, labels))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{len(teacher_prompts)} messages; teacher prompt ~{prefix.length if prefix else 0} cached prefix tokens "
          f"+ the message; student prompt: the message alone")
    print("| model | median latency (ms) | teacher (prefix cached) / this | teacher (whole prompt) / this |")
    print("|---|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {1000 * value:.1f} | {median['teacher'] / value:.2f}x "
              f"| {median['teacher_uncached'] / value:.1f}x |")


if __name__ == "__main__":
    main()
