"""Logit distillation from a teacher of another tokenizer: an OpenAI-protocol teacher whose top-k log-probs are
whole-word pieces (the tiny student's tokenizer splits words), trained with sparse_kd through the alignment."""

from __future__ import annotations

import json

import pytest
from conftest import write_job
from openai_server import OpenAIServer

from distilflow.jobspec import load_spec
from distilflow.pipeline.runner import run_job
from distilflow.workspace import Workspace


def _api_job(folder, tiny_models, server, **sections):
    teacher = {"backend": "openai", "model": "word-teacher", "base_url": server.url, "api_key_env": "DISTIL_TEST_KEY",
               "max_concurrency": 4}
    return write_job(folder, {"student": tiny_models["student"], "teacher": "word-teacher"}, name="xtok",
                     teacher=teacher, n_train=6, n_val=2, generation={"max_tokens": 12, "top_logprobs": 4},
                     training={"method": "sparse_kd", "kd_alpha": 0.8}, **sections)


@pytest.mark.slow  # a whole job (generate, train, evaluate, report): about 45 s here
def test_sparse_kd_from_an_api_teacher_of_another_tokenizer_reports_mapped_and_unmapped(tmp_path, tiny_models,
                                                                                        monkeypatch):
    monkeypatch.setenv("DISTIL_TEST_KEY", "sk-test")
    workspace = Workspace.open(tmp_path / "w")
    with OpenAIServer() as server:
        job = _api_job(tmp_path / "job", tiny_models, server)
        record = run_job(load_spec(job), workspace, ["generate", "train"])
        run_job(load_spec(job), workspace, ["evaluate", "report"])
    train = next(s for s in record.stages if s.stage == "train").metrics
    # The fake teacher's pieces are whole words with alternatives "word#1".."word#3": every row is aligned, most
    # answer tokens get a target, and the alternatives no student token spells are counted, never dropped.
    assert train["cross_tokenizer_rows"] == train["rows_with_teacher_targets"] + train["rows_without_teacher_targets"]
    assert train["rows_with_teacher_targets"] == 8
    assert train["aligned_student_tokens"] > train["unaligned_student_tokens"]
    assert train["unmatched_teacher_pieces"] >= 0.5 * train["cross_tokenizer_teacher_pieces"]
    assert 0 < train["unmatched_teacher_mass_share"] < 1
    assert train["validation_kd_loss"] > 0
    report = (tmp_path / "w" / "jobs" / "xtok" / "report.md").read_text()
    assert f"answer tokens aligned / unaligned (cross-entropy only): {train['aligned_student_tokens']} / " in report
    assert f"no student token (ULD): {train['unmatched_teacher_pieces']} of " in report
    saved = json.loads((tmp_path / "w" / "jobs" / "xtok" / "report.json").read_text())
    assert saved["training"]["unmatched_teacher_pieces"] == train["unmatched_teacher_pieces"]


def test_api_word_pieces_in_a_real_cache_become_student_targets_whose_product_is_the_word(tmp_path, tiny_models):
    import math

    from distilflow.models import load_tokenizer
    from distilflow.teachers.base import TeacherAnswer, TopLogprobs
    from distilflow.teachers.cache import TeacherCache
    from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS, UNMATCHED
    from distilflow.train.sparse_targets import (
        SparseStats,
        TargetSettings,
        teacher_target_rows,
    )

    tokenizer = load_tokenizer(str(tiny_models["student"]), padding_side="right")
    answer = "Zebras gallop swiftly onward"  # words the student's tokenizer splits
    words = ["Zebras", " gallop", " swiftly", " onward"]
    probs = [0.9, 0.6, 0.7, 0.5]
    top = TopLogprobs(logprobs=[[math.log(p), math.log(0.05)] for p in probs],
                      tokens=[[w, w + "#1"] for w in words])  # "#1" alternatives: no student token spells them
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        cache.put_many([TeacherAnswer(key="k", texts=[answer], top_logprobs=[top])])
        stats = SparseStats()
        messages = [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": answer}]
        (row,) = teacher_target_rows(cache, [{"teacher_key": "k", "messages": messages}],
                                     TargetSettings(tokenizer, len(tokenizer), 256), stats)
    assert stats.aligned_rows == 1 and stats.rows_without_targets == 0
    # Walk the student's tokens word by word: the product of each word's targets along its tokens is p(word).
    position, ids = 0, row[TOPK_IDS]
    for word, p in zip(words, probs):
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        span = range(position, position + len(pieces))
        assert [ids[j][0] for j in span] == pieces
        assert math.exp(sum(row[TOPK_LOGPROBS][j][0] for j in span)) == pytest.approx(p, rel=1e-3)  # stored as float16
        assert row[UNMATCHED][position][0] == pytest.approx(0.05, rel=1e-3)  # the "#1" alternative, left to ULD
        position += len(pieces)
    assert position == len(ids) == stats.alignment.aligned_tokens
    assert stats.alignment.unmatched_pieces == 4 and stats.metrics()["unmatched_teacher_mass_share"] == pytest.approx(0.05, abs=1e-3)


def test_a_served_completion_answer_ending_in_a_space_is_aligned_as_the_student_reads_it(tmp_path, tiny_models):
    """llama.cpp returns " exchange_rate " for a completion prompt; the student reads "Label: exchange_rate"."""
    import math

    from distilflow.models import load_tokenizer
    from distilflow.teachers.base import TeacherAnswer, TopLogprobs
    from distilflow.teachers.cache import TeacherCache
    from distilflow.train.sparse_targets import SparseStats, TargetSettings, teacher_target_rows

    tokenizer = load_tokenizer(str(tiny_models["student"]), padding_side="right")
    pieces = ["Zebras", " gallop", " "]  # the teacher's last token: the space before its stop
    top = TopLogprobs(logprobs=[[math.log(0.9), math.log(0.05)]] * 3, tokens=[[p, p + "#1"] for p in pieces])
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        cache.put_many([TeacherAnswer(key="k", texts=["Zebras gallop "], top_logprobs=[top])])
        stats = SparseStats()
        messages = [{"role": "user", "content": "Message: run\nLabel:"},
                    {"role": "assistant", "content": "Zebras gallop "}]
        teacher_target_rows(cache, [{"teacher_key": "k", "messages": messages}],
                            TargetSettings(tokenizer, len(tokenizer), 256, "completion"), stats)
    assert stats.rows_without_targets == 0, stats.reasons
    assert stats.alignment.aligned_tokens == stats.alignment.student_tokens >= 2  # every answer token has a target


def test_a_local_teachers_stored_ids_of_another_tokenizer_are_spelt_and_aligned(tmp_path, tiny_models):
    import math

    from tiny_models import build_tokenizer

    from distilflow.models import load_tokenizer
    from distilflow.teachers.base import TeacherAnswer, TopLogprobs
    from distilflow.teachers.cache import TeacherCache
    from distilflow.train.distill_trainer import TOPK_IDS
    from distilflow.train.sparse_targets import (
        SparseStats,
        TargetSettings,
        teacher_target_rows,
    )

    teacher = load_tokenizer(str(tiny_models["teacher"]))
    student = build_tokenizer(tmp_path / "splitter", vocab_size=300)  # another vocabulary, splitting more
    answer = "The quick brown fox"
    own = teacher(answer, add_special_tokens=False)["input_ids"]
    other = teacher(" dog", add_special_tokens=False)["input_ids"][0]
    top = TopLogprobs(logprobs=[[math.log(0.7), math.log(0.2)]] * len(own), token_ids=[[i, other] for i in own])
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        cache.put_many([TeacherAnswer(key="k", texts=[answer], top_logprobs=[top])])
        stats = SparseStats()
        messages = [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": answer}]
        settings = TargetSettings(student, len(student), 256, teacher_tokenizer=teacher)
        (row,) = teacher_target_rows(cache, [{"teacher_key": "k", "messages": messages}], settings, stats)
    assert stats.aligned_rows == 1 and stats.rows_without_targets == 0
    assert [ids[0] for ids in row[TOPK_IDS]] == student(answer, add_special_tokens=False)["input_ids"]
    assert stats.alignment.aligned_tokens == len(row[TOPK_IDS]) > len(own)  # the student splits the teacher's words
