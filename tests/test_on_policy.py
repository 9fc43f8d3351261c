"""on_policy and layer matching as a user runs them: the batch the loss sees (prompt and padding masked, samples in
place of stored answers), the alignment of a served teacher's echoed scores, whole jobs with a local and with a
served teacher, and the refusals that come before any teacher request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_job

from distilflow.errors import DistilflowError
from distilflow.pipeline.runner import run_job
from distilflow.jobspec import load_spec
from distilflow.teachers.scoring import PromptScores
from distilflow.train.rollout import (IGNORE, OnPolicySettings, answer_starts, cut_completions, left_padded_prompts,
                                      mix_answers, rows_to_sample, sample_answers)
from distilflow.workspace import Workspace

pytestmark = pytest.mark.timeout(300)
PAD = 0


def _batch() -> dict[str, torch.Tensor]:
    """Two right-padded rows: prompt [5, 6, 7] + answer [8, 9]; prompt [5, 6] + answer [10, 11, 12]."""
    input_ids = torch.tensor([[5, 6, 7, 8, 9, PAD], [5, 6, 10, 11, 12, PAD]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 8, 9, IGNORE], [IGNORE, IGNORE, 10, 11, 12, IGNORE]])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def test_sampled_answers_replace_stored_ones_with_prompt_and_padding_masked():
    batch = _batch()
    starts = answer_starts(batch["labels"])
    assert starts.tolist() == [3, 2]
    prompts, mask = left_padded_prompts(batch["input_ids"], starts, [0, 1], PAD)
    assert prompts.tolist() == [[5, 6, 7], [PAD, 5, 6]] and mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    # Generated continuations: the first stops at end of turn (2, kept), the second runs to the limit.
    generated = torch.tensor([[5, 6, 7, 20, 2, PAD, PAD], [PAD, 5, 6, 21, 22, 23, 24]])
    assert cut_completions(generated, 3, {2}) == [[20, 2], [21, 22, 23, 24]]
    mixed = mix_answers(batch, {1: [21, 22, 23, 24, 25, 2]}, PAD, max_length=16)
    assert mixed["input_ids"].tolist() == [[5, 6, 7, 8, 9, PAD, PAD, PAD], [5, 6, 21, 22, 23, 24, 25, 2]]
    assert mixed["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8]
    # Labels: the answers only, never the prompt or the padding.
    assert mixed["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 8, 9, IGNORE, IGNORE, IGNORE],
                                        [IGNORE, IGNORE, 21, 22, 23, 24, 25, 2]]
    cut = mix_answers(batch, {0: [30, 31, 32, 33]}, PAD, max_length=5)  # never longer than max_seq_length
    assert cut["input_ids"].shape[1] == 5 and cut["labels"][0].tolist() == [IGNORE, IGNORE, IGNORE, 30, 31]


def test_share_of_rows_sampled_follows_the_ratio():
    torch.manual_seed(0)
    starts = torch.tensor([3] * 8)
    counts = [len(rows_to_sample(8, 0.3, starts, 10)) for _ in range(400)]
    assert set(counts) <= {2, 3} and abs(sum(counts) / 400 - 2.4) < 0.15
    assert rows_to_sample(8, 0.0, starts, 10) == [] and len(rows_to_sample(8, 1.0, starts, 10)) == 8
    assert rows_to_sample(2, 1.0, torch.tensor([3, 10]), 10) == [0]  # a prompt that fills the row: nothing to sample


def test_sampled_share_rises_over_the_warmup_then_stays():
    ramped = OnPolicySettings(ratio=0.5, temperature=0.5, max_tokens=4, max_length=64, warmup=0.5)
    assert [ramped.ratio_at(step, 100) for step in (0, 25, 50, 99)] == [0.0, 0.25, 0.5, 0.5]
    at_once = OnPolicySettings(ratio=0.5, temperature=0.5, max_tokens=4, max_length=64, warmup=0.0)
    assert at_once.ratio_at(0, 100) == 0.5


def test_student_samples_a_batch_with_its_kv_cache(tiny_models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["student"]).eval()
    batch = _batch()
    settings = OnPolicySettings(ratio=1.0, temperature=1.0, max_tokens=4, max_length=64)
    answers = sample_answers(model, batch["input_ids"], answer_starts(batch["labels"]), [0, 1], settings, PAD, {2})
    assert len(answers) == 2 and all(1 <= len(a) <= 4 for a in answers)
    assert all(2 not in a[:-1] for a in answers)  # nothing after an end of turn


def test_served_scores_align_with_the_students_tokens_through_llama_cpp_quirks(tiny_models):
    from distilflow.models import load_tokenizer
    from distilflow.train.served_targets import align
    from distilflow.train.sparse_targets import TokenMapper

    tokenizer = load_tokenizer(str(tiny_models["student"]))
    text = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nThe quick fox<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    echoed = [tokenizer.decode([i], skip_special_tokens=True) for i in ids if i != bos]  # '' for <|im_end|>
    scores = PromptScores(key="r", tokens=[*echoed, "!"], top=[None] * (len(echoed) + 1))
    found = align(ids, scores, TokenMapper(tokenizer), set(tokenizer.all_special_ids))
    assert [f for i, f in zip(ids, found) if i == bos] == [None, None]  # BOS tokens: no entry
    assert [f for f in found if f is not None] == list(range(len(echoed)))  # every other token, in order
    broken = PromptScores(key="r", tokens=[echoed[0], "xyz-not-a-token", *echoed[2:]], top=scores.top)
    assert all(f is None for f in align(ids, broken, TokenMapper(tokenizer), set(tokenizer.all_special_ids))[3:])


def _run(job: Path, workspace: Path, stages=("generate", "train")):
    record = run_job(load_spec(job), Workspace.open(workspace), list(stages))
    return next(s for s in record.stages if s.stage == "train")


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_on_policy_job_with_a_local_teacher_logs_the_step_time_split(tmp_path, tiny_models):
    job = write_job(tmp_path / "job", tiny_models, name="onp", training={
        "method": "on_policy", "on_policy_ratio": 0.5, "on_policy_warmup": 0.0, "divergence": "jsd", "jsd_beta": 0.5,
        "student_max_tokens": 6,
        "logging_steps": 1, "max_steps": 3})
    train = _run(job, tmp_path / "w")
    metrics = train.metrics
    assert train.status == "completed" and metrics["method"] == "on_policy" and metrics["steps"] == 3
    assert metrics["sampled_rows"] + metrics["stored_rows"] == 6 and metrics["sampled_rows"] > 0
    assert metrics["time_sample_s"] > 0 and metrics["time_score_s"] > 0 and metrics["time_update_s"] > 0
    assert metrics["validation_kd_loss"] >= 0 and "validation_ce_loss" not in metrics  # the divergence alone
    log = json.loads((tmp_path / "w" / "jobs" / "onp" / "student" / "train_log.json").read_text())
    assert any({"time_sample_s", "time_score_s", "time_update_s", "kd_loss"} <= set(entry) for entry in log)


def test_hidden_state_and_attention_matching_on_a_pruned_student(tmp_path, tiny_models):
    job = write_job(tmp_path / "job", tiny_models, name="match", training={
        "method": "kd", "hidden_states": {"weight": 1.0, "layers": "auto"}, "attention": {"weight": 0.5},
        "logging_steps": 1, "max_steps": 2}, student={"model": str(tiny_models["teacher"]), "prune": [0, 3]})
    metrics = _run(job, tmp_path / "w").metrics
    assert metrics["train_hidden_loss"] >= 0 and metrics["train_attention_loss"] >= 0
    assert metrics["validation_hidden_loss"] >= 0 and metrics["validation_attention_loss"] >= 0


def test_sft_with_hidden_states_trains_a_projection_that_is_not_saved(tmp_path, tiny_models):
    from safetensors import safe_open

    job = write_job(tmp_path / "job", tiny_models, name="proj", n_val=0, training={
        "hidden_states": {"weight": 1.0, "layers": [[1, 3]], "loss": "cosine"}, "logging_steps": 1, "max_steps": 2})
    metrics = _run(job, tmp_path / "w").metrics
    assert metrics["method"] == "sft" and metrics["train_hidden_loss"] > 0 and "train_kd_loss" not in metrics
    final = tmp_path / "w" / "jobs" / "proj" / "student" / "final"
    with safe_open(str(final / "model.safetensors"), "pt") as weights:  # student width 32, teacher 64: projected
        assert not [k for k in weights.keys() if "projection" in k]
    assert json.loads((final / "config.json").read_text())["hidden_size"] == 32


@pytest.mark.parametrize("training, teacher, message", [
    ({"hidden_states": {"layers": [[0, 7]]}}, {}, "teacher layer 7 does not exist"),
    ({"method": "on_policy", "attention": {"layers": [[5, 0]]}}, {}, "student layer 5 does not exist"),
    ({"method": "on_policy", "hidden_states": {"weight": 1.0}},
     {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}, "needs a local teacher"),
    ({"method": "on_policy"}, {"backend": "recorded", "model": "x", "path": "answers.jsonl"}, "not recorded"),
], ids=["teacher_layer", "student_layer", "api_teacher", "recorded_teacher"])
def test_refused_in_one_sentence_before_any_teacher_request(tmp_path, tiny_models, training, teacher, message):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "answers.jsonl").write_text(json.dumps({"prompt": "Hello", "response": "Hi"}) + "\n")
    job = write_job(tmp_path / "job", tiny_models, name="bad", training=training, teacher=teacher)
    with pytest.raises(DistilflowError, match=message) as error:
        _run(job, tmp_path / "w")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "w" / "jobs" / "bad" / "synthetic").exists()  # nothing asked of the teacher


@pytest.mark.parametrize("accept_ids", [True, False], ids=["token_ids", "text_only_server"])
def test_on_policy_with_a_served_teacher_scores_through_prompt_logprobs(tmp_path, tiny_models, accept_ids):
    from hf_completions_server import HFCompletionsServer

    with HFCompletionsServer(str(tiny_models["teacher"]), accept_ids=accept_ids) as server:
        job = write_job(tmp_path / "job", tiny_models, name="served", teacher={
            "backend": "openai", "model": "tiny", "base_url": server.url, "max_concurrency": 4, "max_retries": 3},
            training={"method": "on_policy", "on_policy_ratio": 0.5, "on_policy_warmup": 0.0, "student_max_tokens": 6,
                      "teacher_top_logprobs": 4, "logging_steps": 1, "max_steps": 2})
        train = _run(job, tmp_path / "w")
        counts = dict(server.counts)
    metrics = train.metrics
    assert train.status == "completed" and metrics["steps"] == 2
    assert metrics["teacher_requests"] == counts["completions"] > 0  # every call counted, refused ones included
    assert metrics["teacher_retries"] == counts["refused_completions"] > 0  # 429s, retried after Retry-After
    assert metrics["teacher_failed_requests"] == 0 and metrics["teacher_prompt_tokens"] > 0
    assert metrics["served_rows_scored"] >= 6 and metrics["served_answer_tokens_scored"] > 0
    if accept_ids:  # the server scored exactly the student's tokens: every answer token has its targets
        assert "served_answer_tokens_without_targets" not in metrics
        # (this server spells lone UTF-8 bytes as U+FFFD, which maps to no token: those alternatives join the tail)
        assert metrics.get("served_unmappable_teacher_tokens", 0) <= 0.25 * metrics["served_teacher_top_tokens"]
    else:  # text, split again by the server: aligned where it split as the student did (a random student's
        # samples of lone UTF-8 bytes do not survive decoding)
        assert counts["refused_ids"] >= 1 and metrics["served_answer_tokens_scored"] > 0
    assert metrics["time_score_s"] > 0 and metrics["validation_kd_loss"] >= 0  # validation rows are scored too


def test_report_states_the_served_teachers_training_calls(tmp_path):
    from test_report_unit import _report

    from distilflow.report.html import render_html
    from distilflow.report.markdown import render_markdown

    report = _report(tmp_path)
    report["training"].update(method="on_policy", teacher_requests=42, teacher_prompt_tokens=1234)
    assert "Teacher scoring during training: 42 requests, 1234 prompt tokens" in render_markdown(report)
    assert "teacher scoring requests / prompt tokens" in render_html(report, {})


def test_served_targets_mask_answer_tokens_without_scores_and_rows_that_failed(tiny_models):
    from distilflow.models import load_tokenizer
    from distilflow.teachers.base import TeacherFailure
    from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS
    from distilflow.train.served_targets import ServedTeacher

    tokenizer = load_tokenizer(str(tiny_models["student"]))
    vocab = tokenizer.get_vocab()
    the, on = vocab["The"], vocab["Ġon"]

    class Scorer:  # scores row 0 by position (ids sent), with no alternatives at its last answer token; fails row 1
        counts: dict = {}

        def score(self, requests):
            first = requests[0]
            top = [None] + [{"The": -0.1, " on": -2.5}] * (len(first.token_ids) - 2) + [None]
            return {first.key: PromptScores(first.key, ["x"] * len(first.token_ids), top, from_ids=True),
                    requests[1].key: TeacherFailure(requests[1].key, "500 after 3 attempts")}

    batch = _batch()
    served = ServedTeacher(Scorer(), tokenizer, len(tokenizer))
    out = served.attach([batch])[0]
    assert out["labels"][0].tolist() == [IGNORE, IGNORE, IGNORE, 8, IGNORE, IGNORE]  # token 9: no alternatives
    assert (out["labels"][1] == IGNORE).all()  # the failed row leaves the loss
    assert out[TOPK_IDS][0, 3].tolist() == [the, on] and out[TOPK_LOGPROBS][0, 3].tolist() == pytest.approx([-0.1, -2.5])
    assert (out[TOPK_IDS][0, :3] == -1).all()  # prompt positions carry no targets
    assert served.stats["rows_failed"] == 1 and served.stats["answer_tokens_without_targets"] == 1


@pytest.mark.slow  # a served teacher of another tokenizer and an on_policy job: about 40 s here
def test_on_policy_with_a_served_teacher_of_another_tokenizer_aligns_its_scores_by_text(tmp_path, tiny_models):
    from hf_completions_server import HFCompletionsServer
    from tiny_models import build_model, build_tokenizer

    # ASCII-only tokenizers, so the random student's samples decode to text; the teacher keeps more words whole.
    teacher = build_model(tmp_path / "teacher", build_tokenizer(tmp_path / "t", vocab_size=1000, all_bytes=False),
                          layers=2, hidden=64, seed=5)
    student = build_model(tmp_path / "student", build_tokenizer(tmp_path / "s", vocab_size=300, all_bytes=False),
                          layers=2, hidden=32, seed=2)
    models = {"teacher": teacher, "student": student}
    with HFCompletionsServer(str(teacher), accept_ids=False) as server:  # text only: it reads its own tokens
        job = write_job(tmp_path / "job", models, name="served-xtok", teacher={
            "backend": "openai", "model": "tiny", "base_url": server.url, "max_concurrency": 4, "max_retries": 3},
            training={"method": "on_policy", "on_policy_ratio": 0.5, "on_policy_warmup": 0.0, "student_max_tokens": 6,
                      "teacher_top_logprobs": 4, "logging_steps": 1, "max_steps": 2})
        train = _run(job, tmp_path / "w")
    metrics = train.metrics
    assert train.status == "completed"
    # Which rows take the text path depends on what the random student samples (machine-dependent); that every
    # answer token finds the teacher's scores, whichever path, does not. The path itself: the test below.
    scored, missing = metrics["served_answer_tokens_scored"], metrics.get("served_answer_tokens_without_targets", 0)
    assert scored > 0 and missing <= 0.2 * (scored + missing) and metrics.get("served_rows_failed", 0) == 0


def test_served_scores_in_another_tokenizers_pieces_are_aligned_by_text(tmp_path):
    from tiny_models import build_tokenizer

    from distilflow.train.distill_trainer import TOPK_IDS
    from distilflow.train.served_targets import ServedTeacher

    student = build_tokenizer(tmp_path / "s", vocab_size=300, all_bytes=False)
    teacher = build_tokenizer(tmp_path / "t", vocab_size=1000, all_bytes=False)  # keeps more words whole
    prompt = "<|im_start|>user\nWhat is the theory?<|im_end|>\n<|im_start|>assistant\n"
    answer = "The Hypothesis and its Context"
    prompt_ids = student(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = student(answer, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + answer_ids
    pieces = [teacher.decode([i]) for i in teacher(prompt + answer, add_special_tokens=False)["input_ids"]]
    assert len(pieces) < len(ids)  # the teacher's pieces are not the student's tokens

    class Scorer:  # a text-only server (llama-cpp-python): its own pieces, each with two alternatives
        counts: dict = {}

        def score(self, requests):
            top = [None] + [{p: -0.2, "zzz": -1.8} for p in pieces[1:]] + [{"": -0.1}]
            return {requests[0].key: PromptScores(requests[0].key, [*pieces, ""], top)}

    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
             "labels": torch.tensor([[IGNORE] * len(prompt_ids) + answer_ids])}
    served = ServedTeacher(Scorer(), student, len(student))
    out = served.attach([batch])[0]
    assert served.stats["rows_aligned_across_tokenizers"] == 1
    with_targets = (out[TOPK_IDS][0, len(prompt_ids):, 0] >= 0).sum().item()
    assert with_targets == len(answer_ids) - served.stats["answer_tokens_without_targets"] and with_targets >= 2
    assert (out[TOPK_IDS][0, :len(prompt_ids)] == -1).all()  # prompt positions carry no targets
