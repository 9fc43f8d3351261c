"""Teacher-stage throughput over several endpoints (`teacher.base_url` as a list).

N copies of tests/openai_server.py, each its own process with a fixed latency L, and `teacher.max_concurrency` C per
endpoint: no client can beat N * C / L answers per second. This runs `distilflow generate` (the real CLI) with the N
URLs, measures answers/s in steady state from all servers' answer timestamps together (first and last 10% cut) and
prints it as a share of N * C / L, with how the answers were spread.

    python bench/endpoints.py --endpoints 1 2 4 --concurrency 16 --latency 0.2 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from generate_throughput import prompts, server_process, server_stats  # noqa: E402
from openai_server import steady_rate  # noqa: E402


def tiny_student(folder: Path) -> Path:
    """The stage checks its student before asking the teacher: a tiny random one (tests/tiny_models.py)."""
    from tiny_models import build_model, build_tokenizer

    return build_model(folder / "student", build_tokenizer(folder / "tokenizer"), layers=1, hidden=32)


def run(roots: list[str], n: int, concurrency: int, folder: Path, student: Path) -> dict:
    import yaml

    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in prompts(n)))
    spec = {"name": "bench", "task_type": "conversation",
            "teacher": {"backend": "openai", "model": "bench-teacher", "base_url": [f"{r}/v1" for r in roots],
                        "api_key_env": "BENCH_KEY", "max_concurrency": concurrency},
            "student": {"model": str(student)}, "training_data": str(data), "generation": {"max_tokens": 32}}
    (folder / "job.yaml").write_text(yaml.safe_dump(spec))
    env = dict(os.environ, BENCH_KEY="bench-key", PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "distilflow", "generate", str(folder / "job.yaml"), "--workspace",
                             str(folder / "ws")], env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"distilflow failed: {result.stderr[-2000:]}")
    stats = [server_stats(root) for root in roots]
    times = [t for s in stats for t in s["answer_times"]]  # CLOCK_MONOTONIC: one clock for every process
    return {"rate": steady_rate(times), "wall": wall, "spread": [s["answers"] for s in stats]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=16, help="teacher.max_concurrency (per endpoint)")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=8.0, help="prompts = this many seconds at the limit")
    args = parser.parse_args()
    models = tempfile.TemporaryDirectory()
    student = tiny_student(Path(models.name))
    print("| endpoints | limit N*C/L (answers/s) | answers/s | share of the limit | answers per endpoint | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for count in args.endpoints:
        limit = count * args.concurrency / args.latency
        n = int(limit * args.seconds)
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            roots = [stack.enter_context(server_process(args.latency)) for _ in range(count)]
            got = run(roots, n, args.concurrency, Path(tmp), student)
        print(f"| {count} | {limit:.0f} | {got['rate']:.1f} | {got['rate'] / limit:.3f} | "
              f"{' / '.join(map(str, got['spread']))} | {got['wall']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
