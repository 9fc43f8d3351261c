"""Shipping the student of a completed tiny job: `distilflow export --format hf` writes a folder transformers loads
without distilflow, with a model card carrying the report's figures; `--format gguf` writes a file llama.cpp loads
and that answers the job's test prompts (f16: exactly the distilled model's greedy answers); `evaluate-model` scores
the exported file in-process and through a real llama.cpp server, matching the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, start_cli, write_job
from go_template import modelfile_commands, render_template
from llama_server import free_port, llama_cpp_server

from distilflow import Client
from distilflow.errors import DistilflowError
from distilflow.io import iter_jsonl
from distilflow.models.llamacpp import load_llama
from distilflow.jobspec import load_spec

pytestmark = pytest.mark.timeout(300)

NAME = "ship"


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_models) -> dict:
    """A completed job (teacher and distilled student evaluated) and its distilled answers."""
    root = tmp_path_factory.mktemp("export")
    spec = write_job(root / "job", tiny_models, name=NAME, n_test=3,
                     evaluation={"max_tokens": 8, "warmup": 0, "throughput": False, "uncached_examples": 0,
                                 "models": ["teacher", "distilled"]})
    client = Client(root / "w")
    assert client.jobs.run(load_spec(spec)).status == "completed"
    paths = client.workspace.job(NAME)
    answers = [row["prediction"] for row in iter_jsonl(paths.eval_predictions("distilled"))]
    prompts = [row["messages"][:-1] for row in iter_jsonl(root / "job" / "data" / "test.jsonl")]
    return {"client": client, "root": root, "paths": paths, "answers": answers, "prompts": prompts,
            "report": json.loads(paths.report_json.read_text()), "test_data": root / "job" / "data" / "test.jsonl"}


# Loads the folder with distilflow made unimportable, answers the prompts greedily, prints the answers as JSON.
_CLEAN_LOAD = """
import json, sys
class NoDistilflow:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'distilflow':
            raise ImportError('distilflow must not be needed to load an exported student')
sys.meta_path.insert(0, NoDistilflow())
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
answers = []
for messages in prompts:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt', return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answers.append(tokenizer.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))
print(json.dumps(answers))
"""


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_hf_folder_loads_without_distilflow_and_its_card_carries_the_report(job, tmp_path):
    result = run_cli("export", NAME, "--format", "hf", "--out", str(tmp_path / "hf"),
                     "--workspace", str(job["root"] / "w"))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "hf"
    assert f"exported: {folder}" in result.stdout
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in folder.iterdir()}
    loaded = subprocess.run([sys.executable, "-c", _CLEAN_LOAD, str(folder), json.dumps(job["prompts"])],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == job["answers"]

    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense:") and "base_model:" in card and "distilflow" in card
    distilled = job["report"]["models"]["distilled"]
    for metric in job["report"]["metric_names"]:
        interval = distilled["intervals"][metric]
        assert f"{_fmt(interval['value'])} [{_fmt(interval['low'])}, {_fmt(interval['high'])}]" in card
    assert "| distilled student |" in card and "| teacher |" in card
    assert "`train.jsonl`" in card and "accepted: train 8, validation 2" in card and '"method": "sft"' in card
    assert "Licenses of the inputs" in card


def test_gguf_q8_0_answers_the_test_prompts_and_f16_gives_the_distilled_answers(job):
    q8_path = job["client"].models.export(NAME, format="gguf", quantize="q8_0")
    assert q8_path == job["paths"].root / "export" / "student-distilled-q8_0.gguf"
    f16_path = job["client"].models.export(NAME, format="gguf", quantize="f16")
    assert f16_path.stat().st_size > q8_path.stat().st_size
    for path in (q8_path, f16_path):
        llm = load_llama(path, n_ctx=256)
        try:
            answers = [llm.create_chat_completion(messages, max_tokens=8, temperature=0.0)["choices"][0]
                       for messages in job["prompts"]]
        finally:
            llm.close()
        assert all(a["finish_reason"] in ("stop", "length") for a in answers)
        if path == f16_path:
            assert [a["message"]["content"] for a in answers] == job["answers"]


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_ollama_modelfile_names_the_gguf_beside_it_and_writes_the_prompt_the_student_was_trained_on(job):
    from transformers import AutoTokenizer

    from distilflow.models.prompts import render_chat

    result = run_cli("export", NAME, "--format", "ollama", "--workspace", str(job["root"] / "w"))
    assert result.returncode == 0, result.stderr
    modelfile = job["paths"].root / "export" / "student-distilled-ollama" / "Modelfile"
    assert f"exported: {modelfile}" in result.stdout
    commands: dict[str, list[str]] = {}
    for name, value in modelfile_commands(modelfile.read_text()):
        commands.setdefault(name, []).append(value)
    assert commands["FROM"] == ["./student-distilled-f16.gguf"]  # beside it: the folder moves as one
    gguf = modelfile.parent / "student-distilled-f16.gguf"
    assert gguf.is_file()
    tokenizer = AutoTokenizer.from_pretrained(job["paths"].student_final)
    prompts = [render_template(commands["TEMPLATE"][0], messages) for messages in job["prompts"]]
    assert prompts == [render_chat(tokenizer, messages) for messages in job["prompts"]]
    # What Ollama would run: that prompt through llama.cpp with the Modelfile's stops: the distilled answers.
    llm = load_llama(gguf, n_ctx=256)
    try:
        answers = [llm.create_completion(llm.tokenize(prompt.encode(), add_bos=False, special=True),
                                         max_tokens=int(commands["PARAMETER num_predict"][0]), temperature=0.0,
                                         stop=commands["PARAMETER stop"])["choices"][0]["text"] for prompt in prompts]
    finally:
        llm.close()
    assert answers == job["answers"] and any(answers)


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_evaluate_model_scores_the_exported_gguf_in_process_and_through_llama_cpp_server(job):
    gguf = job["client"].models.export(NAME, format="gguf", quantize="f16")
    distilled = job["report"]["models"]["distilled"]
    primary = job["report"]["primary_metric"]
    interval = distilled["intervals"][primary]
    local = job["client"].models.evaluate(str(gguf), str(job["test_data"]), max_tokens=8, warmup=0)
    assert interval["low"] <= local[primary] <= interval["high"]
    assert [p["prediction"] for p in iter_jsonl(Path(local["output_dir"]) / "predictions.jsonl")] == job["answers"]
    with llama_cpp_server(gguf=gguf, alias="ship-f16", n_ctx=256) as url:
        figures = job["client"].models.evaluate("ship-f16", str(job["test_data"]), base_url=url, max_tokens=8,
                                                warmup=0)
    assert figures["kind"] == "api" and interval["low"] <= figures[primary] <= interval["high"]
    assert [p["prediction"] for p in iter_jsonl(Path(figures["output_dir"]) / "predictions.jsonl")] == job["answers"]


def test_export_refuses_bad_requests_in_one_sentence_and_writes_nothing(job, tmp_path):
    client = job["client"]
    with pytest.raises(DistilflowError, match="q4_k_m is not available: the gguf package has no Q4_K quantizer"):
        client.models.export(NAME, format="gguf", quantize="q4_k_m", out=tmp_path / "x.gguf")
    with pytest.raises(DistilflowError, match="applies to --format gguf and ollama only"):
        client.models.export(NAME, format="hf", quantize="q8_0", out=tmp_path / "hf")
    with pytest.raises(DistilflowError, match="no job named 'nope'"):
        client.models.export("nope", format="hf", out=tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []
    bad = run_cli("export", NAME, "--format", "onnx", "--workspace", str(job["root"] / "w"))
    assert bad.returncode == 1 and bad.stderr.strip() == "error: unknown export format 'onnx' (choose from hf, gguf, ollama)"


def _announced(process) -> list[str]:
    """`distilflow serve`'s lines up to the model name it announces once the server answers."""
    lines = []
    while not any(line.startswith("model:") for line in lines):
        line = process.stdout.readline()
        assert line, f"serve ended early: {''.join(lines)}"
        lines.append(line)
    return lines


def test_serve_prints_base_url_and_model_and_answers_over_the_openai_protocol(job):
    import openai

    port = free_port()
    process = start_cli("serve", NAME, "--port", str(port), "--n-ctx", "256", "--workspace", str(job["root"] / "w"))
    try:
        lines = _announced(process)
        assert f"base_url: http://127.0.0.1:{port}/v1\n" in lines and "model: student-distilled\n" in lines
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        answer = client.chat.completions.create(model="student-distilled", messages=job["prompts"][0], max_tokens=8,
                                                temperature=0.0)
        assert answer.choices[0].message.content == job["answers"][0]  # f16: the distilled model's greedy answer
    finally:
        process.terminate()
        process.wait(30)
    with pytest.raises(OSError):  # the llama.cpp server went with it
        import urllib.request

        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def test_serve_with_logprobs_answers_with_each_tokens_top_alternatives(job):
    import openai

    port = free_port()
    process = start_cli("serve", NAME, "--logprobs", "--port", str(port), "--n-ctx", "256", "--workspace",
                        str(job["root"] / "w"))
    try:
        _announced(process)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        answer = client.completions.create(model="student-distilled", prompt="Hello there", max_tokens=4,
                                           temperature=0.0, logprobs=3)
        top = answer.choices[0].logprobs.top_logprobs
        assert len(top) == len(answer.choices[0].logprobs.tokens) >= 1  # a teacher for sparse_kd needs these
        # Up to 3 per token (the tiny tokenizer spells several tokens alike, and a dict keeps one of each spelling).
        assert all(2 <= len(alternatives) <= 3 and all(v <= 0 for v in alternatives.values()) for alternatives in top)
    finally:
        process.terminate()
        process.wait(30)
