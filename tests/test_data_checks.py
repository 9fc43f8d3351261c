"""The data checks every job runs in prepare (prepare/): training rows that repeat held-out rows (data.overlap), and
what the report's data section is built from. The teacher is the OpenAI-protocol test server; runs are the real CLI."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, write_jsonl
from openai_server import OpenAIServer, ServerConfig

LABELS = ["card_arrival", "exchange_rate", "pin_blocked"]
TOPICS = ["my card has not arrived", "which exchange rate applies", "my pin is blocked"]
WORDS = ("please", "help", "today", "since", "monday", "again", "urgent", "bank", "branch", "account", "money",
         "travel", "abroad", "phone", "app", "online", "store", "friend", "family", "yesterday", "weekend",
         "order", "payment", "transfer", "salary", "rent", "holiday", "visa", "code", "number")


def intent_rows(n: int, offset: int = 0) -> list[dict]:
    """Distinct messages: the topic of the label, then six words drawn for the row (no two rows look alike)."""
    rows = []
    for i in range(offset, offset + n):
        rng = random.Random(i)
        rows.append({"text": f"{TOPICS[i % 3]} {' '.join(rng.sample(WORDS, 6))} ({i})", "label": LABELS[i % 3]})
    return rows


def label_reply(messages: list[dict]) -> str:
    """A teacher that answers the right label (by the topic words in the last user turn)."""
    text = messages[-1]["content"]
    return next(label for label, words in zip(LABELS, ("arrived", "exchange", "pin")) if words in text)


def write_intents(folder: Path, student: Path, url: str, *, test_rows: list[dict], n_train: int = 24,
                  **sections) -> Path:
    train = intent_rows(n_train)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "validation.jsonl", intent_rows(3, 100))
    write_jsonl(folder / "test.jsonl", test_rows)
    spec = {"name": "intents", "task_type": "classification", "labels": LABELS,
            "teacher": {"backend": "openai", "model": "t", "base_url": url},
            "student": {"model": str(student)},
            "training_data": "train.jsonl", "validation_data": "validation.jsonl", "test_data": "test.jsonl",
            "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "num_epochs": 1},
            "generation": {"max_tokens": 8}, "evaluation": {"max_tokens": 8, "warmup": 0, "bootstrap_samples": 0,
                                                              "throughput": False, "uncached_examples": 0}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def repeated_test_rows() -> list[dict]:
    """Five training rows again (two of them re-typed: case, spacing, a trailing mark), and three new ones."""
    train = intent_rows(24)
    repeats = [dict(train[1]), dict(train[4]), dict(train[9]), dict(train[15]), dict(train[22])]
    repeats[0]["text"] = repeats[0]["text"].upper()
    repeats[1]["text"] = "  " + repeats[1]["text"].replace(" ", "  ") + "!"
    return repeats + intent_rows(3, 200)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def generate_metrics(ws: Path) -> dict:
    shown = run_cli("jobs", "show", "intents", "--json", "--workspace", str(ws))
    return {s["stage"]: s["metrics"] for s in json.loads(shown.stdout)["stages"]}


def test_training_rows_repeated_in_the_test_file_are_dropped_and_said(tmp_path, tiny_models):
    with OpenAIServer(ServerConfig(reply=label_reply)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=repeated_test_rows())
        result = run_cli("generate", str(job), "--workspace", str(tmp_path / "ws"))
        asked = server.stats()["requests"]
    assert result.returncode == 0, result.stderr
    assert "overlap: 5 overlapping training rows (near-duplicates of held-out rows: 5 test;" in flat(result.stderr)
    assert "dropped from training" in flat(result.stderr)
    assert asked == 24 - 5 + 3  # the dropped rows were never sent to the teacher
    synthetic = (tmp_path / "ws" / "jobs" / "intents" / "synthetic" / "train.jsonl").read_text().splitlines()
    ids = {json.loads(line)["id"] for line in synthetic}
    assert len(ids) == 19 and not ids & {"train-2", "train-5", "train-10", "train-16", "train-23"}
    data = generate_metrics(tmp_path / "ws")["prepare"]["data"]
    assert data["given"]["train"] == 24 and data["splits"]["train"]["rows"] == 19
    assert data["overlap"]["training_rows"] == 5 and data["overlap"]["action"] == "drop"
    assert data["overlap"]["examples"][0]["training"].endswith("train.jsonl, line 2")


@pytest.mark.slow  # a whole run (train, evaluate, report): over a minute on two cores
def test_the_report_says_what_the_data_checks_found(tmp_path, tiny_models):
    """A whole run: report.md, report.html and report.json carry the data section (rows, labels, lengths,
    diversity, overlap and what was done), and the balance plot of a classification job."""
    with OpenAIServer(ServerConfig(reply=label_reply)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=repeated_test_rows(),
                            training={"max_steps": 2}, evaluation={"models": ["teacher", "distilled"]})
        result = run_cli("run", str(job), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "ws" / "jobs" / "intents"
    data = json.loads((folder / "report.json").read_text())["data"]
    assert data["given"] == {"train": 24, "validation": 3, "test": 8}
    assert data["splits"]["train"]["rows"] == 19 and data["accepted"]["train"] == 19
    assert data["splits"]["train"]["by_label"] == {"card_arrival": 6, "exchange_rate": 5, "pin_blocked": 8}
    assert data["splits"]["test"]["length_chars"]["max"] >= data["splits"]["test"]["length_chars"]["median"] > 30
    assert 0.3 < data["splits"]["train"]["distinct_2"] <= 1
    assert data["overlap"]["training_rows"] == 5 and data["overlap"]["by_split"] == {"test": 5}
    markdown = flat((folder / "report.md").read_text())
    assert "## Data" in markdown and "Overlap: 5 overlapping training rows (near-duplicates of held-out rows: 5 test;" in markdown
    assert "they were dropped from training" in markdown and "| train | 24 | - | 19 | 19 |" in markdown
    html = (folder / "report.html").read_text()
    assert 'id="data-checks"' in html and "they were dropped from training" in html and 'id="plot-balance"' in html
    assert (folder / "plots" / "balance.svg").exists()


def test_the_data_section_tables_and_sentences(tmp_path, tiny_models):
    """What report.md and report.html draw from prepare's figures and the teacher stage's (fast: no run)."""
    from distilflow.jobspec import load_spec
    from distilflow.prepare import prepare_inputs
    from distilflow.report.data_section import (
        data_lines,
        data_warnings,
        labels_table,
        splits_table,
    )

    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=repeated_test_rows())
    data = {**prepare_inputs(load_spec(job)).summary()["data"], "accepted": {"train": 17},
            "rejected_by_reason": {"not_a_label": 2},
            "written": {"requested": 30, "kept": 28, "by_label": dict.fromkeys(LABELS, 9) | {"pin_blocked": 10},
                        "dropped": {"near_duplicate": 2}}}
    header, rows = splits_table(data)
    assert rows[0][:5] == ["train", "24", "28 of 30", "19", "17"] and rows[2][:4] == ["test", "8", "-", "8"]
    header, rows = labels_table(data)
    assert header == ["label", "train", "validation", "test", "written"]
    assert rows[0] == ["card_arrival", "6", "1", "3", "9"]
    lines = data_lines(data)
    assert lines[0].startswith("Overlap: 5 overlapping training rows (near-duplicates of held-out rows: 5 test;")
    assert lines[0].endswith("they were dropped from training.")
    assert "Teacher answers rejected: not_a_label 2." in lines and "Written inputs dropped: near_duplicate 2." in lines
    assert data_warnings({"data": data}) == []  # dropped: nothing inflated
    assert "held-out figures" in data_warnings({"data": {"overlap": {**data["overlap"], "action": "warn"}}})[0]


def test_overlap_fail_stops_before_any_teacher_request(tmp_path, tiny_models):
    with OpenAIServer(ServerConfig(reply=label_reply)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=repeated_test_rows(),
                            data={"overlap": "fail"})
        result = run_cli("run", str(job), "--workspace", str(tmp_path / "ws"))
        asked = server.stats()["requests"]
    assert result.returncode != 0 and asked == 0
    message = flat(result.stderr)
    assert "overlap: 5 overlapping training rows" in message and "nothing was sent to the teacher" in message
    assert "train.jsonl, line 2" in message and "test.jsonl, line 1" in message


def test_overlap_warn_keeps_the_rows_and_says_the_figures_are_inflated(tmp_path, tiny_models, caplog):
    from distilflow.jobspec import load_spec
    from distilflow.prepare import prepare_inputs

    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=repeated_test_rows(),
                        data={"overlap": "warn"})
    inputs = prepare_inputs(load_spec(job))
    assert len(inputs.examples["train"]) == 24 and "prepared" not in inputs.data_hashes
    assert "5 overlapping training rows" in caplog.text and "held-out figures are inflated" in caplog.text
    assert inputs.summary()["data"]["overlap"]["by_split"] == {"test": 5}


def test_a_job_without_overlap_keeps_its_fingerprints(tmp_path, tiny_models):
    """The check adds nothing to the stage fingerprints when it finds nothing: finished jobs are not redone."""
    from distilflow.jobspec import load_spec
    from distilflow.pipeline.stages import stage_fingerprints
    from distilflow.prepare import prepare_inputs

    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=intent_rows(4, 300))
    spec = load_spec(job)
    inputs = prepare_inputs(spec)
    assert set(inputs.data_hashes) == {"train", "validation", "test"}
    before = stage_fingerprints(spec, inputs.data_hashes)
    write_jsonl(tmp_path / "test.jsonl", repeated_test_rows())
    after = stage_fingerprints(spec, prepare_inputs(spec).data_hashes)
    assert after["generate"] != before["generate"]  # rows left training: the teacher stage's inputs changed


# ----- the files people have ----------------------------------------------------------------------------------


def test_a_banking77_style_csv_and_a_bom_file_run_as_they_are(tmp_path, tiny_models):
    """`text,category` as Banking77 ships it (quoted commas, a BOM from Excel), a JSONL test file with a BOM."""
    lines = ["text,category"] + [f'"{r["text"]}, thanks",{r["label"]}' for r in intent_rows(12)]
    lines.append('"my card has not arrived, no label yet",')
    (tmp_path / "train.csv").write_text("\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    with OpenAIServer(ServerConfig(reply=label_reply)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=intent_rows(3, 200),
                            training_data="train.csv")
        (tmp_path / "test.jsonl").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "test.jsonl").read_bytes())
        result = run_cli("generate", str(job), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in
            (tmp_path / "ws" / "jobs" / "intents" / "synthetic" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 13 and rows[0]["source"]["line"] == 2 and rows[0]["reference"] == "card_arrival"
    assert rows[0]["messages"][0]["content"].endswith(", thanks\nLabel:")
    assert rows[-1]["reference"] is None  # the empty cell: an unlabelled row


def _read(path: Path, text: str, task=None):
    from distilflow.tasks import get_task, read_examples

    path.write_text(text, encoding="utf-8")
    return read_examples(path, task or get_task("classification"), "train")


def test_a_json_array_is_named_as_such(tmp_path):
    from distilflow.errors import DataError

    rows = intent_rows(2)
    for text in (json.dumps(rows), json.dumps(rows, indent=2)):
        with pytest.raises(DataError, match="this file is a JSON array; JSONL has one object per line"):
            _read(tmp_path / "rows.jsonl", text)
    with pytest.raises(DataError, match="line 1: this file holds JSON spread over several lines"):
        _read(tmp_path / "rows.jsonl", json.dumps(rows[0], indent=2))


def test_a_label_that_differs_only_in_case_is_an_error_naming_the_spec_spelling(tmp_path):
    from distilflow.errors import DataError
    from distilflow.tasks import get_task

    task = get_task("classification", labels=["greet", "bye"])
    assert _read(tmp_path / "ok.jsonl", '{"text": "hello", "label": "greet"}\n', task)[0].reference == "greet"
    with pytest.raises(DataError) as error:
        _read(tmp_path / "rows.jsonl", '{"text": "hi", "label": "greet"}\n{"text": "hello", "label": "Greet"}\n', task)
    assert "rows.jsonl, line 2: label 'Greet' is spelled 'greet' in the job's labels" in str(error.value)
    with pytest.raises(DataError, match="'Bye' is spelled 'bye' in the training data"):  # labels from training rows
        get_task("classification").for_job({
            "train": _read(tmp_path / "t.jsonl", '{"text": "a", "label": "greet"}\n{"text": "b", "label": "bye"}\n'),
            "test": _read(tmp_path / "s.jsonl", '{"text": "c", "label": "Bye"}\n')})


# ----- size guards --------------------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_teacher_answering_megabytes_to_max_tokens_8_is_rejected_too_long_and_not_stored(tmp_path, tiny_models):
    from distilflow.workspace import JobPaths

    runaway = "card_arrival " + "and more " * 333_334  # 3 MB of words for a request of 8 tokens
    with OpenAIServer(ServerConfig(reply=lambda messages: runaway)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=intent_rows(3, 200), n_train=9)
        result = run_cli("generate", str(job), "--workspace", str(tmp_path / "ws"))
        asked = server.stats()["requests"]
    assert asked == 12 and result.returncode != 0  # nothing left to train on: the stage says why
    assert "every training answer was rejected (12 too_long)" in flat(result.stderr)
    folder = tmp_path / "ws" / "jobs" / "intents"
    rejected = [json.loads(line) for line in (folder / "synthetic" / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 12 and {r["reason"] for r in rejected} == {"too_long"}
    assert rejected[0]["answer"].startswith("card_arrival and more") and "3,000,019 characters" in rejected[0]["answer"]
    assert folder_bytes(folder / "synthetic") < 50_000  # 12 answers of 3 MB would be 36 MB
    assert folder_bytes(folder / "cache") < 1_000_000
    with sqlite3.connect(JobPaths(folder).teacher_cache) as db:  # what a re-run reads instead of asking again
        stored = [json.loads(record) for (record,) in db.execute("SELECT record FROM answers")]
    assert len(stored) == 12
    assert all(r["finish_reasons"] == ["too_long"] and len(r["texts"][0]) < 1000 for r in stored)


def test_answer_size_counts_tokens_with_a_margin_for_the_estimate():
    from distilflow.generate.answer_size import answer_too_long, clip_oversized, preview
    from distilflow.teachers.base import TeacherAnswer

    assert not answer_too_long("card_arrival", 8)
    assert not answer_too_long("one two three four five six seven eight nine ten", 8)  # a cut answer: within margin
    assert answer_too_long("word " * 100, 8) and not answer_too_long("word " * 100, 256)
    answer = clip_oversized(TeacherAnswer("k", ["fine", "x" * 1_000_000], finish_reasons=["stop", "stop"]), 8)
    assert answer.texts[0] == "fine" and len(answer.texts[1]) < 1000 and answer.finish_reasons == ["stop", "too_long"]
    assert answer_too_long(answer.texts[1], None) and preview(answer.texts[1]) == answer.texts[1]


def _long_input_job(tmp_path: Path, tiny_models, **sections) -> Path:
    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=intent_rows(3, 200),
                        **sections)
    rows = intent_rows(24)
    rows[6]["text"] = "my card has not arrived " + " ".join(f"word{i}" for i in range(400))  # ~2,800 characters
    write_jsonl(tmp_path / "train.jsonl", rows)
    return job


def test_an_input_longer_than_the_students_max_seq_length_is_refused_or_cut(tmp_path, tiny_models):
    from distilflow.errors import DataError
    from distilflow.jobspec import load_spec
    from distilflow.models import load_tokenizer
    from distilflow.prepare import prepare_inputs

    job = _long_input_job(tmp_path, tiny_models, training={"max_seq_length": 160})
    with pytest.raises(DataError) as error:
        prepare_inputs(load_spec(job))
    message = str(error.value)
    assert "1 input is longer than the student's training.max_seq_length (160) tokens" in message
    assert "train.jsonl, line 7:" in message and "set data.truncate: true" in message
    job = _long_input_job(tmp_path, tiny_models, training={"max_seq_length": 160}, data={"truncate": True})
    inputs = prepare_inputs(load_spec(job))
    cut = inputs.examples["train"][6].messages[-1]["content"]
    tokenizer = load_tokenizer(str(tiny_models["student"]))
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 160 and " … " in cut
    assert cut.startswith("Message: my card has not arrived") and cut.endswith("Label:")  # the instruction survives
    assert inputs.summary()["data"]["truncated"]["rows"] == 1 and "prepared" in inputs.data_hashes


def test_max_tokens_must_fit_the_teachers_context(tmp_path, tiny_models):
    from distilflow.errors import DataError, SpecError
    from distilflow.generate import check_answer_fits
    from distilflow.jobspec import load_spec
    from distilflow.prepare import prepare_inputs

    local = {"backend": "hf", "model": str(tiny_models["teacher"]), "base_url": None}  # its config: 1,024 positions
    job = _long_input_job(tmp_path, tiny_models, teacher=local, generation={"max_tokens": 1000})
    with pytest.raises(DataError, match=r"longer than the teacher's context \(1,024\) less generation.max_tokens"):
        prepare_inputs(load_spec(job))
    job = write_intents(tmp_path, tiny_models["student"], "", test_rows=intent_rows(3, 200), teacher=local,
                        generation={"max_tokens": 2000})
    with pytest.raises(SpecError, match="max_tokens 2,000 does not fit in the context of teacher"):
        check_answer_fits(spec := load_spec(job), spec.teacher)
    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=intent_rows(3, 200),
                        teacher={"context_length": 4096}, generation={"max_tokens": 5000})
    with pytest.raises(SpecError, match=r"\(4,096 tokens\)"):
        check_answer_fits(spec := load_spec(job), spec.teacher)
    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=intent_rows(3, 200),
                        generation={"max_tokens": 10**12})
    with pytest.raises(SpecError, match="1,000,000,000,000 tokens is more than any model's context"):
        load_spec(job)
