"""task_type extraction: a JSON schema in the spec (inline or a file), teacher answers validated against it (invalid
ones rejected with the reason and what is wrong), field-level scores with intervals; and a whole job whose fake
teacher answers half its rows with invalid JSON: those rows are rejected, the student learns the rest, and every
model is scored."""

from __future__ import annotations

import json
import re

import pytest

from conftest import write_job, write_jsonl
from openai_server import OpenAIServer, ServerConfig

from distilflow.errors import DataError, SpecError
from distilflow.jobspec import load_spec, parse_spec
from distilflow.pipeline.runner import run_job
from distilflow.tasks import get_task, read_examples, task_for_spec
from distilflow.workspace import Workspace

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "amount": {"type": "number"},
                                           "currency": {"type": "string", "enum": ["EUR", "GBP", "USD"]}},
          "required": ["name", "amount"], "additionalProperties": False}


def rows(n: int, offset: int = 0) -> list[dict]:
    names, currencies = ["Ana", "Ben", "Chloe", "Dev"], ["EUR", "GBP", "USD"]
    return [{"text": f"Payment {i}: {names[i % 4]} sent {10 + i} {currencies[i % 3]}.",
             "output": {"name": names[i % 4], "amount": 10 + i, "currency": currencies[i % 3]}}
            for i in range(offset, offset + n)]


def task():
    return get_task("extraction", options={"schema": SCHEMA})


def test_answers_are_read_checked_against_the_schema_and_rejected_with_what_is_wrong():
    t = task()
    good = 'Here it is:\n```json\n{"amount": 12, "name": "Ana", "currency": "EUR"}\n```'
    assert t.extract_answer(good) == '{"amount":12,"currency":"EUR","name":"Ana"}'
    assert t.check_teacher_answer(good, None, verify=True) is None
    assert t.training_answer(good) == '{"amount":12,"currency":"EUR","name":"Ana"}'  # learnt in one form
    assert t.check_teacher_answer('{"name": "Ana", "amount": ', None, False) == "not_json"
    assert "not valid JSON" in t.rejection_detail('{"name": "Ana", "amount": ', "not_json")
    wrong = '{"name": "Ana", "amount": "twelve"}'
    assert t.check_teacher_answer(wrong, None, False) == "schema_mismatch"
    assert t.rejection_detail(wrong, "schema_mismatch").startswith("at $.amount: 'twelve' is not of type 'number'")
    reference = {"name": "Ana", "amount": 12.0, "currency": "EUR"}
    assert t.check_teacher_answer('{"name": "ana", "amount": 12, "currency": "EUR"}', reference, True) is None
    assert t.check_teacher_answer('{"name": "Ben", "amount": 12}', reference, True) == "disagrees_with_reference"


def test_field_scores_count_each_field_and_an_invalid_answer_states_none():
    t = task()
    references = [{"name": "Ana", "amount": 10, "currency": "EUR"}, {"name": "Ben", "amount": 11, "currency": "GBP"},
                  {"name": "Dev", "amount": 13}]
    predictions = ['{"name": "Ana", "amount": 10, "currency": "EUR"}',  # 3 of 3 right
                   '{"name": "Ben", "amount": 12, "currency": "GBP"}',  # 2 of 3 right
                   "no JSON here"]                                      # invalid: states nothing
    scores = {name: stats.value() for name, stats in t.metric_stats(predictions, references).items()}
    assert scores["json_valid"] == pytest.approx(2 / 3) and scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["field_precision"] == pytest.approx(5 / 6) and scores["field_recall"] == pytest.approx(5 / 8)
    assert scores["field_f1"] == pytest.approx(2 * 5 / (6 + 8))
    assert scores["field_accuracy.name"] == pytest.approx(2 / 3) and scores["field_accuracy.amount"] == pytest.approx(1 / 3)
    # Dev's reference has no currency; an invalid answer still gets that field wrong (it states nothing valid).
    assert scores["field_accuracy.currency"] == pytest.approx(2 / 3)


def test_the_schema_comes_inline_or_from_a_file_and_only_with_extraction(tmp_path):
    base = {"task_type": "extraction", "teacher": {"model": "t"}, "student": {"model": "s"}, "training_data": "x.jsonl"}
    (tmp_path / "payment.schema.json").write_text(json.dumps(SCHEMA))
    from_file = parse_spec({**base, "schema": "payment.schema.json"}, "job.yaml", tmp_path)
    assert from_file.json_schema == SCHEMA and task_for_spec(from_file).fields == ["name", "amount", "currency"]
    assert "schema" in from_file.public_dict()  # the stored spec holds the schema itself, under its own key
    with pytest.raises(SpecError, match="needs `schema:`"):
        parse_spec(base, "job.yaml", tmp_path)
    with pytest.raises(SpecError, match="only it takes one"):
        parse_spec({**base, "task_type": "qa", "schema": SCHEMA}, "job.yaml", tmp_path)
    with pytest.raises(SpecError, match="schema: .*missing.json: file not found"):
        parse_spec({**base, "schema": "missing.json"}, "job.yaml", tmp_path)
    with pytest.raises(SpecError, match="not a valid JSON schema"):
        task_for_spec(parse_spec({**base, "schema": {"type": "objekt"}}, "job.yaml", tmp_path))


def test_a_reference_that_breaks_the_schema_stops_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [*rows(2), {"text": "x", "output": {"name": "Ana"}}])
    with pytest.raises(DataError, match=r"train.jsonl, line 3: field 'output' does not follow the schema: at \$: "
                                        r"'amount' is a required property"):
        read_examples(path, task(), "train")


def half_invalid_teacher(messages: list[dict]) -> str:
    """Valid JSON for even payments, broken JSON (or the wrong type) for odd ones."""
    text = messages[-1]["content"]
    number = int(re.search(r"Payment (\d+):", text).group(1))
    name, amount, currency = re.search(r"Payment \d+: (\w+) sent (\d+) (\w+)\.", text).groups()
    if number % 4 == 1:
        return f'{{"name": "{name}", "amount": {amount}'  # cut short: not JSON
    if number % 4 == 3:
        return f'{{"name": "{name}", "amount": "{amount} {currency}"}}'  # JSON, but not the schema's
    return f'Sure! {{"name": "{name}", "amount": {amount}, "currency": "{currency}"}}'


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_job_rejects_the_invalid_teacher_answers_with_their_reason_and_scores_the_rest(tiny_models, tmp_path):
    with OpenAIServer(ServerConfig(reply=half_invalid_teacher)) as server:
        spec = write_job(tmp_path, tiny_models, task_type="extraction", rows=rows, n_train=8, n_val=4, n_test=8,
                         name="extract", schema=SCHEMA,
                         teacher={"model": "fake-teacher", "backend": "openai", "base_url": server.url},
                         generation={"max_tokens": 32},
                         evaluation={"max_tokens": 16, "warmup": 0, "throughput": False, "bootstrap_samples": 200,
                                     "models": ["teacher", "distilled"]})
        assert run_job(load_spec(spec), Workspace(tmp_path / "runs")).status == "completed"
    root = tmp_path / "runs" / "jobs" / "extract"
    rejected = [json.loads(line) for line in (root / "synthetic" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["not_json"] * 3 + ["schema_mismatch"] * 3  # of 12 inputs
    assert all(r["detail"] for r in rejected)
    assert any("'amount'" in r["detail"] or "amount" in r["detail"] for r in rejected if r["reason"] == "schema_mismatch")
    kept = [json.loads(line) for line in (root / "synthetic" / "train.jsonl").read_text().splitlines()]
    assert len(kept) == 4 and all(json.loads(r["messages"][-1]["content"]) == r["reference"] for r in kept)
    report = json.loads((root / "report.json").read_text())
    teacher = report["models"]["teacher"]
    assert teacher["task_metrics"]["json_valid"] == 0.5 and teacher["scored_examples"] == 8
    assert teacher["task_metrics"]["exact_match"] == 0.5 and teacher["intervals"]["field_f1"]["n"] == 8
    assert teacher["task_metrics"]["field_accuracy.currency"] == 0.5
    assert report["primary_metric"] == "field_f1" and "field_f1" in report["models"]["distilled"]["task_metrics"]
    markdown = (root / "report.md").read_text()
    assert "## More metrics" in markdown and "field_accuracy.amount" in markdown
    assert "schema_mismatch" in markdown and "not_json" in markdown
    assert load_spec(root / "spec.yaml").json_schema == SCHEMA  # the stored spec keeps the schema
