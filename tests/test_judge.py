"""The judge in the evaluation stage, with scripted judges on 127.0.0.1 whose behaviour is known in advance: a judge
that always picks the first answer (every pair a tie, every pair flips with the order, reported unreliable), one
that prefers the longer answer (win / tie / loss exactly as the lengths say, in both orders), one that scores by a
hidden key (judged retention and its interval as the key implies); a re-run pays the judge nothing; a judge that is
down fails the stage in one sentence and the models' results stay.

One job (recorded teacher answers of known lengths, tiny students) is run once; each judge then re-runs only the
evaluate and report stages: the models are not asked again (their results are reused), only the judge is."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from conftest import conversation_rows, run_cli, write_job, write_jsonl
from llama_server import free_port
from openai_server import OpenAIServer, ServerConfig

from distilflow.jobspec import load_spec
from distilflow.pipeline.runner import run_job
from distilflow.workspace import Workspace

N_TEST = 12


STUDENT_ANSWER = " ".join(["entailment"] * 8)  # what the constant students say to everything (8 tokens)


def teacher_answer(i: int) -> str:
    """Shorter than the students' answer, longer, or as long, in turn (and every other one of 4 words or more)."""
    return ["Fine, thanks.", "Thanks for asking, I am well today" + " and rested" * (i % 7 + 6),
            STUDENT_ANSWER][i % 3]


def blocks(messages: list[dict]) -> tuple[str, ...]:
    """The answers of a judge request, as the wire contract puts them at the end of its last user message."""
    text = messages[-1]["content"]
    if "\n### Answer B\n" in text:
        head, second = text.rsplit("\n### Answer B\n", 1)
        return head.rsplit("\n### Answer A\n", 1)[1].strip(), second.strip()
    return (text.rsplit("\n### Answer\n", 1)[1].strip(),)


def always_first(messages: list[dict]) -> str:
    return "A\nThe first one reads better." if len(blocks(messages)) == 2 else "Score: 3\nFine."


def prefer_longer(messages: list[dict]) -> str:
    found = blocks(messages)
    if len(found) == 1:
        return f"Score: {min(5, 1 + len(found[0].split()) // 3)}\nLonger is better."
    a, b = found
    return "tie\nAs long." if len(a) == len(b) else ("A\nLonger." if len(a) > len(b) else "B\nLonger.")


def hidden_score(answer: str) -> int:
    return 1 + int(hashlib.sha256(answer.encode()).hexdigest(), 16) % 5


def by_hidden_key(messages: list[dict]) -> str:
    found = blocks(messages)
    if len(found) == 1:
        return f"Score: {hidden_score(found[0])}\nBy the key."
    a, b = (hidden_score(x) for x in found)
    return "tie" if a == b else ("A" if a > b else "B")


@pytest.fixture(scope="module")
def job(tiny_models, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("judged-job")
    recorded = [{"messages": [{"role": "user", "content": row["messages"][0]["content"]}], "response": teacher_answer(i)}
                for i, row in enumerate(conversation_rows(8) + conversation_rows(2, 100) + conversation_rows(N_TEST, 200))]
    write_jsonl(folder / "recorded.jsonl", recorded)
    # The students always say "entailment" (a constant model; a learning rate too small to change it): answers of
    # known length against the teacher's.
    spec = write_job(folder, tiny_models, name="judged", n_train=8, n_val=2, n_test=N_TEST,
                     teacher={"model": "recorded", "backend": "recorded", "path": "recorded.jsonl"},
                     student={"model": str(tiny_models["nli_teacher"])},
                     hyperparameters={"learning_rate": 1e-9, "batch_size": 2, "num_epochs": 1},
                     evaluation={"max_tokens": 8, "warmup": 0, "batch_size": 4, "bootstrap_samples": 200,
                                 "throughput": False})
    workspace = folder / "runs"
    assert run_job(load_spec(spec), Workspace(workspace)).status == "completed"
    root = workspace / "jobs" / "judged"
    answers = {label: {r["id"]: r["prediction"] for r in map(json.loads, (root / "eval" / label / "predictions.jsonl")
                                                             .read_text().splitlines())}
               for label in ("teacher", "baseline", "distilled")}
    return {"folder": folder, "spec": spec, "workspace": workspace, "root": root, "answers": answers}


def judged_run(job: dict, server: OpenAIServer, model: str, **judge) -> dict:
    """The job's evaluate and report stages again, with this judge (its model name keys its replies in the cache);
    report.json."""
    data = yaml.safe_load(job["spec"].read_text())
    data["evaluation"]["judge"] = {"model": model, "backend": "openai", "base_url": server.url, "controls": 4, **judge}
    path = job["folder"] / "judged.yaml"
    path.write_text(yaml.safe_dump(data))
    run_job(load_spec(path), Workspace(job["workspace"]), ["evaluate", "report"])
    return json.loads((job["root"] / "report.json").read_text())


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_judge_that_always_picks_the_first_answer_ties_everything_and_is_called_unreliable(job):
    with OpenAIServer(ServerConfig(reply=always_first)) as server:
        report = judged_run(job, server, "first-picker")
    judge = report["judge"]
    for label in ("baseline", "distilled"):
        figures = judge["models"][label]
        assert figures["tie"] == 1.0 and figures["win"] == 0.0 and figures["loss"] == 0.0
        assert figures["n"] == N_TEST and figures["intervals"]["tie"]["low"] == 1.0
    controls = judge["controls"]
    assert controls["order_flip_rate"] == 1.0 and controls["self_tie_rate"] == 0.0
    assert controls["corrupted_loss_rate"] == 0.0 and controls["reliable"] is False
    markdown = (job["root"] / "report.md").read_text()
    top = markdown.split("## Summary")[0]
    assert "judge judge (first-picker) is not reliable" in top and "100%" in top
    # Generative task with a judge: the judged figures are the headline, ties shown as ties.
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    assert summary.index("Judged by judge") < summary.index("Retention (distilled / teacher")
    assert "tie 100.0%" in summary and "judge not reliable" in summary
    assert "not reliable" in (job["root"] / "report.html").read_text()


def test_a_judge_that_prefers_the_longer_answer_decides_as_the_lengths_say_in_both_orders(job):
    with OpenAIServer(ServerConfig(reply=prefer_longer)) as server:
        report = judged_run(job, server, "length-judge", mode="both")
    teacher = job["answers"]["teacher"]
    for label in ("baseline", "distilled"):
        mine = job["answers"][label]
        expected = ["win" if len(mine[i].strip()) > len(teacher[i].strip()) else
                    "loss" if len(mine[i].strip()) < len(teacher[i].strip()) else "tie" for i in teacher]
        assert all(a.strip() == STUDENT_ANSWER for a in mine.values())
        assert [expected.count(k) for k in ("win", "tie", "loss")] == [4, 4, 4]
        figures = report["judge"]["models"][label]
        for kind in ("win", "tie", "loss"):
            assert figures[kind] == pytest.approx(expected.count(kind) / N_TEST), (label, kind)
    rows = [json.loads(line) for line in (job["root"] / "eval" / "judge" / "judge" / "verdicts.jsonl")
            .read_text().splitlines()]
    pairs: dict = {}
    for row in rows:
        if row["kind"] == "pairwise" and not row["group"].startswith("control"):
            pairs.setdefault((row["group"], row["id"]), {})[row["order"]] = row["outcome"]
    assert len(pairs) == 2 * N_TEST and all(p[0] == p[1] for p in pairs.values())  # both orders agree
    controls = report["judge"]["controls"]
    assert controls["order_flip_rate"] == 0.0 and controls["self_tie_rate"] == 1.0
    # A length judge cannot tell shuffled words from the answer: the controls say so.
    assert controls["corrupted_loss_rate_by_kind"] == {"shuffled": 0.0, "truncated": 1.0}
    assert controls["reliable"] is False
    assert report["judge"]["models"]["teacher"]["rubric"]["n"] == N_TEST


def test_judged_retention_and_its_interval_are_what_a_hidden_key_implies(job):
    with OpenAIServer(ServerConfig(reply=by_hidden_key)) as server:
        report = judged_run(job, server, "key-judge", mode="rubric")
    teacher = {i: hidden_score(a.strip()) for i, a in job["answers"]["teacher"].items()}
    distilled = {i: hidden_score(a.strip()) for i, a in job["answers"]["distilled"].items()}
    judge = report["judge"]
    retention = judge["retention"]["distilled"]
    assert retention["value"] == pytest.approx(sum(distilled.values()) / sum(teacher.values()))
    assert retention["n"] == N_TEST and retention["low"] <= retention["value"] <= retention["high"]
    # The interval is the ratio's over resampled inputs: within the extremes of any resample of these pairs.
    ratios = [distilled[i] / teacher[i] for i in teacher]
    assert min(ratios) <= retention["low"] and retention["high"] <= max(ratios)
    mean = judge["models"]["distilled"]["rubric"]
    assert mean["mean"] == pytest.approx(sum(distilled.values()) / N_TEST) and mean["unreadable"] == 0
    assert "win" not in judge["models"]["distilled"]  # rubric only: no pairwise shares
    assert judge["controls"]["self_tie_rate"] is None and judge["controls"]["order_flip_rate"] is None


def test_a_rerun_pays_the_judge_nothing(job):
    with OpenAIServer(ServerConfig(reply=prefer_longer)) as server:
        judged_run(job, server, "paid-once")
        asked = server.stats()["answers"]
        assert asked > 0
        report = judged_run(job, server, "paid-once")
        assert server.stats()["answers"] == asked
    assert report["judge"]["usage"]["this_run"]["asked"] == 0


def test_unreadable_replies_are_asked_once_more_then_counted_apart(job):
    def mumbles(messages: list[dict]) -> str:
        text = messages[-1]["content"]
        return "Hmm, hard to say." if "could not be read" not in text or "Hello number 201" in text else "B"

    with OpenAIServer(ServerConfig(reply=mumbles)) as server:
        report = judged_run(job, server, "mumbler")
    distilled = report["judge"]["models"]["distilled"]
    assert distilled["unreadable"] == 1 and distilled["n"] == N_TEST - 1  # input 201 stayed unreadable
    # Read on the retry, "B" in both orders: the student loses one order and wins the other, a tie.
    assert distilled["tie"] == 1.0
    rows = [json.loads(line) for line in (job["root"] / "eval" / "judge" / "judge" / "verdicts.jsonl")
            .read_text().splitlines()]
    assert all(r["retried"] and len(r["replies"]) == 2 for r in rows)


def test_a_judge_that_is_down_fails_the_stage_in_one_sentence_and_keeps_the_results(job):
    data = yaml.safe_load(job["spec"].read_text())
    data["evaluation"]["judge"] = {"model": "judge-model", "backend": "openai",
                                   "base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0,
                                   "max_consecutive_failures": 3}
    path = job["folder"] / "judge-down.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_cli("evaluate", str(path), "--workspace", str(job["workspace"]))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "judge" in message and "connect" in message and "Traceback" not in result.stderr
    for label in ("teacher", "baseline", "distilled"):
        metrics = json.loads((job["root"] / "eval" / label / "metrics.json").read_text())
        assert metrics["evaluated"] is True and (job["root"] / "eval" / label / "predictions.jsonl").exists()


def test_the_dry_run_prices_the_judge_requests_and_knows_the_ones_already_answered(job):
    from distilflow.evaluate.judge_estimate import judge_dry_run_text

    def dry_run(model: str, cli: bool = False) -> str:
        data = yaml.safe_load(job["spec"].read_text())
        data["evaluation"]["judge"] = {"model": model, "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                       "controls": 4, "price_per_million_input_tokens": 2.0,
                                       "price_per_million_output_tokens": 8.0}
        path = job["folder"] / "dry.yaml"
        path.write_text(yaml.safe_dump(data))
        if not cli:
            return judge_dry_run_text(load_spec(path), Workspace(job["workspace"]))
        result = run_cli("generate", str(path), "--dry-run", "--workspace", str(job["workspace"]))
        assert result.returncode == 0, result.stderr
        assert "dry run: nothing was sent to the teacher" in result.stdout  # the teacher's block, then the judge's
        return result.stdout

    # Pairwise: 2 students x 12 inputs x 2 orders and 4 control inputs x (self, shuffled, cut) x 2 orders, each
    # distinct request once (the two constant students give the same answers: their requests are the same).
    before = dry_run("priced-judge", cli=True)
    found = re.search(r"judge requests: +(\d+) \((\d+) of them on 4 control inputs", before)
    assert found and int(found.group(2)) <= 24
    requests = int(found.group(1))
    assert f"requests to send:  {requests}" in before and f"(max_tokens 64 x {requests})" in before
    assert "cost:              ~$0.0" in before and "unknown" not in before.split("judge judge")[1]
    with OpenAIServer(ServerConfig(reply=prefer_longer)) as server:
        judged_run(job, server, "priced-judge")
        assert server.stats()["answers"] == requests  # what the dry run said would be sent
    after = dry_run("priced-judge")
    assert f"already answered:  {requests}" in after and "requests to send:  0" in after


@pytest.mark.slow
def test_a_real_llama_cpp_judge_is_asked_through_the_wire_contract_and_its_controls_are_reported(job):
    """SmolLM2-135M-Instruct served by llama.cpp judges the job: every reply is a verdict, a score or counted apart,
    and its controls say whether to believe it (a 135M model is expected not to pass them)."""
    from llama_server import MODEL_ALIAS, llama_cpp_server

    with llama_cpp_server(n_ctx=2048) as url:
        data = yaml.safe_load(job["spec"].read_text())
        data["evaluation"]["judge"] = {"model": MODEL_ALIAS, "backend": "openai", "base_url": url, "mode": "both",
                                       "controls": 4, "max_tokens": 16, "max_concurrency": 2}
        path = job["folder"] / "llama-judge.yaml"
        path.write_text(yaml.safe_dump(data))
        run_job(load_spec(path), Workspace(job["workspace"]), ["evaluate", "report"])
    report = json.loads((job["root"] / "report.json").read_text())
    judge = report["judge"]
    rows = [json.loads(line) for line in (job["root"] / "eval" / "judge" / "judge" / "verdicts.jsonl")
            .read_text().splitlines()]
    assert rows and all(r["replies"] and all(isinstance(t, str) for t in r["replies"]) for r in rows)
    assert all(r["readable"] == (r["verdict"] is not None or r["score"] is not None) for r in rows)
    assert all(r["retried"] for r in rows if not r["readable"])  # an unreadable reply was asked twice
    distilled = judge["models"]["distilled"]
    assert distilled["n"] + distilled["unreadable"] == N_TEST
    assert isinstance(judge["controls"]["reliable"], bool) and judge["controls"]["n"] == 4
    if not judge["controls"]["reliable"]:
        assert "is not reliable for this task" in (job["root"] / "report.md").read_text().split("## Summary")[0]


def test_several_judges_are_each_reported_with_their_agreement(job):
    with OpenAIServer(ServerConfig(reply=always_first)) as first, \
            OpenAIServer(ServerConfig(reply=prefer_longer)) as longer:
        data = yaml.safe_load(job["spec"].read_text())
        data["evaluation"]["judge"] = [
            {"name": "first", "model": "first-picker", "backend": "openai", "base_url": first.url, "controls": 4},
            {"name": "longer", "model": "length-judge", "backend": "openai", "base_url": longer.url, "controls": 4}]
        path = job["folder"] / "two-judges.yaml"
        path.write_text(yaml.safe_dump(data))
        run_job(load_spec(path), Workspace(job["workspace"]), ["evaluate", "report"])
    report = json.loads((job["root"] / "report.json").read_text())
    assert set(report["judge"]["judges"]) == {"first", "longer"} and report["judge"]["name"] == "first"
    (pairwise,) = [a for a in report["judge"]["agreement"] if a["kind"] == "pairwise"]
    # "first" ties all 24 pairs, "longer" ties a third of them: agreement no better than chance.
    assert pairwise["judges"] == ["first", "longer"] and pairwise["n"] == 24 and pairwise["kappa"] == pytest.approx(0.0)
    markdown = (job["root"] / "report.md").read_text()
    assert "Agreement between the judges (Cohen's kappa)" in markdown
    assert "Judged by first" in markdown and "Judged by longer" in markdown
    for name in ("first", "longer"):
        assert (job["root"] / "eval" / "judge" / name / "verdicts.jsonl").exists()
