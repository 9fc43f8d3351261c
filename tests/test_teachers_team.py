"""Several teachers in one job (`teachers:` + generation.combine), as a user runs it: two fake OpenAI-compatible
servers on 127.0.0.1, each counting what it was asked; `vote` records agreement and rejects rows without a
majority; the `best_of` cascade asks the second teacher only for the rows the first failed or got wrong; `route`
sends each row to the teacher its rule picks; cost per teacher; adding a teacher asks only the new one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run_cli, write_job
from distilflow.pipeline.runner import run_job
from distilflow.jobs.store import JobStore
from distilflow.jobspec import load_spec
from distilflow.workspace import Workspace
from distilflow.errors import SpecError, StageError
from distilflow.generate.combine import Vote, route_of, vote
from distilflow.jobspec import TeamTeacherSpec
from distilflow.tasks import Example, get_task
from distilflow.teachers.cache import TeacherCache
from openai_server import OpenAIServer, ServerConfig

KEY_ENV = "DISTIL_TEAM_KEY"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-team-test-0123456789")


def math_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    # `level` is what combine: route picks a teacher by; every third row is hard
    return [{"question": f"What is {i} plus one? (q{i})", "answer": str(i + 1),
             "level": "hard" if i % 3 == 0 else "easy"} for i in range(offset, offset + n)]


def server_answers(n: int, offset: int = 0, wrong: tuple[int, ...] = ()) -> dict[str, list[str]]:
    """A math server's answer to each question: right, except those in `wrong` (off by one hundred)."""
    return {f"(q{i})": [f"{i} plus one makes it.\n#### {i + 1 + (100 if i in wrong else 0)}"]
            for i in range(offset, offset + n)}


def teacher(name: str, server: OpenAIServer, **extra: Any) -> dict[str, Any]:
    return {"name": name, "backend": "openai", "model": f"{name}-model", "base_url": server.url,
            "api_key_env": KEY_ENV, "max_retries": 0, **extra}


def team_job(folder: Path, student: Path, teachers: list[dict[str, Any]], combine: str, **sections: Any) -> Path:
    spec = write_job(folder, {"teacher": "unused", "student": student}, task_type="math", rows=math_rows,
                     n_train=9, n_val=0, name="team", **sections)
    data = yaml.safe_load(spec.read_text())
    del data["teacher"]
    data["teachers"] = teachers
    data["generation"] = {**data["generation"], "combine": combine, "min_success_ratio": 0.5}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def asked(server: OpenAIServer) -> set[int]:
    """The question numbers a server was asked (each request's prompt names its q)."""
    return {int(m) for prompt in server.stats()["attempts"] for m in re.findall(r"\(q(\d+)\)", prompt)}


def generate_metrics(workspace: Path) -> dict[str, Any]:
    return JobStore(workspace / "distilflow.db").get("team").stage("generate").metrics


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_vote_keeps_the_agreed_answer_and_rejects_rows_without_a_majority(tmp_path, tiny_models):
    small = ServerConfig(answers=server_answers(9, wrong=(2, 5)))
    big = ServerConfig(answers=server_answers(9, wrong=(5, 7)))
    with OpenAIServer(small) as a, OpenAIServer(big) as b:
        spec = team_job(tmp_path, tiny_models["student"], [teacher("small", a), teacher("big", b)], "vote",
                        generation={"verify": "none"})
        result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
        assert result.returncode == 0, result.stderr
        assert asked(a) == asked(b) == set(range(9))  # every input, both teachers
        assert len(a.stats()["attempts"]) == len(b.stats()["attempts"]) == 9
    synthetic = tmp_path / "ws" / "jobs" / "team" / "synthetic"
    kept = {row["id"]: row for row in read_rows(synthetic / "train.jsonl")}
    rejected = {row["id"]: row for row in read_rows(synthetic / "rejected.jsonl")}
    # q2 and q7 split the two teachers (rows train-3, train-8); q5 is wrong twice, but the same: a majority
    assert set(rejected) == {"train-3", "train-8"}
    assert {r["reason"] for r in rejected.values()} == {"no_majority"}
    assert rejected["train-3"]["votes"] == {"small": "103", "big": "3"} and rejected["train-3"]["agreement"] == 0.5
    assert kept["train-6"]["agreement"] == 1.0 and kept["train-6"]["messages"][-1]["content"].endswith("#### 106")
    assert kept["train-1"]["teacher"] == "small"  # agreeing teachers: the first listed is the one kept
    metrics = generate_metrics(tmp_path / "ws")
    assert metrics["combine"] == "vote" and metrics["rejected_by_reason"] == {"no_majority": 2}
    matrix = metrics["agreement_matrix"]
    assert matrix["small"]["big"] == matrix["big"]["small"] == {"agreement": round(7 / 9, 4), "n": 9}
    assert metrics["teachers"]["small"]["reference_agreement"] == {"rate": round(7 / 9, 4), "n": 9}
    assert metrics["teachers"]["small"]["kept_share"] == 1.0


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_best_of_cascade_asks_the_second_teacher_only_where_the_first_failed(tmp_path, tiny_models):
    cheap = ServerConfig(answers=server_answers(9, wrong=(3,)), fail_always=("(q5)", "(q7)"))
    strong = ServerConfig(answers=server_answers(9))
    prices = {"price_per_million_input_tokens": 1.0, "price_per_million_output_tokens": 2.0}
    with OpenAIServer(cheap) as a, OpenAIServer(strong) as b:
        teachers = [teacher("cheap", a, **prices), teacher("strong", b, price_per_million_input_tokens=30.0,
                                                          price_per_million_output_tokens=60.0)]
        spec = team_job(tmp_path, tiny_models["student"], teachers, "best_of")
        first = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
        assert first.returncode == 0, first.stderr
        assert asked(a) == set(range(9))
        assert asked(b) == {3, 5, 7}  # counted at the second server: only the failed and the wrong rows
        assert sum(b.stats()["attempts"].values()) == 3
        run_job(load_spec(spec), Workspace(tmp_path / "ws"), ["generate"])  # again, from Python
        assert sum(b.stats()["attempts"].values()) == 3  # answers are cached per teacher: nobody is asked twice
    rows = read_rows(tmp_path / "ws" / "jobs" / "team" / "synthetic" / "train.jsonl")
    by_teacher = {row["id"]: row["teacher"] for row in rows}
    assert len(rows) == 9 and {i for i, t in by_teacher.items() if t == "strong"} == {"train-4", "train-6", "train-8"}
    metrics = generate_metrics(tmp_path / "ws")
    cheap_figures, strong_figures = metrics["teachers"]["cheap"], metrics["teachers"]["strong"]
    assert cheap_figures["asked"] == 9 and strong_figures["asked"] == 3 and cheap_figures["failed"] == 2
    assert cheap_figures["kept"] == 6 and strong_figures["kept_share"] == round(3 / 9, 4)
    for figures, (p_in, p_out) in ((cheap_figures, (1.0, 2.0)), (strong_figures, (30.0, 60.0))):
        expected = (figures["prompt_tokens"] * p_in + figures["completion_tokens"] * p_out) / 1e6
        assert figures["cost_usd"] == pytest.approx(expected, rel=1e-4) and figures["cost_usd"] > 0
    assert metrics["cost_usd"] == pytest.approx(cheap_figures["cost_usd"] + strong_figures["cost_usd"], rel=1e-4)
    failed = read_rows(tmp_path / "ws" / "jobs" / "team" / "synthetic" / "failed.jsonl")
    assert {f["teacher"] for f in failed} == {"cheap"} and len(failed) == 2


def test_route_by_field_and_adding_a_teacher_asks_only_the_new_one(tmp_path, tiny_models):
    with OpenAIServer(ServerConfig(answers=server_answers(9))) as a, \
            OpenAIServer(ServerConfig(answers=server_answers(9))) as b:
        routed = [teacher("small", a), teacher("big", b, route={"field": "level", "values": ["hard"]})]
        spec = team_job(tmp_path / "route", tiny_models["student"], routed, "route")
        run_job(load_spec(spec), Workspace(tmp_path / "ws"), ["generate"])
        assert asked(b) == {0, 3, 6} and asked(a) == {1, 2, 4, 5, 7, 8}
        rows = read_rows(tmp_path / "ws" / "jobs" / "team" / "synthetic" / "train.jsonl")
        assert {r["id"] for r in rows if r["teacher"] == "big"} == {"train-1", "train-4", "train-7"}
        # The same job voting: "small" and "big" already answered their rows; only the missing ones are asked.
        spec = team_job(tmp_path / "vote", tiny_models["student"], [teacher("small", a), teacher("big", b)], "vote")
        before_a, before_b = sum(a.stats()["attempts"].values()), sum(b.stats()["attempts"].values())
        run_job(load_spec(spec), Workspace(tmp_path / "ws"), ["generate"])
        assert sum(a.stats()["attempts"].values()) - before_a == 3  # the hard rows, new to it
        assert sum(b.stats()["attempts"].values()) - before_b == 6


def test_too_many_rows_without_any_answer_fail_the_stage_and_keep_the_answers(tmp_path, tiny_models):
    both_fail = tuple(f"(q{i})" for i in range(5))
    with OpenAIServer(ServerConfig(answers=server_answers(9), fail_always=(*both_fail, "(q5)"))) as a, \
            OpenAIServer(ServerConfig(answers=server_answers(9), fail_always=both_fail)) as b:
        spec = team_job(tmp_path, tiny_models["student"], [teacher("small", a), teacher("big", b)], "vote")
        with pytest.raises(StageError) as raised:
            run_job(load_spec(spec), Workspace(tmp_path / "ws"), ["generate"])
    synthetic = tmp_path / "ws" / "jobs" / "team" / "synthetic"
    assert str(raised.value).startswith(  # q5 failed at "small" only: "big" answered it
        "the teachers failed on 5 of 9 inputs (56%), more than generation.min_success_ratio=0.5 allows; the 4 answers "
        "are kept and a re-run asks only for the rest")
    assert str(synthetic / "failed.jsonl") in str(raised.value)
    failed = read_rows(synthetic / "failed.jsonl")
    assert [f["teacher"] for f in failed] == ["small"] * 6 + ["big"] * 5
    assert all(set(f) == {"teacher", "key", "reason", "messages"} for f in failed)
    with TeacherCache(tmp_path / "ws" / "jobs" / "team" / "cache" / "teacher.sqlite") as cache:
        assert cache.count() == 3 + 4  # every answer either teacher gave


def test_route_pattern_and_fallback_and_free_text_vote():
    task = get_task("conversation", None)
    teachers = [TeamTeacherSpec(name="code", model="m1", route={"pattern": r"```|\bdef\b"}),
                TeamTeacherSpec(name="chat", model="m2")]
    code = Example("a", [{"role": "user", "content": "fix: def f(): pass"}])
    chat = Example("b", [{"role": "user", "content": "hello there"}])
    assert route_of(code, teachers) == 0 and route_of(chat, teachers) == 1
    only_rules = [teachers[0], TeamTeacherSpec(name="x", model="m3", route={"field": "level", "values": ["hard"]})]
    assert route_of(chat, only_rules) is None  # no rule matches and there is no fallback: rejected as no_route
    votes = [Vote("a", 1.0, "k1", ["The cat sat on the mat."]), Vote("b", 1.0, "k2", ["A cat sat on a mat."]),
             Vote("c", 1.0, "k3", ["Quantum chromodynamics describes quarks."])]
    kept, record = vote(task, votes)
    assert kept is not None and kept.teacher in ("a", "b") and record["teacher"] == kept.teacher
    assert record["votes"]["c"] < record["votes"]["a"] and 0 < record["agreement"] <= 1
    math = get_task("math", None)
    weighted = [Vote("a", 2.0, "k1", ["#### 3"]), Vote("b", 1.0, "k2", ["#### 4"])]
    kept, record = vote(math, weighted)
    assert kept is not None and kept.teacher == "a" and record["agreement"] == round(2 / 3, 4)


def test_kd_with_two_local_teachers_learns_their_mixture(tmp_path, tiny_models):
    """Two local teachers sharing the student's tokenizer: both answer (vote on free text: the closest by chrF is
    kept), and kd trains against the weighted mixture of their distributions."""
    spec = write_job(tmp_path, tiny_models, n_train=4, n_val=0, n_test=2, name="mixture",
                     training={"method": "kd", "max_steps": 2, "logging_steps": 1, "save_steps": 100},
                     evaluation={"models": ["teacher"], "throughput": False, "bootstrap_samples": 0,
                                 "uncached_examples": 0})
    data = yaml.safe_load(spec.read_text())
    del data["teacher"]
    data["teachers"] = [{"name": "wide", "model": str(tiny_models["teacher"])},
                        {"name": "constant", "model": str(tiny_models["nli_teacher"]), "weight": 2.0}]
    data["generation"]["combine"] = "vote"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    record = run_job(load_spec(spec), Workspace(tmp_path / "ws"))
    assert record is not None and record.status == "completed"
    generate, train = record.stage("generate").metrics, record.stage("train").metrics
    assert generate["teachers"]["wide"]["asked"] == generate["teachers"]["constant"]["asked"] == 4
    assert 0 <= generate["agreement_matrix"]["wide"]["constant"]["agreement"] <= 1
    assert train["kd_teachers"] == {"wide": 1.0, "constant": 2.0} and train["steps"] == 2
    assert train["train_kd_loss"] > 0
    # Each teacher's quality on the test set, share and agreement in the report.
    tested = record.stage("evaluate").metrics
    assert set(tested) == {"teacher", "teacher-constant"} and "bleu" in tested["teacher-constant"]["task_metrics"]
    report = (tmp_path / "ws" / "jobs" / "mixture" / "report.md").read_text()
    section = report.split("## Teachers", 1)[1].split("\n## ", 1)[0]
    assert "| constant |" in section and "test bleu" in section and "### Agreement between teachers" in section
    assert "the first of 2 teachers: wide, constant; combined by vote" in report
    assert "Teachers" in (tmp_path / "ws" / "jobs" / "mixture" / "report.html").read_text()


def test_dry_run_estimates_each_teacher(tmp_path, tiny_models):
    from distilflow.generate.estimate import dry_run_text

    with OpenAIServer() as a, OpenAIServer() as b:
        routed = [teacher("small", a, price_per_million_input_tokens=1.0),
                  teacher("big", b, price_per_million_input_tokens=10.0, route={"field": "level", "values": ["hard"]})]
        spec = team_job(tmp_path, tiny_models["student"], routed, "route")
        text = dry_run_text(load_spec(spec), Workspace(tmp_path / "ws"))
        assert a.stats()["requests"] == b.stats()["requests"] == 0  # nothing sent
    small, big = text.split("--- small ---")[1].split("--- big ---")
    assert "requests to send:  6 " in small and "requests to send:  3 " in big  # each teacher its routed rows
    assert "cost:" in small and "cost:" in big


def test_python_client_takes_several_teachers(tmp_path):
    from distilflow import DistillationJob

    job = DistillationJob(task_type="math", student_model="student", training_data="train.jsonl",
                          teachers=[{"name": "cheap", "model": "m1", "backend": "openai", "base_url": "http://h/v1"},
                                    {"name": "strong", "model": "m2", "backend": "openai", "base_url": "http://h/v1",
                                     "weight": 3}],
                          generation={"combine": "best_of"}, tune={"space": {"kd_alpha": {"low": 0.2, "high": 0.8}}})
    spec = job.to_spec(tmp_path)
    assert [t.name for t in spec.teacher_list()] == ["cheap", "strong"] and spec.teacher.model == "m1"
    assert spec.combine == "best_of" and spec.teachers[1].weight == 3 and spec.tune.space["kd_alpha"].high == 0.8
    with pytest.raises(SpecError, match="either 'teacher' .* or 'teachers'"):
        DistillationJob(task_type="math", student_model="s", training_data="t.jsonl", teacher_model="m0",
                        teachers=job.teachers).to_spec(tmp_path)


@pytest.mark.parametrize("change,message", [
    ({"teacher": {"model": "m0"}}, "give either 'teacher' .* or 'teachers'"),
    ({"teachers": [{"name": "a", "model": "m1"}, {"name": "a", "model": "m2"}]}, "every teacher needs its own name"),
    ({"generation": {"combine": "vote"}, "teachers": None, "teacher": {"model": "m0"}}, "list them under 'teachers'"),
    ({"generation": {"combine": "vote"}, "teachers": [{"name": "a", "model": "m1", "route": {"pattern": "x"}},
                                                      {"name": "b", "model": "m2"}]}, "set it, or drop route"),
    ({"teachers": [{"name": "a", "model": "m1", "route": {"field": "level"}}, {"name": "b", "model": "m2"}]},
     "needs the values"),
    ({"teachers": [{"name": "a", "model": "m1", "backend": "openai"}, {"name": "b", "model": "m2"}]},
     "teachers.a.backend openai needs teachers.a.base_url"),
])
def test_bad_teachers_sections_are_one_clear_sentence(tmp_path, change, message):
    from distilflow.jobspec import parse_spec

    data = {"task_type": "math", "student": {"model": "s"}, "training_data": "t.jsonl",
            "teachers": [{"name": "a", "model": "m1"}, {"name": "b", "model": "m2"}], "generation": {"combine": "route"}}
    data["teachers"][1]["route"] = {"pattern": "hard"}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(SpecError, match=message):
        parse_spec(data, "job.yaml", tmp_path)
