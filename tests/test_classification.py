"""The classification task and the teacher prompting built for small teachers: label parsing and scoring, the
label set, few-shot turns in the teacher's prompt only, completion-format prompts, ranking the labels with a
cached shared prefix, and context distillation (the teacher reads its few-shot block, the student does not)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_jsonl
from distilflow.errors import DataError, SpecError
from distilflow.tasks.base import RowError
from distilflow.models.prompts import render_completion
from distilflow.jobspec import parse_spec
from distilflow.tasks import ClassificationTask, get_task

LABELS = ["activate_my_card", "card_arrival", "change_pin"]


def rows(n: int, offset: int = 0, labelled: bool = True) -> list[dict]:
    return [{"text": f"customer message number {i}", **({"label": LABELS[i % 3]} if labelled else {})}
            for i in range(offset, offset + n)]


def spec_for(folder, models, **sections):
    if not (folder / "train.jsonl").exists():
        write_jsonl(folder / "train.jsonl", rows(9) + rows(12, 50, labelled=False))
        write_jsonl(folder / "validation.jsonl", rows(3, 100))
        write_jsonl(folder / "test.jsonl", rows(6, 200))
    data = {"name": "intents", "task_type": "classification",
            "teacher": {"model": str(models["teacher"]), "backend": "hf", "prompt_format": "completion"},
            "student": {"model": str(models["student"]), "prompt_format": "completion"},
            "training_data": "train.jsonl", "validation_data": "validation.jsonl", "test_data": "test.jsonl",
            "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "num_epochs": 1},
            "generation": {"few_shot": 6, "answer_mode": "rank", "verify": "none", "max_tokens": 8},
            "evaluation": {"max_tokens": 8, "warmup": 0, "answer_mode": "rank", "uncached_examples": 3},
            "data": {"overlap": "warn"}}  # "customer message number N": numbered near-duplicates by design
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(data, "job.yaml", folder)


def test_answers_map_to_exactly_one_label():
    task = ClassificationTask(LABELS)
    assert task.extract_answer("Activate my card.") == "activate_my_card"
    assert task.extract_answer("  change-PIN \nbecause the user asks") == "change_pin"
    assert task.extract_answer("I think it is about the card arrival") is None
    assert task.check_teacher_answer("something else", None, verify=True) == "not_a_label"
    assert task.check_teacher_answer("card arrival", "change_pin", verify=True) == "disagrees_with_reference"
    assert task.check_teacher_answer("card arrival", "card_arrival", verify=True) is None


def test_accuracy_and_macro_f1_are_scored_with_sufficient_statistics():
    task = ClassificationTask(LABELS)
    predictions = ["activate_my_card", "activate_my_card", "card_arrival", "nonsense"]
    references = ["activate_my_card", "card_arrival", "card_arrival", "change_pin"]
    stats = task.metric_stats(predictions, references)
    assert stats["accuracy"].value() == pytest.approx(0.5)
    # per label F1: activate 2*1/(2+1+0)=2/3; card_arrival 2*1/(2+0+1)=2/3; change_pin 0 (one miss)
    assert stats["macro_f1"].value() == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert stats["macro_f1"].n == 4


def test_a_task_is_never_changed_a_label_set_gives_a_new_one():
    """with_labels, labels_from and for_test_file return a new task; the one they were asked leaves as it was."""
    from distilflow.tasks import Example

    bare = ClassificationTask()
    named = bare.with_labels(LABELS)
    assert bare.labels == () and bare.extract_answer("change pin") is None
    assert named is not bare and named.labels == tuple(LABELS) and named.extract_answer("change pin") == "change_pin"
    assert named.labels_from(["other"]) is named  # a label set it has is kept
    seen = bare.labels_from(["card_arrival", None, "activate_my_card", "card_arrival"])
    assert seen.labels == ("activate_my_card", "card_arrival") and bare.labels == ()
    test_file = [Example(f"t{i}", [{"role": "user", "content": "x"}], label) for i, label in enumerate(["b", "a"])]
    assert bare.for_test_file(test_file).labels == ("a", "b") and bare.labels == ()
    assert get_task("classification", LABELS).labels == tuple(LABELS)
    with pytest.raises(RowError, match="labels must differ"):
        bare.with_labels(["Change PIN", "change_pin"])
    one_kind = [Example(f"train-{i}", [{"role": "user", "content": "x"}], "a", "train.jsonl", i + 1) for i in range(3)]
    with pytest.raises(DataError, match=r"train.jsonl: a classification job needs its label set"):
        bare.for_job({"train": one_kind})
    assert named.for_job({"train": one_kind}) is named  # the spec's labels: each row was checked as it was read


def test_what_stages_ask_a_classification_task():
    """Rank choices only in answer_mode rank; a confusion matrix per model that answered, for the report."""
    task = ClassificationTask(LABELS)
    assert task.choices("rank") == tuple(LABELS) and task.choices("generate") == ()
    rows = [{"prediction": "change pin", "reference": "change_pin"}, {"prediction": "??", "reference": "change_pin"},
            {"prediction": "card arrival", "reference": None}]
    assert task.report_sections({"distilled": rows, "baseline": []}) == {
        "confusion": {"distilled": {"change_pin": {"change_pin": 1, "not_a_label": 1}}}}


def test_the_label_set_comes_from_the_spec_or_the_training_data(tmp_path, tiny_models):
    from distilflow.prepare import prepare_inputs

    inputs = prepare_inputs(spec_for(tmp_path, tiny_models))
    assert inputs.task.labels == tuple(sorted(LABELS))
    assert sum(e.reference is None for e in inputs.examples["train"]) == 12  # unlabelled rows are welcome
    write_jsonl(tmp_path / "test.jsonl", rows(2, 200) + [{"text": "hi", "label": "lost_card"}])
    with pytest.raises(DataError, match=r"test.jsonl, line 3: label 'lost_card' is not among"):
        prepare_inputs(spec_for(tmp_path, tiny_models))
    with pytest.raises(DataError, match=r"test.jsonl, line 3: label 'lost_card' is not one of the job's labels"):
        prepare_inputs(spec_for(tmp_path, tiny_models, labels=LABELS))


def test_rank_is_refused_where_it_cannot_work(tmp_path, tiny_models):
    with pytest.raises(SpecError, match="needs task_type classification"):
        parse_spec({"task_type": "nli", "teacher": {"model": "t"}, "student": {"model": "s"},
                    "training_data": "x.jsonl", "evaluation": {"answer_mode": "rank"}}, "job.yaml", tmp_path)
    with pytest.raises(SpecError, match="needs a local teacher"):
        spec_for(tmp_path, tiny_models, teacher={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})


def test_few_shot_turns_are_balanced_seeded_and_in_the_cache_key(tmp_path, tiny_models):
    from distilflow.prepare import prepare_inputs
    from distilflow.teachers.requests import build_requests, few_shot_examples, teacher_plan

    spec = spec_for(tmp_path, tiny_models)
    inputs = prepare_inputs(spec)
    shots = few_shot_examples(spec, inputs.task, inputs.examples["train"])
    assert sorted(e.reference for e in shots) == sorted(LABELS * 2)
    assert [e.id for e in shots] == [e.id for e in few_shot_examples(spec, inputs.task, inputs.examples["train"])]
    params, turns = teacher_plan(spec, inputs.task, inputs.examples["train"])
    assert params.choices == tuple(sorted(LABELS))
    assert [m["role"] for m in turns] == ["user", "assistant"] * 6
    prompt = render_completion([*turns, *inputs.examples["test"][0].messages])
    assert prompt.endswith("Message: customer message number 200\nLabel:")
    assert prompt.count("\nLabel: ") == 6  # each shot: "Message: ...\nLabel: label"
    identity = {"backend": "hf", "model": "m"}
    with_shots = build_requests(inputs.examples["test"], spec, identity, params, turns)
    without = build_requests(inputs.examples["test"], spec, identity, params)
    assert all(a.key != b.key for a, b in zip(with_shots, without))


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_ranking_teacher_answers_with_labels_and_their_distribution(tmp_path, tiny_models):
    import torch

    from distilflow.models.scoring import score_labels
    from distilflow.prepare import prepare_inputs
    from distilflow.teachers.hf import HFTeacher
    from distilflow.teachers.requests import build_requests, teacher_plan

    spec = spec_for(tmp_path, tiny_models)
    inputs = prepare_inputs(spec)
    params, turns = teacher_plan(spec, inputs.task, inputs.examples["train"])
    teacher = HFTeacher(spec.teacher)
    requests = build_requests(inputs.examples["test"], spec, teacher.identity(), params, turns)
    answers = list(teacher.generate(requests, params))
    assert {a.key for a in answers} == {r.key for r in requests}
    for answer in answers:
        assert answer.texts[0] in LABELS
        top = answer.top_logprobs[0]
        assert top.tokens == [sorted(LABELS)] and len(top.logprobs[0]) == 3
        assert max(top.logprobs[0]) == top.logprobs[0][sorted(LABELS).index(answer.texts[0])]
    # The shared few-shot prefix is cached once; the scores are those of the whole prompt, recomputed.
    prompts = [teacher.render(r.messages) for r in requests]
    continuations = [teacher.continuation(label) for label in params.choices]
    cached = score_labels(teacher.model, teacher.tokenizer, prompts, continuations, teacher.prefix_cache(prompts))
    assert teacher.prefix_cache(prompts) is not None
    plain = score_labels(teacher.model, teacher.tokenizer, prompts, continuations)
    assert torch.allclose(torch.tensor(cached.logprobs), torch.tensor(plain.logprobs), atol=1e-4)


def test_context_distillation_teacher_reads_its_prefix(tmp_path, tiny_models):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distilflow.models.scoring import PrefixCache

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["teacher"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"]).eval()
    prefix = tokenizer("Message: a\nLabel: change_pin\n\n", add_special_tokens=False)["input_ids"]
    rows_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Message: b\nLabel:", "Message: c")]
    width = max(len(r) for r in rows_ids)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows_ids])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows_ids])
    hidden = PrefixCache(model, prefix).hidden_states(ids, mask)
    for row, tokens in enumerate(rows_ids):
        with torch.no_grad():
            whole = model.base_model(input_ids=torch.tensor([prefix + tokens])).last_hidden_state[0, len(prefix):]
        assert torch.allclose(hidden[row, :len(tokens)], whole, atol=1e-4)


# A whole job, tens of seconds each: both run in CI with the slow tests.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["sparse_kd", "kd"])
def test_a_classification_job_runs_end_to_end(tmp_path, tiny_models, method):
    spec = spec_for(tmp_path, tiny_models, training={"method": method})
    job = tmp_path / "job.yaml"
    import yaml

    job.write_text(yaml.safe_dump(spec.public_dict()))
    result = run_cli("run", str(job), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "ws" / "jobs" / "intents"
    synthetic = [json.loads(line) for line in (folder / "synthetic" / "train.jsonl").read_text().splitlines()]
    assert len(synthetic) == 21 and all(r["messages"][-1]["content"] in LABELS for r in synthetic)
    report = json.loads((folder / "report.json").read_text())
    assert set(report["models"]["distilled"]["task_metrics"]) == {"accuracy", "macro_f1"}
    assert set(report["confusion"]) == {"teacher", "baseline", "distilled"}  # the task's own report section
    teacher = report["models"]["teacher"]
    assert teacher["answer_mode"] == "rank" and teacher["prefix_cache_tokens"] > 100  # its few-shot block, cached
    assert teacher["uncached_examples"] == 3 and teacher["uncached_latency_mean_s"] > 0
    predictions = [json.loads(line) for line in (folder / "eval" / "teacher" / "predictions.jsonl").open()]
    assert all(p["prediction"] in LABELS for p in predictions)  # ranking always answers a label
    if method == "sparse_kd":
        assert "rows_with_teacher_targets" in report["training"]
        assert report["training"]["rows_without_teacher_targets"] == 0
    assert get_task("classification").name == "classification"
