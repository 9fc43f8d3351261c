"""Teacher labels you can trust (classification): the label-bias check after the teacher stage (stderr, the stage's
metrics, the top of the report), calibration of a ranking teacher's label scores (by hand, and through the teacher
stage into the synthetic rows, the soft targets and the cache), and the order of the few-shot block."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml

from conftest import run_cli, write_jsonl
from distilflow.errors import SpecError
from distilflow.jobs.store import JobStore
from distilflow.jobspec import GenerationSpec, parse_spec
from distilflow.report.checks import warnings
from distilflow.tasks import ClassificationTask
from distilflow.teachers.calibration import (calibrate, content_free_offsets, label_distribution, labelled_shares,
                                             prior_offsets)
from openai_server import OpenAIServer, ServerConfig

LABELS = ["activate_my_card", "card_arrival", "change_pin"]
NUMBER = re.compile(r"customer message number (\d+)")


def rows(n: int, offset: int = 0, labelled: bool = True) -> list[dict]:
    return [{"text": f"customer message number {i}", **({"label": LABELS[i % 3]} if labelled else {})}
            for i in range(offset, offset + n)]


def write_job(folder, teacher: dict, student, **generation) -> str:
    write_jsonl(folder / "train.jsonl", rows(9) + rows(30, 50, labelled=False))  # 3 labelled rows per label
    write_jsonl(folder / "validation.jsonl", rows(3, 100))
    write_jsonl(folder / "test.jsonl", rows(6, 200))
    spec = {"name": "intents", "task_type": "classification", "labels": LABELS, "teacher": teacher,
            "student": {"model": str(student), "prompt_format": "completion"},
            "training_data": "train.jsonl", "validation_data": "validation.jsonl", "test_data": "test.jsonl",
            "generation": {"verify": "none", "max_tokens": 8, **generation},
            "data": {"overlap": "warn"}}  # numbered messages look alike to the overlap check; labels are tested here
    (folder / "job.yaml").write_text(yaml.safe_dump(spec))
    return str(folder / "job.yaml")


def served_teacher(server) -> dict:
    return {"model": "teacher-model", "backend": "openai", "base_url": server.url, "api_key_env": "TEST_TEACHER_KEY"}


def generate(folder, job: str, monkeypatch) -> tuple[str, dict]:
    """`distilflow generate` as a user runs it: its stderr and the stage's metrics."""
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    result = run_cli("generate", job, "--workspace", str(folder / "ws"), timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr, JobStore(folder / "ws" / "distilflow.db").get("intents").stage("generate").metrics


def by_rule(messages) -> str:
    """A teacher that knows the answer: the label of the message's number (as the labelled rows have it)."""
    return LABELS[int(NUMBER.findall(messages[-1]["content"])[-1]) % 3]


def mostly_one_label(messages) -> str:
    number = int(NUMBER.findall(messages[-1]["content"])[-1])
    return by_rule(messages) if number % 10 == 0 else "change_pin"


def test_the_bias_check_fires_on_a_teacher_that_answers_one_label(tmp_path, tiny_models, monkeypatch):
    with OpenAIServer(ServerConfig(reply=mostly_one_label)) as server:
        job = write_job(tmp_path, served_teacher(server), tiny_models["student"])
        stderr, metrics = generate(tmp_path, job, monkeypatch)
    balance = metrics["label_balance"]
    assert balance["biased"] and balance["top_label"] == "change_pin"
    assert balance["answers"] == 39 and balance["labelled"] == 9
    # 36 of the 39 training inputs got change_pin (numbers 0, 50, 60, 70, 80 keep theirs: 0 % 3 is activate...)
    assert balance["top_share"] > 0.85 and balance["top_labelled_share"] == round(1 / 3, 4)
    assert balance["distance"] > balance["threshold"]
    assert "change_pin" in stderr and "total variation distance" in stderr
    assert "generation.calibration" in stderr  # what to do about it
    top = warnings({"teacher_stage": metrics, "models": {}, "labels": [], "metric_names": []})
    assert top and top[0] == balance["warning"]  # the first sentence at the top of the report


def test_the_bias_check_stays_quiet_on_a_balanced_teacher(tmp_path, tiny_models, monkeypatch):
    with OpenAIServer(ServerConfig(reply=by_rule)) as server:
        job = write_job(tmp_path, served_teacher(server), tiny_models["student"])
        stderr, metrics = generate(tmp_path, job, monkeypatch)
    balance = metrics["label_balance"]
    assert not balance["biased"] and balance["distance"] < 0.1 and "warning" not in balance
    assert "total variation distance" not in stderr
    assert warnings({"teacher_stage": metrics, "models": {}, "labels": [], "metric_names": []}) == []


def test_the_bias_check_needs_enough_answers_and_a_label_set():
    task = ClassificationTask(LABELS)
    few = task.label_balance(["change_pin"] * 5, LABELS)
    assert few["distance"] > 0.6 and not few["biased"]  # five answers say little
    assert task.label_balance([None, "not a label"], LABELS) is None
    from distilflow.tasks import get_task

    assert get_task("qa").label_balance(["x"] * 50, ["y"] * 50) is None  # open answers: nothing to compare


def test_content_free_calibration_by_hand():
    """Zhao et al.'s example, worked by hand: the teacher gives 0.6 / 0.3 / 0.1 to an empty message, and
    0.5 / 0.3 / 0.2 to a real one; divided by the first and renormalised: 0.833 / 1 / 2 over 3.833."""
    offsets = content_free_offsets([[math.log(0.6), math.log(0.3), math.log(0.1)]])
    out = label_distribution(calibrate([math.log(0.5), math.log(0.3), math.log(0.2)], offsets))
    assert [round(p, 4) for p in out] == [round(0.5 / 0.6 / 3.8333, 4), round(1 / 3.8333, 4), round(2 / 3.8333, 4)]
    assert max(range(3), key=out.__getitem__) == 2  # the label the teacher under-rated now wins
    # The mass the teacher gave to tokens that start no label is kept: here the labels held half of it.
    half = calibrate([math.log(0.25), math.log(0.15), math.log(0.1)], offsets)
    assert math.isclose(sum(math.exp(lp) for lp in half), 0.5)
    assert [round(math.exp(lp) * 2, 4) for lp in half] == [round(p, 4) for p in out]
    # Several content-free inputs: their mean distribution is divided out.
    two = content_free_offsets([[math.log(0.8), math.log(0.1), math.log(0.1)],
                                [math.log(0.4), math.log(0.5), math.log(0.1)]])
    assert [round(math.exp(-o), 4) for o in two] == [0.6, 0.3, 0.1]


def test_prior_calibration_by_hand():
    """Two answers 0.9/0.1 and 0.5/0.5 average 0.7/0.3; the labelled rows say 1/2 each (add-one smoothed from 4
    and 4 rows), so label 0 is weighted 0.5/0.7 and label 1 0.5/0.3: 0.5/0.5 becomes 0.3/0.7."""
    shares = labelled_shares(["a", "b"], ["a"] * 4 + ["b"] * 4 + [None])
    assert shares == [0.5, 0.5]
    assert labelled_shares(["a", "b", "c"], ["a", "a", "b"]) == [3 / 6, 2 / 6, 1 / 6]  # c: rare, not impossible
    offsets = prior_offsets([[math.log(0.9), math.log(0.1)], [math.log(0.5), math.log(0.5)]], shares)
    out = label_distribution(calibrate([math.log(0.5), math.log(0.5)], offsets))
    assert [round(p, 4) for p in out] == [0.3, 0.7]


def test_few_shot_order_is_a_setting(tmp_path):
    """shuffled (the default: the order the block always had) or round_robin: one shot of each label in turn,
    labels in sorted order; the same shots either way."""
    from distilflow.prepare import prepare_inputs
    from distilflow.teachers.requests import few_shot_examples

    def shots(order: str | None) -> list:
        generation = {"few_shot": 6, **({"few_shot_order": order} if order else {})}
        spec = parse_spec({"task_type": "classification", "labels": LABELS, "teacher": {"model": "m"},
                           "student": {"model": "s"}, "training_data": "train.jsonl", "generation": generation},
                          "job.yaml", tmp_path)
        inputs = prepare_inputs(spec)
        return few_shot_examples(spec, inputs.task, inputs.examples["train"])

    write_jsonl(tmp_path / "train.jsonl", rows(30))
    round_robin, shuffled, default = shots("round_robin"), shots("shuffled"), shots(None)
    assert [e.reference for e in round_robin] == sorted(LABELS) * 2
    assert [e.id for e in default] == [e.id for e in shuffled]
    assert sorted(e.id for e in shuffled) == sorted(e.id for e in round_robin)
    assert [e.reference for e in shuffled] != sorted(LABELS) * 2  # seed 0 shuffles this block


def test_new_settings_keep_finished_jobs_fingerprints(tmp_path):
    """A spec that does not use the new settings hashes as it did before they existed (the values are those of the
    code before them); one that does, does not. The default calibration acts on ranking teachers only."""
    from distilflow.pipeline.stages import stage_fingerprints

    def fingerprint(mode: str = "rank", **generation) -> str:
        data = {"task_type": "classification", "labels": LABELS, "teacher": {"model": "m"}, "student": {"model": "s"},
                "training_data": "train.jsonl", "generation": {"answer_mode": mode, "few_shot": 6, **generation}}
        return stage_fingerprints(parse_spec(data, "job.yaml", tmp_path), {})["generate"]

    before = {"rank": "79aec0befebfaf75", "generate": "9af8196c8fada041"}
    assert fingerprint("generate") == before["generate"]  # a generating teacher: nothing to calibrate
    assert fingerprint("generate", few_shot_order="shuffled") == before["generate"]
    assert fingerprint(calibration="none", few_shot_order="shuffled") == before["rank"]
    assert fingerprint(calibration="none") == before["rank"]
    assert (fingerprint() == before["rank"]) == (GenerationSpec().calibration == "none")  # the default's choice
    assert fingerprint(calibration="content_free") != before["rank"]
    assert fingerprint(calibration="none", few_shot_order="round_robin") != before["rank"]
    assert fingerprint(calibration="prior") != fingerprint(calibration="content_free")
    spec = parse_spec({"task_type": "classification", "labels": LABELS, "teacher": {"model": "m"},
                       "student": {"model": "s"}, "training_data": "train.jsonl"}, "job.yaml", tmp_path)
    assert spec.label_calibration == "none"  # a generating teacher has no label scores to calibrate
    with pytest.raises(SpecError, match="generation.calibration corrects the label scores of one teacher ranking"):
        parse_spec({"task_type": "classification", "labels": LABELS, "teacher": {"model": "m"},
                    "student": {"model": "s"}, "training_data": "train.jsonl",
                    "generation": {"calibration": "content_free"}}, "job.yaml", tmp_path)
    # The default is in every stored spec (public_dict): read back, a generating job's spec is valid as it was.
    assert parse_spec(spec.public_dict(), "job.yaml", tmp_path).label_calibration == "none"


@pytest.mark.slow  # a tiny hf teacher in a CLI process: ~30 s on 2 shared cores
def test_a_calibrated_ranking_teacher_teaches_its_calibrated_labels(tmp_path, tiny_models, monkeypatch):
    """content_free through the teacher stage: three content-free prompts asked and cached beside the inputs, each
    synthetic row's label and soft target calibrated from the stored raw scores, the offsets saved for evaluation,
    and sparse_kd's targets are the calibrated ones."""
    from distilflow.teachers.cache import TeacherCache
    from distilflow.train.sparse_targets import SparseStats, TargetSettings, teacher_target_rows

    teacher = {"model": str(tiny_models["teacher"]), "backend": "hf", "prompt_format": "completion"}
    job = write_job(tmp_path, teacher, tiny_models["student"], few_shot=6, answer_mode="rank",
                    calibration="content_free")
    _, metrics = generate(tmp_path, job, monkeypatch)
    folder = tmp_path / "ws" / "jobs" / "intents"
    assert metrics["requests"] == 39 + 3 + 3  # training and validation inputs, and the content-free ones
    saved = json.loads((folder / "synthetic" / "calibration.json").read_text())
    assert saved == metrics["calibration"] and saved["method"] == "content_free" and saved["labels"] == LABELS
    synthetic = [json.loads(line) for line in (folder / "synthetic" / "train.jsonl").read_text().splitlines()]
    with TeacherCache(folder / "cache" / "teacher.sqlite") as cache:
        for row in synthetic:
            raw = cache.get(row["teacher_key"], with_logprobs=True).top_logprobs[0].logprobs[0]
            expected = calibrate(raw, saved["offsets"])
            assert [round(v, 4) for v in row["label_logprobs"]] == [round(v, 4) for v in expected]
            assert row["messages"][-1]["content"] == LABELS[max(range(3), key=expected.__getitem__)]
    assert "before_calibration" in metrics["label_balance"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["student"])
    settings = TargetSettings(tokenizer, len(tokenizer), 128, "completion", tuple(LABELS))
    raw_row = {k: v for k, v in synthetic[0].items() if k != "label_logprobs"}
    with TeacherCache(folder / "cache" / "teacher.sqlite") as cache:
        calibrated_targets, raw_targets = (teacher_target_rows(cache, [r], settings, SparseStats())[0]
                                           for r in (synthetic[0], raw_row))
    first, raw_first = (next(r for r in t["teacher_topk_logprobs"] if r) for t in (calibrated_targets, raw_targets))
    # The label whose first token is its own keeps its calibrated log-prob as the target (labels sharing one are
    # summed); the raw scores are not what the student learns.
    assert round(min(synthetic[0]["label_logprobs"]), 4) in [round(v, 4) for v in first]
    assert [round(v, 4) for v in first] != [round(v, 4) for v in raw_first]


def test_labels_sharing_a_first_token_are_scored_after_the_cached_prefix(tiny_models):
    """Confusable intents often share a first word (card_arrival, card_linking): each label is then scored whole,
    and still after the few-shot block's cache; the scores are those of the whole prompt, by brute force."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distilflow.models.scoring import PrefixCache, score_labels, shared_prefix

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["teacher"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"]).eval()
    block = "".join(f"Message: message {i}\nLabel: card_arrival\n\n" for i in range(4))
    prompts = [block + f"Message: {text}\nLabel:" for text in ("where is it", "my new card, is it linked yet?")]
    continuations = [" card_arrival", " card_linking", " change_pin"]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    labels = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    assert labels[0][0] == labels[1][0]  # the case this test is about
    prefix = PrefixCache(model, shared_prefix(ids))
    assert prefix.length > 20
    cached = score_labels(model, tokenizer, prompts, continuations, prefix)
    plain = score_labels(model, tokenizer, prompts, continuations)
    brute = []
    for prompt_ids in ids:
        row = []
        for label in labels:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt_ids + label])).logits[0].log_softmax(-1)
            row.append(sum(float(logits[len(prompt_ids) + j - 1, t]) for j, t in enumerate(label)))
        brute.append(row)
    assert torch.allclose(torch.tensor(cached.logprobs), torch.tensor(brute), atol=1e-4)
    assert torch.allclose(torch.tensor(plain.logprobs), torch.tensor(brute), atol=1e-4)
    assert cached.best == plain.best and cached.prompt_tokens == [len(i) for i in ids]
