"""Evaluating models behind an OpenAI-compatible endpoint (a real HTTP server on 127.0.0.1 speaking the
chat-completions protocol, streaming included) and `recorded` teachers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sacrebleu

from conftest import cli_env, conversation_rows, write_job, write_jsonl

from distilflow.report import run_report
from distilflow.evaluate import run_evaluate
from distilflow.prepare import prepare_inputs
from distilflow.jobs.context import StageContext
from distilflow.jobspec import load_spec
from distilflow.workspace import Workspace

FIRST_TOKEN_DELAY = 0.04
CHUNK_DELAY = 0.005
SECRET = "sk-test-never-written-anywhere"


def answer_for(messages: list[dict]) -> str:
    """The endpoint's model: answers 'Hello number N' with the reference answer of the test rows."""
    found = re.search(r"number (\d+)", messages[-1]["content"])
    return f"I am fine, thanks {found.group(1)}." if found else "Hello!"


class ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if not self.path.endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": "not found"}})
            return
        text = answer_for(body["messages"])
        words = text.split(" ")
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                 "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": "chatcmpl-test", "created": 0, "model": body["model"]}
        time.sleep(FIRST_TOKEN_DELAY)
        if not body.get("stream"):
            self._send_json(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(words):
            chunk = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": word if i == 0 else " " + word},
                 "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(CHUNK_DELAY)
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture()
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_evaluate_model_on_an_endpoint_via_the_cli(endpoint, tmp_path):
    server, url = endpoint
    test_file = write_jsonl(tmp_path / "test.jsonl", conversation_rows(3))
    workspace = tmp_path / "ws"
    result = subprocess.run(
        [sys.executable, "-m", "distilflow", "evaluate-model", "served-model", "--base-url", url, "--api-key-env",
         "EVAL_TEST_KEY", "--task", "conversation", "--test-data", str(test_file), "--workspace", str(workspace),
         "--batch-size", "3"],
        capture_output=True, text=True, timeout=120, env=cli_env(EVAL_TEST_KEY=SECRET, NO_PROXY="127.0.0.1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^BLEU \(task score\): 100 \[95% CI 100, 100\], n=3$", result.stdout, re.M), result.stdout
    assert "latency per answer over the network: mean" in result.stdout
    assert "(api, remote endpoint http://127.0.0.1" in result.stdout
    # 1 warm-up + 3 streamed + 3 concurrent throughput requests, all with the key from the variable, greedy
    assert len(server.seen) == 7
    assert all(s["auth"] == f"Bearer {SECRET}" and s["body"]["temperature"] == 0 for s in server.seen)
    assert sum(bool(s["body"].get("stream")) for s in server.seen) == 4
    folder = Path(re.search(r"^results: (.+)$", result.stdout, re.M).group(1))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["network"] is True and metrics["peak_memory_mb"] is None
    assert metrics["ttft_mean_s"] >= FIRST_TOKEN_DELAY and metrics["latency_mean_s"] > metrics["ttft_mean_s"]
    assert metrics["output_tokens"] == 3 * 5  # 'I am fine, thanks N.' in the server's usage
    assert metrics["api_key_env"] == "EVAL_TEST_KEY"
    files = [path for path in workspace.rglob("*") if path.is_file()]
    assert folder / "metrics.json" in files
    for path in files:  # the key itself is written nowhere
        assert SECRET not in path.read_text(errors="ignore"), path


def test_missing_api_key_variable_is_a_clear_error(endpoint, tmp_path):
    _, url = endpoint
    test_file = write_jsonl(tmp_path / "test.jsonl", conversation_rows(1))
    result = subprocess.run(
        [sys.executable, "-m", "distilflow", "evaluate-model", "m", "--base-url", url, "--api-key-env",
         "EVAL_UNSET_KEY", "--task", "conversation", "--test-data", str(test_file), "--workspace", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=cli_env())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "environment variable EVAL_UNSET_KEY is not set" in result.stderr


def _context(spec_path: Path, workspace: Path) -> StageContext:
    spec = load_spec(spec_path)
    ws = Workspace.open(workspace)
    return StageContext(spec, ws, ws.job(spec.name), None, prepare_inputs(spec))


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_job_with_an_api_teacher_evaluates_it_over_the_network_with_cost(endpoint, tiny_models, tmp_path):
    _, url = endpoint
    spec_path = write_job(tmp_path / "job", tiny_models, name="api-teacher", n_test=3,
                          teacher={"model": "served-model", "backend": "openai", "base_url": url,
                                   "price_per_million_input_tokens": 2.0, "price_per_million_output_tokens": 8.0},
                          evaluation={"models": ["teacher", "distilled"], "warmup": 1, "batch_size": 2,
                                      "bootstrap_samples": 100})
    ctx = _context(spec_path, tmp_path / "ws")
    # the distilled student, as the train stage would have published it
    shutil.copytree(tiny_models["student"], ctx.paths.student_final)
    summary = run_evaluate(ctx)
    assert summary["teacher"]["task_metrics"]["bleu"] == pytest.approx(100.0)
    run_report(ctx)
    report = json.loads(ctx.paths.report_json.read_text())
    teacher = report["models"]["teacher"]
    assert teacher["network"] is True and teacher["kind"] == "api"
    prompt_words = sum(len(x.messages[-1]["content"].split()) for x in ctx.examples("test"))
    expected_cost = (prompt_words * 2.0 + 3 * 5 * 8.0) / 1e6 / 3 * 1000
    assert teacher["cost_per_1000_answers"] == pytest.approx(expected_cost)
    assert report["comparison"]["distilled_vs_teacher"]["reference_over_network"] is True
    assert report["models"]["distilled"]["agreement_with_teacher"]["kind"] == "bleu_vs_teacher"
    assert any("over the network" in note for note in report["notes"])
    page = ctx.paths.report_html.read_text()
    assert "(over the network)" in page and "teacher latency is over the network" in page


def test_recorded_teacher_is_scored_on_quality_when_its_answers_cover_the_test_inputs(tiny_models, tmp_path):
    test_rows = conversation_rows(2, offset=200)
    recorded = tmp_path / "job" / "recorded.jsonl"
    write_jsonl(recorded, [  # two export forms: chat messages, and a stored completion
        {"messages": [{"role": "user", "content": "Hello number 200, how are you?"},
                      {"role": "assistant", "content": "I am fine, thanks 200."}]},
        {"request": {"messages": [{"role": "user", "content": "Hello number 201, how are you?"}]},
         "response": {"choices": [{"message": {"role": "assistant", "content": "Fine, thanks."}}]}}])
    spec_path = write_job(tmp_path / "job", tiny_models, name="recorded", n_test=2,
                          teacher={"model": "recorded", "backend": "recorded", "path": str(recorded)},
                          evaluation={"models": ["teacher"], "bootstrap_samples": 50})
    ctx = _context(spec_path, tmp_path / "ws")
    assert [x.messages[-1]["content"] for x in ctx.examples("test")] == [r["messages"][0]["content"] for r in test_rows]
    summary = run_evaluate(ctx)
    expected = sacrebleu.corpus_bleu(["I am fine, thanks 200.", "Fine, thanks."],
                                     [["I am fine, thanks 200.", "I am fine, thanks 201."]]).score
    assert summary["teacher"]["task_metrics"]["bleu"] == pytest.approx(expected)
    assert summary["teacher"]["latency_mean_s"] is None  # quality only

    # a recorded file that misses a test input: not evaluated, with the reason in the report
    write_jsonl(recorded, [{"prompt": "Hello number 200, how are you?", "response": "I am fine, thanks 200."}])
    summary = run_evaluate(ctx)
    assert summary["teacher"]["evaluated"] is False and "do not cover every test input" in summary["teacher"]["reason"]
    run_report(ctx)
    page = ctx.paths.report_html.read_text()
    assert "not evaluated: the recorded teacher answers do not cover every test input" in page
