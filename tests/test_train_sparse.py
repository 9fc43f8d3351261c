"""sparse_kd's data path: teacher token strings -> ids, alignment of stored positions with the answer's tokens,
the batch collator, and API-style (string) top-k entries in a real teacher cache."""

from __future__ import annotations

import math

import pytest
from conftest import write_job

from distilflow.errors import DistilflowError
from distilflow.models import load_tokenizer
from distilflow.teachers.base import TopLogprobs
from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS
from distilflow.train.sparse_targets import SparseTargetCollator, TokenMapper, build_row, stored_targets

PROMPT = [{"role": "user", "content": "Premise: a man plays. Hypothesis: music?"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(str(tiny_models["student"]), padding_side="right")


def test_token_strings_map_to_ids_or_join_the_tail(tokenizer):
    mapper = TokenMapper(tokenizer)
    vocab = tokenizer.get_vocab()
    assert mapper("The") == vocab["The"]  # an exact vocabulary entry
    assert mapper(" on") == vocab["Ġon"]  # decoded text (what APIs return) that is one token
    assert mapper("token_id:17") == 17  # vLLM's return_tokens_as_token_ids form
    byte_token = next(t for t in vocab if len(t) == 1 and ord(t) >= 0x100 and t != "Ġ")  # a lone byte >= 0x80
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    raw = {v: k for k, v in bytes_to_unicode().items()}[byte_token]
    assert mapper(f"bytes:\\x{raw:02x}") == vocab[byte_token]  # partial UTF-8, as vLLM returns it
    assert mapper(f"\\x{raw:02x}") == vocab[byte_token]  # ... and as OpenAI returns it
    assert mapper("quick brown fox jumps") is None  # several tokens: unmappable

    top = TopLogprobs(logprobs=[[-0.5, -1.5, -2.0, -3.0, -math.inf]],
                      tokens=[["The", "quick brown fox jumps", "The", " on", ""]])  # "" / -inf: an empty slot
    ids, logprobs, unmappable, total = stored_targets(top, mapper, len(tokenizer))
    assert (unmappable, total) == (1, 4)
    # Two strings naming one id add their probabilities; the unmappable one leaves a -1 slot (its mass: tail).
    assert ids == [[vocab["The"], vocab["Ġon"], -1, -1, -1]]
    assert logprobs[0][0] == pytest.approx(math.log(math.exp(-0.5) + math.exp(-2.0)))
    assert logprobs[0][1] == pytest.approx(-3.0)


def test_answer_that_retokenises_gets_targets_on_its_tokens(tokenizer):
    answer = "The quick brown fox"
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = [[t, 5, 6] for t in answer_ids]
    logprobs = [[-0.1, -3.0, -4.0] for _ in answer_ids]
    row, reason = build_row(tokenizer, [*PROMPT, {"role": "assistant", "content": answer}], ids, logprobs, 1024)
    assert reason == ""
    start = row["teacher_offset"]
    assert row["input_ids"][start:start + len(answer_ids)] == answer_ids
    assert all(label == -100 for label in row["labels"][:start])
    assert row["labels"][start:] == row["input_ids"][start:]  # answer and end of turn are trained
    assert len(row["input_ids"]) > start + len(answer_ids)  # the end-of-turn tokens follow (no stored targets)
    assert row[TOPK_IDS] == ids and row[TOPK_LOGPROBS] == logprobs


def test_answer_is_spelled_with_the_teachers_greedy_tokens_when_they_decode_to_it(tokenizer):
    vocab = tokenizer.get_vocab()
    word = next(t for t in ("The", "dic", "ion") if t[:1] in vocab and t[1:] in vocab)
    split = [vocab[word[:1]], vocab[word[1:]]]  # a valid but non-canonical spelling of `word`
    assert tokenizer(word, add_special_tokens=False)["input_ids"] == [vocab[word]]
    ids = [[split[0], 7], [split[1], 8]]
    row, reason = build_row(tokenizer, [*PROMPT, {"role": "assistant", "content": word}], ids, [[-0.2, -2]] * 2, 1024)
    assert reason == ""
    start = row["teacher_offset"]
    assert row["input_ids"][start:start + 2] == split
    assert tokenizer.decode(row["input_ids"][start:], skip_special_tokens=True).startswith(word)


def test_answer_that_cannot_be_aligned_is_trained_without_targets(tokenizer):
    answer = "The quick brown fox"
    n = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    ids = [[11, 12]] * (n + 2)  # more stored positions than tokens, and top-1 tokens that spell something else
    row, reason = build_row(tokenizer, [*PROMPT, {"role": "assistant", "content": answer}], ids, [[-1, -2]] * (n + 2),
                            1024)
    assert reason == "answer_does_not_retokenise_to_teacher_tokens"
    assert row[TOPK_IDS] == [] and any(label != -100 for label in row["labels"])


def test_collator_places_targets_at_their_positions(tokenizer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5], "teacher_offset": 2,
             TOPK_IDS: [[3, 9], [4, 9]], TOPK_LOGPROBS: [[-0.1, -2.0], [-0.2, -2.5]]},
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "teacher_offset": 0, TOPK_IDS: [], TOPK_LOGPROBS: []}]
    batch = SparseTargetCollator(DataCollatorForLanguageModeling(pad_token_id=0))(rows)
    assert batch[TOPK_IDS].shape == (2, 5, 2)
    assert batch[TOPK_IDS][0, 2].tolist() == [3, 9] and batch[TOPK_IDS][0, 3].tolist() == [4, 9]
    assert (batch[TOPK_IDS][0, :2] == -1).all() and (batch[TOPK_IDS][0, 4] == -1).all()
    assert (batch[TOPK_IDS][1] == -1).all()
    assert batch[TOPK_LOGPROBS][0, 3].tolist() == pytest.approx([-0.2, -2.5])


def _rewrite_cache_as_strings(workspace, name, tokenizer, garble: bool = False) -> None:
    """Replace the stored token ids by token strings, as an OpenAI-compatible API returns them."""
    from distilflow.teachers.cache import TeacherCache

    cache = TeacherCache(workspace / "jobs" / name / "cache" / "teacher.sqlite")
    keys = [row[0] for row in cache._db.execute("SELECT key FROM answers")]
    answers = [cache.get(key, with_logprobs=True) for key in keys]
    for answer in answers:
        for sample in answer.top_logprobs:
            if garble:
                sample.tokens = [[f"§{token}§" for token in row] for row in sample.tokens]
            else:
                sample.tokens = [[tokenizer.decode([i]) for i in row] for row in sample.token_ids]
            sample.token_ids = None
    cache.put_many(answers)
    cache.close()


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_sparse_kd_with_api_style_token_strings(tmp_path, tiny_models, tokenizer):
    from distilflow.pipeline.runner import run_job
    from distilflow.jobspec import load_spec
    from distilflow.workspace import Workspace

    job = write_job(tmp_path / "job", tiny_models, name="api", generation={"max_tokens": 6, "top_logprobs": 4},
                    training={"method": "sparse_kd"})
    workspace = Workspace.open(tmp_path / "w")
    run_job(load_spec(job), workspace, ["generate"])
    _rewrite_cache_as_strings(tmp_path / "w", "api", tokenizer)
    record = run_job(load_spec(job), workspace, ["train"])
    metrics = next(s for s in record.stages if s.stage == "train").metrics
    # Decoded text of lone UTF-8 bytes is lost ("\ufffd"): those are unmappable (their mass joins the tail);
    # the rest map back to the teacher's ids.
    assert metrics["stored_teacher_tokens"] > 0
    assert metrics["unmappable_teacher_tokens"] < 0.5 * metrics["stored_teacher_tokens"]

    _rewrite_cache_as_strings(tmp_path / "w", "api", tokenizer, garble=True)  # a teacher with another tokenizer
    with pytest.raises(DistilflowError, match="another tokenizer"):
        run_job(load_spec(job), workspace, ["train"])
