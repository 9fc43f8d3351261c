"""Peak memory and time of distilflow's chunked `kd` loss against the strongest CPU peer, TRL's
`ChunkedDivergenceFunction` (the chunked loss of its DistillationTrainer: both models' LM heads applied tile by
tile, no [N, V] logits), and optionally (`--naive`) TRL's `GKDTrainer.generalized_jsd_loss` on full logits.

Setting of the issue: vocabulary 49,152 (SmolLM2), hidden size 576, 4,096 tokens, generalized JSD (beta 0.5),
forward + backward from the hidden states (both sides apply the LM heads: TRL's loss needs the full logits first).
Goals: against the chunked peer, <= 1.0x its time at <= 1.0x its memory; against full logits, <= 0.25x the memory
at <= 1.0x the time.

Each variant runs in its own process. Memory is the peak above what the inputs already hold: on CUDA
`torch.cuda.max_memory_allocated`, on CPU the peak resident set size (getrusage) minus the resident size just
before the first step. Time is the median of the timed repeats after one warm-up step; the variants alternate
for `--rounds` rounds and each keeps its fastest (highest memory).

    python bench/kd_loss_memory.py                 # CPU (or --device cuda)
    python bench/kd_loss_memory.py --tokens 1024   # a quicker run
    python bench/kd_loss_memory.py --naive         # also the full-logit loss (13 GiB at 4,096 tokens)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(variant: str, device: str, vocab: int, hidden: int, tokens: int, repeats: int, chunk: int) -> dict:
    import torch

    torch.manual_seed(0)
    dtype = torch.float32
    student_hidden = torch.randn(tokens, hidden, device=device, dtype=dtype, requires_grad=True)
    student_weight = (torch.randn(vocab, hidden, device=device, dtype=dtype) * 0.02).requires_grad_()
    teacher_hidden = torch.randn(tokens, hidden, device=device, dtype=dtype)
    teacher_weight = torch.randn(vocab, hidden, device=device, dtype=dtype) * 0.02
    labels = torch.randint(0, vocab, (tokens,), device=device)

    if variant == "trl_chunked":
        from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

        def step():
            per_token, _entropy = ChunkedDivergenceFunction.apply(student_hidden, student_weight, None, teacher_hidden,
                                                                  teacher_weight, None, 0.5, 1.0)
            loss = per_token.mean()
            loss.backward()
            return loss
    elif variant == "trl":
        import warnings

        warnings.filterwarnings("ignore")
        from trl.experimental.gkd import GKDTrainer

        def step():
            student_logits = student_hidden @ student_weight.T
            with torch.no_grad():
                teacher_logits = teacher_hidden @ teacher_weight.T
            loss = GKDTrainer.generalized_jsd_loss(student_logits[None], teacher_logits[None], labels[None], beta=0.5,
                                                   temperature=1.0)
            loss.backward()
            return loss
    else:
        from distilflow.train.losses import DistillSettings, Head, dense_kd_loss

        settings = DistillSettings(divergence="jsd", jsd_beta=0.5, temperature=1.0, alpha=1.0, chunk_size=chunk)

        def step():
            loss = dense_kd_loss(student_hidden, Head(student_weight), teacher_hidden, Head(teacher_weight), labels,
                                 settings).loss
            loss.backward()
            return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    start = time.perf_counter()
    loss = step()
    sync()
    first = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times = []
    for _ in range(repeats):
        student_hidden.grad = student_weight.grad = None
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return {"variant": variant, "loss": float(loss.detach()), "peak_bytes": peak,
            "seconds": statistics.median(times) if times else first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of the two variants")
    parser.add_argument("--chunk", type=int, default=None, help="tokens per chunk (default: training.loss_chunk_size's)")
    parser.add_argument("--naive", action="store_true", help="also TRL's loss on full logits (slow, 13 GiB)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk is None:
        from distilflow.jobspec import TrainingSpec

        args.chunk = TrainingSpec().loss_chunk_size
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, args.device, args.vocab, args.hidden, args.tokens, args.repeats,
                                     args.chunk)))
        return

    results: dict[str, dict] = {}
    variants = ("trl_chunked", "trl", "distilflow") if args.naive else ("trl_chunked", "distilflow")
    for _ in range(args.rounds):  # alternate the variants; each keeps its fastest round (other load only slows down)
        for variant in variants:
            command = [sys.executable, __file__, "--variant", variant, "--device", args.device, "--vocab",
                       str(args.vocab), "--hidden", str(args.hidden), "--tokens", str(args.tokens), "--repeats",
                       str(args.repeats), "--chunk", str(args.chunk)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            best = results.get(variant)
            seen = (best or {}).get("all_seconds", []) + [result["seconds"]]
            if best is None or result["seconds"] < best["seconds"]:
                results[variant] = result | {"peak_bytes": max(result["peak_bytes"], (best or result)["peak_bytes"])}
            results[variant]["all_seconds"] = seen
    from distilflow.train.losses import MAX_CHUNK_LOGITS

    chunk = max(1, min(args.chunk, MAX_CHUNK_LOGITS // args.vocab))
    print(f"kd loss (generalized JSD, beta 0.5), V={args.vocab:,}, hidden {args.hidden}, {args.tokens:,} tokens, "
          f"device {args.device}, distilflow chunks of {chunk} tokens, {args.rounds} alternating rounds")
    names = {"trl_chunked": "TRL ChunkedDivergenceFunction", "trl": "TRL generalized_jsd_loss (full logits)",
             "distilflow": "distilflow dense_kd_loss (chunked)"}
    for variant in variants:
        r = results[variant]
        print(f"  {names[variant]:<40} peak {r['peak_bytes'] / 2**20:8.0f} MiB   time {r['seconds']:7.3f} s   "
              f"loss {r['loss']:.6f}")
    ours = results["distilflow"]
    for peer, memory_goal in (("trl_chunked", 1.0), ("trl", 0.25)):
        if peer not in results:
            continue
        memory_ratio = ours["peak_bytes"] / results[peer]["peak_bytes"]
        time_ratio = ours["seconds"] / results[peer]["seconds"]
        print(f"  vs {names[peer]}: memory {memory_ratio:.3f}x (goal <= {memory_goal}x: "
              f"{'met' if memory_ratio <= memory_goal else 'NOT met'}), time {time_ratio:.3f}x "
              f"(goal <= 1.0x: {'met' if time_ratio <= 1.0 else 'NOT met'})")
    print("  per-round times: " + ", ".join(f"{v} {[round(t, 2) for t in results[v]['all_seconds']]}"
                                            for v in variants))


if __name__ == "__main__":
    main()
