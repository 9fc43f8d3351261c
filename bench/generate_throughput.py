"""Teacher-stage throughput against an OpenAI-protocol server with a fixed latency.

With C requests in flight and L seconds per answer, no client can beat C / L answers per second. This runs
`distilflow generate` (the real CLI: cache commits, progress bar and all) on N prompts against
tests/openai_server.py started as its own process, measures answers/s in steady state from the server's
answer timestamps (the first and last 10% of answers cut: ramp-up and tail), and prints the ratio to C / L.
With --peer it runs the same workload through bespokelabs-curator (from its own venv, as a subprocess)
against a fresh server, and prints distilflow / peer.

    python bench/generate_throughput.py --prompts 3200 --concurrency 64 --latency 0.2 \
        --peer-python /work/venvs/peer/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from openai_server import steady_rate  # noqa: E402


@contextmanager
def server_process(latency: float):
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        process = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--port-file",
                                    str(port_file), "--config", json.dumps({"latency": latency})],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the test server did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            process.terminate()
            process.wait(10)


def server_stats(root: str) -> dict:
    with urllib.request.urlopen(f"{root}/_stats") as response:
        return json.load(response)


def prompts(n: int) -> list[str]:
    return [f"Bench prompt {i}: say something short about the number {i}." for i in range(n)]


def tiny_student(folder: Path) -> Path:
    """The stage checks its student before asking the teacher: a tiny random one (tests/tiny_models.py)."""
    from tiny_models import build_model, build_tokenizer

    return build_model(folder / "student", build_tokenizer(folder / "tokenizer"), layers=1, hidden=32)


def run_generate(base_url: str | list[str], n: int, concurrency: int, folder: Path, student: Path) -> float:
    """`distilflow generate` (the real CLI) on n prompts against the server(s); returns its wall seconds."""
    import yaml

    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in prompts(n)))
    spec = {"name": "bench", "task_type": "conversation",
            "teacher": {"backend": "openai", "model": "bench-teacher", "base_url": base_url,
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
    rows = sum(1 for _ in (folder / "ws" / "jobs" / "bench" / "synthetic" / "train.jsonl").open())
    assert rows == n, f"expected {n} synthetic rows, got {rows}"
    return wall


def run_distilflow(root: str, n: int, concurrency: int, folder: Path, student: Path) -> tuple[float, float]:
    wall = run_generate(f"{root}/v1", n, concurrency, folder, student)
    return steady_rate(server_stats(root)["answer_times"]), wall


PEER_SCRIPT = textwrap.dedent("""
    import os, sys, json, time
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["CURATOR_DISABLE_CACHE"] = "true"
    # Curator counts tokens with tiktoken, whose BPE files are downloaded on first use; this machine has
    # no internet, so a chars/4 stand-in is patched in (cheaper than the real thing: it favours the peer).
    import tiktoken
    class _Chars4:
        def encode(self, text, *args, **kwargs):
            return [0] * (len(text) // 4 + 1)
    tiktoken.get_encoding = lambda name: _Chars4()
    tiktoken.encoding_for_model = lambda name: _Chars4()
    from bespokelabs import curator
    root, n, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    prompts = [f"Bench prompt {i}: say something short about the number {i}." for i in range(n)]
    llm = curator.LLM(model_name="bench-teacher", backend="openai",
                      generation_params={"max_tokens": 32},
                      backend_params={"base_url": root + "/v1", "api_key": "bench-key",
                                      "max_requests_per_minute": 10**7, "max_tokens_per_minute": 10**10,
                                      "max_concurrent_requests": concurrency, "max_retries": 1,
                                      "require_all_responses": False})
    started = time.monotonic()
    out = llm(prompts)
    print(json.dumps({"rows": len(out.dataset) if hasattr(out, "dataset") else len(out),
                      "wall": time.monotonic() - started}))
""")


def run_peer(python: str, root: str, n: int, concurrency: int, folder: Path) -> tuple[float, float]:
    script = folder / "peer.py"
    script.write_text(PEER_SCRIPT)
    env = dict(os.environ, CURATOR_CACHE_DIR=str(folder / "curator-cache"), OPENAI_API_KEY="bench-key",
               HOME=str(folder))
    started = time.monotonic()
    result = subprocess.run([python, str(script), root, str(n), str(concurrency)], env=env, capture_output=True,
                            text=True, cwd=folder)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"peer failed: {result.stderr[-3000:]}")
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    assert rows == n, f"the peer returned {rows} rows for {n} prompts"
    return steady_rate(server_stats(root)["answer_times"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=1, help="alternate the runs this many times; medians reported")
    parser.add_argument("--peer-python", help="python of a venv with bespokelabs-curator installed")
    args = parser.parse_args()
    limit = args.concurrency / args.latency
    print(f"workload: {args.prompts} prompts, C={args.concurrency}, L={args.latency}s, limit C/L = {limit:.1f} answers/s")
    ours: list[float] = []
    peers: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        student = tiny_student(Path(tmp))
        for repeat in range(args.repeats):
            folder = Path(tmp) / f"ours-{repeat}"
            folder.mkdir()
            with server_process(args.latency) as root:  # a fresh server: nothing cached, counters at zero
                rate, wall = run_distilflow(root, args.prompts, args.concurrency, folder, student)
            ours.append(rate)
            print(f"distilflow: {rate:.1f} answers/s in steady state = {rate / limit:.3f} of the limit "
                  f"(whole command {wall:.1f}s incl. start-up and synthetic set)", flush=True)
            if args.peer_python:
                folder = Path(tmp) / f"peer-{repeat}"
                folder.mkdir()
                with server_process(args.latency) as root:
                    rate, wall = run_peer(args.peer_python, root, args.prompts, args.concurrency, folder)
                peers.append(rate)
                print(f"curator:    {rate:.1f} answers/s in steady state = {rate / limit:.3f} of the limit "
                      f"(whole run {wall:.1f}s incl. start-up)", flush=True)
    ours_median = statistics.median(ours)
    print(f"median distilflow: {ours_median:.1f} answers/s = {ours_median / limit:.3f} of C/L")
    if peers:
        peer_median = statistics.median(peers)
        print(f"median curator:    {peer_median:.1f} answers/s = {peer_median / limit:.3f} of C/L")
        print(f"distilflow / curator: {ours_median / peer_median:.2f}")


if __name__ == "__main__":
    main()
