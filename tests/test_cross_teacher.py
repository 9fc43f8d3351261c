"""`kd` with a local teacher of another tokenizer reads each row as it read it in the teacher stage: its few-shot
block in completion format, read once (its key-value cache reused for every row), then the row and its answer."""

from __future__ import annotations

import pytest
import torch
from conftest import write_job

from distilflow.jobspec import load_spec
from distilflow.pipeline.runner import run_job
from distilflow.workspace import Workspace

LABELS = ["activate_my_card", "card_arrival", "change_pin"]
SHOTS = "".join(f"Message: the parcel number {i} has not come\nLabel: card_arrival\n\n" for i in range(12))


@pytest.fixture(scope="module")
def word_teacher(tmp_path_factory):
    """A tiny model whose tokenizer keeps more words whole than the tiny student's (another vocabulary)."""
    from tiny_models import build_model, build_tokenizer

    root = tmp_path_factory.mktemp("word-teacher")
    tokenizer = build_tokenizer(root / "tokenizer", vocab_size=1000, all_bytes=False)
    return build_model(root / "model", tokenizer, layers=2, hidden=64, seed=3), tokenizer


def test_reading_the_shared_prompt_once_gives_the_same_top_k_as_reading_each_row_whole(word_teacher):
    from transformers import AutoModelForCausalLM

    from distilflow.train.cross_teacher import PrefixScorer

    folder, tokenizer = word_teacher
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    shared = tokenizer(SHOTS, add_special_tokens=False)["input_ids"]
    ids = tokenizer(SHOTS + "Message: my card is lost\nLabel: lost_or_stolen_card", add_special_tokens=False)["input_ids"]
    positions = list(range(len(shared) + 3, len(ids)))
    cached = list(PrefixScorer(model, shared).top_k(ids, positions, 5))
    whole = list(PrefixScorer(model, []).top_k(ids, positions, 5))
    assert len(shared) >= 32 and [row[0] for row in cached] == positions
    for (_, own_a, values_a, ids_a), (_, own_b, values_b, ids_b) in zip(cached, whole):
        assert ids_a == ids_b and own_a == pytest.approx(own_b, abs=1e-4)
        assert values_a == pytest.approx(values_b, abs=1e-4)
    # A row that does not start with the shared prompt is read whole, not after a cache of another text.
    other = tokenizer("Message: hello\nLabel: age_limit", add_special_tokens=False)["input_ids"]
    assert PrefixScorer(model, shared).hidden(other)[1] == 0


def test_the_teachers_completion_answer_is_spelt_without_the_space_before_it(word_teacher):
    from transformers import AutoModelForCausalLM

    from distilflow.train.cross_targets import PieceSpeller
    from distilflow.train.cross_teacher import PrefixScorer, teacher_positions, teacher_texts

    folder, tokenizer = word_teacher
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": "Message: my card is lost\nLabel:"},
                {"role": "assistant", "content": "lost_or_stolen_card"}]
    texts = teacher_texts(tokenizer, messages, "completion")
    assert texts == ("Message: my card is lost\nLabel:", "Message: my card is lost\nLabel: lost_or_stolen_card\n\n")
    positions = teacher_positions(PrefixScorer(model, []), tokenizer, PieceSpeller(tokenizer), texts,
                                  "lost_or_stolen_card", 4)
    assert positions is not None and "".join(p.piece for p in positions) == "lost_or_stolen_card"
    assert all(len(p.alternatives) >= 4 and all(v <= 0 for _, v in p.alternatives) for p in positions)
    assert not any(piece.startswith(" ") for piece, _ in positions[0].alternatives)  # the first token's space: gone


@pytest.mark.slow  # a whole kd job with a few-shot teacher of another tokenizer: about 30 s here
def test_kd_from_a_few_shot_teacher_of_another_tokenizer_reads_its_examples(tmp_path, tiny_models, word_teacher):
    folder, _ = word_teacher

    def classification_rows(n: int, offset: int = 0) -> list[dict]:
        return [{"text": f"customer message number {i}", "label": LABELS[i % 3]} for i in range(offset, offset + n)]

    job = write_job(tmp_path / "job", {"teacher": folder, "student": tiny_models["student"]},
                    task_type="classification", rows=classification_rows, n_train=12, n_val=2, name="xtok-kd-shots",
                    labels=LABELS,
                    teacher={"prompt_format": "completion"}, student={"prompt_format": "completion"},
                    generation={"few_shot": 4, "verify": "none", "max_tokens": 6, "answer_mode": "rank"},
                    training={"method": "kd", "teacher_top_logprobs": 4})
    record = run_job(load_spec(job), Workspace.open(tmp_path / "w"), ["generate", "train"])
    train = next(s for s in record.stages if s.stage == "train")
    assert train.status == "completed"
    metrics = train.metrics
    assert metrics["cross_tokenizer_rows"] > 0 and metrics["aligned_student_tokens"] > 0
    # Its 4 examples come before every row, after the task's instructions (which alone share about 30 tokens).
    assert metrics["teacher_shared_prompt_tokens"] >= 4 * 30
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
