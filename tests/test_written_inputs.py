"""Training inputs written by the teacher (`inputs:`): a job with 5 labelled rows per label and a fake
OpenAI-protocol teacher that writes numbered lists (with duplicates and copies of given rows) and labels messages by
the label words they contain; and a tiny local teacher writing through the completion prompt form."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from conftest import write_jsonl
from openai_server import OpenAIServer, ServerConfig

from distilflow.generate.directives import parse_numbered
from distilflow.generate.estimate import estimate_generate, format_estimate
from distilflow.jobspec import parse_spec
from distilflow.metrics.near_duplicates import similarity
from distilflow.pipeline.runner import run_job
from distilflow.teachers.cache import TeacherCache
from distilflow.workspace import Workspace

LABELS = ["card_arrival", "change_pin", "lost_card"]
WORDS = ["when", "where", "why", "how", "please", "quickly", "today", "yesterday", "again", "still", "never", "really", "maybe", "honestly", "urgent", "account", "phone", "bank", "app", "branch", "number", "money", "week", "month", "morning", "evening", "help", "question", "problem"]
TEST_TEXT = "my new card never showed up in the post, where is it"
_ABOUT = re.compile(r"Every message below is about: (.+)\.")


def words_of(label: str) -> str:
    return label.replace("_", " ")


def fake_teacher(messages: list[dict]) -> str:
    """Writes a numbered list for a writing request (item 1 repeats across requests, item 2 copies the first
    example shown, lost-card requests copy a test message, change-pin requests mention card arrival once);
    answers any other prompt with the label whose words its message contains."""
    prompt = messages[-1]["content"]
    about = _ABOUT.search(prompt)
    if about is None:
        message = prompt.split("Message:", 1)[-1]
        return next((label for label in LABELS if words_of(label) in message), LABELS[0])
    target, digest = about.group(1), hashlib.sha256(prompt.encode()).digest()
    shown = re.findall(r"^- (.+)$", prompt, re.MULTILINE)
    items = [f"I need help with my {target}", shown[0]]
    items.append(TEST_TEXT if target == "lost card" else f"{target} {WORDS[digest[0] % len(WORDS)]} twice")
    for i in range(3, 5):
        other = "card arrival" if target == "change pin" and i == 4 else target
        items.append(" ".join(WORDS[b % len(WORDS)] for b in digest[i * 5:i * 5 + 5]) + f" about {other}")
    return "\n".join(f"{n}. {text}" for n, text in enumerate(items, 1))


def job(tmp_path, server: OpenAIServer, models, **inputs):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"seed message {i} on {words_of(label)}", "label": label}
                                           for label in LABELS for i in range(5)])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": f"validation on {words_of(label)}", "label": label}
                                                for label in LABELS])
    write_jsonl(tmp_path / "test.jsonl", [{"text": TEST_TEXT, "label": "card_arrival"}])
    data = {"name": "written", "task_type": "classification", "labels": LABELS,
            "teacher": {"backend": "openai", "model": "writer-teacher", "base_url": server.url,
                        "api_key_env": "DISTIL_TEST_KEY", "prompt_format": "chat",
                        "price_per_million_input_tokens": 1.0, "price_per_million_output_tokens": 2.0},
            "student": {"model": str(models["student"])},
            "training_data": "train.jsonl", "validation_data": "validation.jsonl", "test_data": "test.jsonl",
            "generation": {"verify": "none", "max_tokens": 8},
            "inputs": {"count": 30, "description": "Messages customers send to a bank's support chat.",
                       "per_request": 5, **inputs}}
    return parse_spec(data, "job.yaml", tmp_path)


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def generate_metrics(workspace: Workspace) -> dict:
    from distilflow.jobs.store import JobStore

    return JobStore(workspace.db_path).get("written").stage("generate").metrics


def test_written_inputs_are_spread_over_labels_deduplicated_stored_and_resumed(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("DISTIL_TEST_KEY", "sk-test")
    with OpenAIServer(ServerConfig(reply=fake_teacher)) as server:
        spec = job(tmp_path, server, tiny_models)
        workspace = Workspace(tmp_path / "runs")
        priced = estimate_generate(spec, workspace)
        assert server.stats()["requests"] == 0  # the dry run sends nothing
        assert priced["writing"]["requests"] == 9  # 10 per label, 5 a request, 20% more: 3 requests per label
        assert priced["rows"]["written"] == 30 and priced["writing"]["cost_usd_max"] > 0
        assert "writing inputs:    9 requests" in format_estimate(priced)

        assert run_job(spec, workspace, ["generate"]).stage("generate").status == "completed"
        asked = server.stats()["requests"]
        paths = workspace.job("written")
        written = read_rows(paths.written_inputs)
        figures = generate_metrics(workspace)["written_inputs"]

        # 10 written for each label; the teacher's labels decide the training label, and differences are counted
        assert figures["requested"] == 30 and figures["kept"] == 30 == len(written)
        assert figures["written_for"] == {label: 10 for label in LABELS}
        mislabelled = [r for r in written if r["written_for"] == "change_pin" and "card arrival" in r["text"]]
        assert mislabelled and figures["relabelled"] == len(mislabelled)
        assert figures["by_label"]["card_arrival"] == 10 + len(mislabelled)
        assert sum(figures["by_label"].values()) == 30 == figures["answered"]
        train = {r["id"]: r for r in read_rows(paths.synthetic_split("train")) if r["id"].startswith("written-")}
        assert train[mislabelled[0]["id"]]["messages"][-1]["content"] == "card_arrival"

        # duplicates of each other and copies of given rows (training seeds, the test message) are dropped
        assert figures["dropped"]["duplicate"] >= 2 and figures["dropped"]["near_given"] >= 9
        given = [r["text"] for name in ("train", "validation", "test") for r in read_rows(tmp_path / f"{name}.jsonl")]
        texts = [r["text"] for r in written]
        assert all(similarity(a, b) < 0.8 for a in texts for b in given)
        assert all(similarity(a, b) < 0.8 for i, a in enumerate(texts) for b in texts[i + 1:])
        assert any(r["reason"] == "near_given" and r["text"] == TEST_TEXT for r in read_rows(paths.written_dropped))

        # provenance: the directive and the seeds each input's request showed, and that request in the cache
        seed_ids = {f"train-{i}" for i in range(1, 16)}
        with TeacherCache(paths.teacher_cache) as cache:
            for row in written:
                assert set(row["directive"]) == {"persona", "tone", "length", "noise", "edge_case"}
                assert row["seeds_shown"] and set(row["seeds_shown"]) <= seed_ids
                assert cache.get(row["request"]) is not None

        # resume: a re-run of the stage asks nothing again, and writes the same inputs
        assert run_job(spec, workspace, ["generate"]).stage("generate").status == "completed"
        assert server.stats()["requests"] == asked
        assert read_rows(paths.written_inputs) == written
        assert estimate_generate(spec, workspace)["writing"]["cached"] == 9


def test_the_rewrite_round_makes_some_inputs_over(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("DISTIL_TEST_KEY", "sk-test")

    def teacher(messages: list[dict]) -> str:
        prompt = messages[-1]["content"]
        if prompt.startswith("Messages") and "Rewrite this one" in prompt:
            return "Honestly, regarding " + prompt.rsplit("\n", 1)[-1] + ", what exactly happens next week?"
        return fake_teacher(messages)

    with OpenAIServer(ServerConfig(reply=teacher)) as server:
        spec = job(tmp_path, server, tiny_models, rewrite=0.5)
        assert run_job(spec, Workspace(tmp_path / "runs"), ["generate"]).stage("generate").status == "completed"
    written = read_rows(Workspace(tmp_path / "runs").job("written").written_inputs)
    rewritten = [r for r in written if "rewritten_from" in r]
    kept_original = generate_metrics(Workspace(tmp_path / "runs"))["written_inputs"]["dropped"].get(
        "rewrite_kept_original", 0)  # a rewrite near another input leaves the original
    assert len(rewritten) + kept_original == 15 and len(rewritten) >= 12
    assert all(r["text"].startswith("Honestly, regarding ") and r["rewritten_from"] in r["text"] for r in rewritten)


def test_a_completion_prompt_is_a_numbered_list_the_writer_continues():
    assert parse_numbered(" where is my card\n5. card not here\n6.  \"still waiting\"\nThat is all.",
                          "completion", 4, 10) == ["where is my card", "card not here", "still waiting"]
    assert parse_numbered("Sure! Here they are:\n1. one\n2) two\n\n3. three", "chat", 1, 2) == ["one", "two"]


@pytest.mark.slow  # ~35 s on two shared cores (a local model writes, then labels)
def test_a_local_teacher_writes_through_the_completion_form(tmp_path, tiny_models):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"seed message {i} on {words_of(label)}", "label": label}
                                           for label in LABELS for i in range(5)])
    data = {"name": "local", "task_type": "classification", "labels": LABELS,
            "teacher": {"model": str(tiny_models["teacher"]), "backend": "hf", "prompt_format": "completion"},
            "student": {"model": str(tiny_models["student"])}, "training_data": "train.jsonl",
            "generation": {"verify": "none", "answer_mode": "rank", "max_tokens": 8},
            "inputs": {"count": 6, "description": "Messages to a bank.", "per_request": 2, "max_tokens": 24}}
    spec = parse_spec(data, "job.yaml", tmp_path)
    workspace = Workspace(tmp_path / "runs")
    assert run_job(spec, workspace, ["generate"]).stage("generate").status == "completed"
    paths = workspace.job("local")
    written = read_rows(paths.written_inputs)
    assert written and {r["written_for"] for r in written} <= set(LABELS)
    writing = estimate_generate(spec, workspace)["writing"]  # the first round, all answered now
    assert (writing["prompt_format"], writing["cached"], writing["requests"]) == ("completion", 6, 0)
    with TeacherCache(paths.teacher_cache) as cache:
        assert all(cache.get(r["request"]) is not None for r in written)
    train = [r for r in read_rows(paths.synthetic_split("train")) if r["id"].startswith("written-")]
    assert len(train) == len(written) and all(r["messages"][-1]["content"] in LABELS for r in train)
