"""Answers/s of the `hf` teacher ranking labels with and without the reuse of its shared few-shot prefix.

The setting is the support-intents demo job (examples/support-intents-smollm2.yaml): SmolLM2-135M-Instruct reads
a 40-shot completion prompt (~1,000 tokens shared by every request) before each customer message and ranks the ten
intents. The same requests go through the teacher backend the generate stage uses (`HFTeacher`): once as it runs
them (the prefix's key/value cache computed once and shared), once with the cache off (every request runs its
whole prompt), at each batch size. Variants alternate for `--rounds` rounds; each keeps its fastest round.

    python bench/prefix_cache.py                     # 64 messages, batch sizes 1 4 16
    python bench/prefix_cache.py --messages 32 --batch-sizes 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from distilflow.jobspec import load_spec  # noqa: E402
from distilflow.tasks import get_task  # noqa: E402
from distilflow.tasks.rows import read_examples  # noqa: E402
from distilflow.teachers.base import TeacherRequest  # noqa: E402
from distilflow.teachers.hf import HFTeacher  # noqa: E402
from distilflow.teachers.requests import teacher_messages, teacher_plan  # noqa: E402


def requests_of(spec_path: Path, count: int) -> tuple[Any, list[TeacherRequest], Any]:
    spec = load_spec(spec_path)
    task = get_task(spec.task_type, spec.labels)
    train = read_examples(spec.training_data, task, "train")
    params, shots = teacher_plan(spec, task, train)
    test = read_examples(spec.test_data, task, "test", limit=count)
    requests = [TeacherRequest(key=str(i), messages=teacher_messages(e, spec, shots)) for i, e in enumerate(test)]
    return spec, requests, params


def answers_per_s(teacher: HFTeacher, requests: list[TeacherRequest], params: Any, cached: bool) -> float:
    if not cached:
        teacher.prefix_cache = lambda prompts: None  # every request runs its whole prompt
    started = time.perf_counter()
    answers = list(teacher.generate(requests, params))
    elapsed = time.perf_counter() - started
    assert len(answers) == len(requests)
    return len(requests) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "support-intents-smollm2.yaml")
    parser.add_argument("--messages", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    spec, requests, params = requests_of(args.spec, args.messages)
    loaded = HFTeacher(spec.teacher)  # the model is loaded once and shared by every variant
    prompt_tokens = loaded.count_tokens(requests[0].messages)
    print(f"{len(requests)} requests of ~{prompt_tokens} prompt tokens, {len(params.choices)} labels, "
          f"model {spec.teacher.model}")
    print("| batch size | prefix cached, answers/s | whole prompt, answers/s | ratio |")
    print("|---|---|---|---|")
    for size in args.batch_sizes:
        best: dict[bool, float] = {}
        for _ in range(args.rounds):
            for cached in (True, False):
                teacher = HFTeacher(spec.teacher.model_copy(update={"batch_size": size}))
                teacher._model, teacher._tokenizer = loaded.model, loaded.tokenizer
                rate = answers_per_s(teacher, requests, params, cached)
                best[cached] = max(best.get(cached, 0.0), rate)
        print(f"| {size} | {best[True]:.2f} | {best[False]:.2f} | {best[True] / best[False]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
