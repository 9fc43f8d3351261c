"""Teacher-stage throughput over several endpoints (`teacher.base_url` as a list).

N copies of tests/openai_server.py, each its own process with a fixed latency L, and `teacher.max_concurrency` C per
endpoint: no client can beat N * C / L answers per second. This runs `distilflow generate` (the real CLI) with the N
URLs, measures answers/s in steady state from all servers' answer timestamps together (first and last 10% cut) and
prints it as a share of N * C / L, with how the answers were spread.

    python bench/endpoints.py --endpoints 1 2 4 --concurrency 16 --latency 0.2 --seconds 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from generate_throughput import run_generate, server_process, server_stats, tiny_student  # noqa: E402
from openai_server import steady_rate  # noqa: E402


def run(roots: list[str], n: int, concurrency: int, folder: Path, student: Path) -> dict:
    wall = run_generate([f"{r}/v1" for r in roots], n, concurrency, folder, student)
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
