"""on_policy against a real served teacher: llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) serving
SmolLM2-135M-Instruct scores a SmolLM2 student's samples through /v1/completions with echo + logprobs.

Slow (a model server starts and the 135M student trains); skipped when llama_cpp is not installed.

llama-cpp-python's server takes text prompts only, so this also covers the
text path of served_targets.py (BOS tokens missing from the echo, special tokens spelt '').
"""

from __future__ import annotations

import pytest
from conftest import write_job
from llama_server import GGUF, llama_cpp_server

from distilflow.pipeline.runner import run_job
from distilflow.jobspec import load_spec
from distilflow.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def llama_server():
    with llama_cpp_server() as url:
        yield url


def test_on_policy_step_scored_by_a_real_llama_cpp_server(tmp_path, llama_server):
    def rows(n: int, offset: int = 0):
        return [{"messages": [{"role": "user", "content": f"Name a colour of the rainbow (question {i})."}]}
                for i in range(offset, offset + n)]

    job = write_job(tmp_path, {"teacher": "unused", "student": "unused"}, rows=rows, n_train=4, n_val=0, name="onp",
                    teacher={"backend": "openai", "model": "smollm2", "base_url": llama_server, "max_concurrency": 2},
                    # Not pruned: a pruned student samples byte soup at random, whose share of text that does not
                    # survive decoding depends on the machine's sampling; the whole model writes text.
                    student={"model": GGUF},
                    generation={"max_tokens": 12, "temperature": 0.0, "verify": "none"},
                    training={"method": "on_policy", "on_policy_ratio": 0.5, "on_policy_warmup": 0.0, "divergence": "jsd",
                              "jsd_beta": 0.5,
                              "student_max_tokens": 12, "teacher_top_logprobs": 3, "max_steps": 2, "logging_steps": 1,
                              "device": "cpu"})
    record = run_job(load_spec(job), Workspace.open(tmp_path / "ws"), ["generate", "train"])
    train = next(s for s in record.stages if s.stage == "train")
    metrics = train.metrics
    assert train.status == "completed" and metrics["steps"] == 2 and metrics["sampled_rows"] > 0
    assert metrics["teacher_requests"] >= 4 and metrics["teacher_failed_requests"] == 0
    assert metrics["teacher_prompt_tokens"] > 0 and metrics["time_score_s"] > 0
    scored, missing = metrics["served_answer_tokens_scored"], metrics.get("served_answer_tokens_without_targets", 0)
    assert scored > 0 and missing <= 0.2 * (scored + missing)  # the server's text split matches the student's
    assert metrics.get("served_unmappable_teacher_tokens", 0) <= 0.1 * metrics["served_teacher_top_tokens"]
    assert 0 <= metrics["train_kd_loss"] < 5
