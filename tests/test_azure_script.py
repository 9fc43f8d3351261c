"""The Azure ML distillation guide's script runs on distilflow with only its imports changed (issue 13): the
script of docs/azure-migration.md, as written, against a distilflow.yaml whose catalog points `deepseek-v3` at a
local OpenAI-protocol server and `phi-4-mini` at a tiny local Phi3-architecture model."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli_env, conversation_rows, write_jsonl
from distilflow.errors import DistilflowError
from openai_server import OpenAIServer, ServerConfig
from tiny_models import build_constant_model, build_tokenizer

DOC = REPO / "docs" / "azure-migration.md"


def scripts_from_doc() -> tuple[str, str]:
    """The Azure script and the distilflow script of docs/azure-migration.md (the blocks after their markers)."""
    text = DOC.read_text()
    blocks = [re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S) for marker in ("azure-script",
                                                                                                  "distilflow-script")]
    assert all(blocks), "docs/azure-migration.md lost a script marker"
    return blocks[0].group(1), blocks[1].group(1)  # type: ignore[union-attr]


def build_phi3(folder: Path) -> Path:
    """A tiny model of Phi-4-mini's architecture (Phi3: fused qkv and gate/up projections) that ends every answer at
    once: its layers are zeroed, so the residual stream is the input embedding, and only the end-of-turn token's
    lm_head row reads the embeddings' (positive) first component. A random one would write all 128 tokens
    `models.evaluate` allows, at ~20 ms a token on a CPU: 40 s more for this test, for nothing it checks."""
    import torch

    tokenizer = build_tokenizer(folder)
    torch.manual_seed(0)
    return build_constant_model(folder, tokenizer, tokenizer.eos_token, arch="phi3")


def test_the_doc_changes_only_the_import_lines():
    azure, ours = scripts_from_doc()
    changed = [line for line in difflib.unified_diff(azure.splitlines(), ours.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed and all(re.match(r"[+-](from|import) ", line) for line in changed), changed


@pytest.fixture(scope="module")
def phi3(tmp_path_factory) -> Path:
    return build_phi3(tmp_path_factory.mktemp("models") / "tiny-phi3")


def write_project(project: Path, teacher_url: str, phi3: Path) -> Path:
    """The guide's data files, and a catalog: deepseek-v3 at the local server, phi-4-mini the tiny Phi3 model."""
    write_jsonl(project / "training_data.jsonl", conversation_rows(6))
    write_jsonl(project / "validation_data.jsonl", conversation_rows(2, offset=100))
    write_jsonl(project / "test_data.jsonl", conversation_rows(3, offset=200))
    (project / "distilflow.yaml").write_text(yaml.safe_dump({"workspace": "runs", "models": {
        "deepseek-v3": {"backend": "openai", "model": "deepseek-chat", "base_url": teacher_url},
        "phi-4-mini": {"model": str(phi3)}}}))
    return project


@pytest.mark.slow  # the whole guide script, end to end (~25 s): CI runs it
def test_azure_guide_script_runs_end_to_end(tmp_path, phi3):
    _, script = scripts_from_doc()
    with OpenAIServer() as server:
        project = write_project(tmp_path / "project", server.url, phi3)
        (project / "distill.py").write_text(script)
        run = subprocess.run([sys.executable, "distill.py"], cwd=project, env=cli_env(), capture_output=True,
                             text=True, timeout=600)
        teacher_requests = server.stats()["requests"]
    assert run.returncode == 0, run.stdout + run.stderr
    figures = dict(re.findall(r"^(Distilled model accuracy|Baseline model accuracy|Performance improvement): (\S+)$",
                              run.stdout, re.M))
    assert len(figures) == 3, run.stdout
    distilled, baseline = float(figures["Distilled model accuracy"]), float(figures["Baseline model accuracy"])
    assert 0.0 <= distilled <= 1.0 and 0.0 <= baseline <= 1.0
    assert float(figures["Performance improvement"]) == pytest.approx(distilled - baseline)
    assert re.search(r"^Job status: (queued|running)$", run.stdout, re.M), run.stdout
    assert teacher_requests == 8  # every training and validation input, once

    from distilflow import Client

    client = Client(workspace=project / "runs")
    (record,) = client.jobs.list()
    assert record.status == "Completed" and record.status == "completed"
    assert record.spec["student"]["name"] == "phi-4-mini" and record.spec["teacher"]["model"] == "deepseek-chat"
    registered = {m.name: m for m in client.models.list()}
    assert set(registered) == {"phi-4-mini-distilled", "phi-4-mini-baseline"}
    assert registered["phi-4-mini-baseline"].path == str(phi3)
    assert Path(registered["phi-4-mini-distilled"].path, "config.json").exists()
    assert {m.name for m in client.jobs.get(record.name).models} == set(registered)


def test_polling_with_azure_status_names_until_the_job_fails(tmp_path, phi3, monkeypatch):
    """Polled with Azure's status names, a job whose teacher refuses every request ends "Failed", and asking for
    the model it would have registered says why instead of scoring anything else."""
    from distilflow import Client as MLClient, DistillationJob

    with OpenAIServer(ServerConfig(force_status=401)) as server:
        monkeypatch.chdir(write_project(tmp_path / "project", server.url, phi3))
        ml_client = MLClient.from_config()
        job = ml_client.jobs.create_or_update(DistillationJob(
            teacher_model="deepseek-v3", student_model="phi-4-mini", training_data="./training_data.jsonl",
            task_type="conversation", output_model_name="support-bot"))
        deadline = time.monotonic() + 600  # a hang guard only: a loaded machine is slow
        while ml_client.jobs.get(job.name).status not in ["Completed", "Failed", "Canceled"]:
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.2)
    record = ml_client.jobs.get(job.name)
    assert record.status == "Failed" and record.models == [] and "401" in (record.error or "")
    with pytest.raises(DistilflowError, match=f"'support-bot' was not registered: job '{job.name}' failed"):
        ml_client.models.evaluate(model_name="support-bot", test_data="./test_data.jsonl")
