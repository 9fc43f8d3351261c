"""A real OpenAI-compatible server as teacher: llama.cpp (llama-cpp-python[server]) serving SmolLM2-135M-Instruct.

Slow (a model server starts); skipped when llama_cpp is not installed.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, write_job
from llama_server import MODEL_ALIAS, llama_cpp_server

from distilflow.teachers.cache import TeacherCache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_server():
    with llama_cpp_server() as url:
        yield url


def test_llama_cpp_server_as_teacher_with_top_logprobs(tmp_path, llama_server, tiny_models):
    def rows(n: int, offset: int = 0):
        return [{"messages": [{"role": "user", "content": f"Name a colour of the rainbow (question {i})."}]}
                for i in range(offset, offset + n)]

    # generate checks that the student loads before it spends a request, so a real (tiny) student is named.
    spec = write_job(tmp_path, tiny_models, rows=rows, n_train=3, n_val=1,
                     name="llama", teacher={"backend": "openai", "model": MODEL_ALIAS, "base_url": llama_server,
                                            "max_concurrency": 2},
                     generation={"max_tokens": 12, "temperature": 0.0, "top_logprobs": 3, "verify": "none"})
    result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"), timeout=300)
    assert result.returncode == 0, result.stderr
    job = tmp_path / "ws" / "jobs" / "llama"
    synthetic = [json.loads(line) for line in (job / "synthetic" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in synthetic) == ["train-1", "train-2", "train-3"]
    with TeacherCache(job / "cache" / "teacher.sqlite") as cache:
        for row in synthetic:
            text = row["messages"][-1]["content"]
            answer = cache.get(row["teacher_key"], with_logprobs=True)
            assert text.strip() and answer.completion_tokens > 0 and answer.prompt_tokens > 0
            top = answer.top_logprobs[0]
            assert len(top.tokens) == len(top.logprobs) > 0 and all(len(r) == 3 for r in top.logprobs)
            for values in top.logprobs:
                assert all(v <= 0.01 for v in values) and values == sorted(values, reverse=True)
            assert len(top.tokens) == answer.completion_tokens  # one row per generated token
            # Greedy: the best token at each position is the one generated, so they spell the answer (llama.cpp's
            # last position of an answer cut at max_tokens can be off, so that one is left out).
            assert text.startswith("".join(r[0] for r in top.tokens[:-1]))
    metrics = json.loads(run_cli("jobs", "show", "llama", "--json", "--workspace", str(tmp_path / "ws")).stdout)
    generate = next(s for s in metrics["stages"] if s["stage"] == "generate")["metrics"]
    assert generate["completion_tokens"] > 0 and generate["failed"] == 0
