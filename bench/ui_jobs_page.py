"""The dashboard with many jobs: how long the jobs page takes with 100 jobs in the store (the limit: 200 ms), and
how long a change in the store takes to reach an open page (the limit: 1 s), with one open page and with 20.

A workspace of N jobs is written through the job store's own API (every third completed, one in ten running: this
process holds their locks, as their runs would; the others queued with their first stage done), `distilflow ui`
is started as a user starts it, and the jobs page is fetched again and again over HTTP. Then S server-sent-event
streams are opened (S open tabs) and the time from a progress write to the event's arrival on every stream is
measured. Also printed: reading the jobs the way the page does (ui/records.py) against `JobStore.list()`.

    python bench/ui_jobs_page.py --jobs 100 --requests 50
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from distilflow.jobs.lock import JobLock  # noqa: E402
from distilflow.jobs.store import STAGES, JobStore  # noqa: E402
from distilflow.ui.records import read_jobs  # noqa: E402
from distilflow.workspace import Workspace  # noqa: E402


def fill(workspace: Path, count: int) -> tuple[JobStore, list[JobLock], list[str]]:
    store = JobStore(workspace / "distilflow.db")
    locks, running = [], []
    for i in range(count):
        name = f"job-{i:03d}"
        spec = {"name": name, "task_type": "classification", "teacher": {"model": "teacher"},
                "student": {"model": "student", "prune": {"every": 2}}, "training": {"method": "sft"}}
        store.upsert_job(name, "classification", spec, {stage: f"inputs-{i}" for stage in STAGES})
        done = STAGES if i % 3 == 0 else STAGES[:2]
        for stage in done:
            store.start_stage(name, stage)
            store.update_progress(name, stage, 50, 50, "12.0 rows/s avg · tokens 1,000 in / 400 out")
            store.finish_stage(name, stage, "completed", metrics={"requests": 50})
        if i % 3 == 0:
            store.set_job_status(name, "completed")
        elif i % 10 == 1:
            lock = JobLock(Workspace(workspace).job(name).lock)
            assert lock.acquire()
            locks.append(lock)
            store.claim(name, os.getpid())
            store.start_stage(name, "train")
            store.update_progress(name, "train", 3, 100, "loss 2.31")
            running.append(name)
    return store, locks, running


def start_ui(workspace: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-m", "distilflow", "ui", "--workspace", str(workspace), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = process.stdout.readline()
    found = re.search(r"(http://\S+/)", line)
    assert found, line
    return process, found.group(1)


def fetch(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
    return time.perf_counter() - started


def stream_arrivals(url: str, streams: int, needle: str, arrived: list[float], ready: threading.Barrier) -> None:
    """Open `streams` event streams; note when each one receives an event containing `needle`."""
    def one() -> None:
        with urllib.request.urlopen(url + "events", timeout=60) as response:
            response.readline()
            ready.wait()
            for raw in response:
                if needle in raw.decode():
                    arrived.append(time.perf_counter())
                    return

    for _ in range(streams):
        threading.Thread(target=one, daemon=True).start()


def propagation(store: JobStore, url: str, job: str, streams: int, rounds: int) -> list[float]:
    """Seconds from a progress write to its arrival on the last of `streams` open streams, per round."""
    out = []
    for r in range(rounds):
        arrived: list[float] = []
        ready = threading.Barrier(streams + 1)
        needle = f"{10 + r}/100"
        stream_arrivals(url, streams, needle, arrived, ready)
        ready.wait(timeout=30)
        time.sleep(0.5)  # every stream has had its first event
        written = time.perf_counter()
        store.update_progress(job, "train", 10 + r, 100, "loss 2.0")
        deadline = time.monotonic() + 10
        while len(arrived) < streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(arrived) == streams, f"{len(arrived)} of {streams} streams got the change"
        out.append(max(arrived) - written)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder) / "ws"
        store, locks, running = fill(workspace, args.jobs)
        reads = [(lambda t=time.perf_counter(): (read_jobs(store), time.perf_counter() - t)[1])() for _ in range(10)]
        lists = [(lambda t=time.perf_counter(): (store.list(), time.perf_counter() - t)[1])() for _ in range(10)]
        process, url = start_ui(workspace)
        try:
            fetch(url)  # the first request imports the templates
            page = sorted(fetch(url) for _ in range(args.requests))
            one = propagation(store, url, running[0], 1, args.rounds)
            many = propagation(store, url, running[0], 20, args.rounds)
            busy = sorted(fetch(url) for _ in range(args.requests))  # the 20 streams of the last round stay open
        finally:
            process.terminate()
            process.wait(timeout=15)
            for lock in locks:
                lock.release()
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    p95 = lambda xs: xs[min(len(xs) - 1, int(len(xs) * 0.95))]  # noqa: E731
    print(f"{args.jobs} jobs ({len(running)} running), {args.requests} requests, cores {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"jobs page: median {ms(statistics.median(page))}, p95 {ms(p95(page))}, max {ms(page[-1])} "
          f"(limit 200 ms: {'met' if p95(page) < 0.2 else 'NOT met'})")
    print(f"jobs page with 20 event streams open: median {ms(statistics.median(busy))}, p95 {ms(p95(busy))}")
    print(f"reading the jobs: ui/records.py {ms(statistics.median(reads))} vs JobStore.list() "
          f"{ms(statistics.median(lists))} ({statistics.median(lists) / statistics.median(reads):.1f}x)")
    print(f"store change -> open page: 1 stream median {ms(statistics.median(one))} (max {ms(max(one))}); 20 streams "
          f"median {ms(statistics.median(many))} (max {ms(max(many))}) (limit 1 s: "
          f"{'met' if max(one + many) < 1 else 'NOT met'})")


if __name__ == "__main__":
    main()
