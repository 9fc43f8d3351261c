"""distilflow.yaml: found like Azure ML's config.json, its workspace and its model catalog; catalog names in
DistillationJob, job specs and the command line; the secrets rules of a job spec hold in the catalog too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import conversation_rows, run_cli, write_jsonl
from distilflow import Client, DistillationJob
from distilflow.catalog import CONFIG_FILE, WorkspaceConfig, spec_resolver, workspace_root
from distilflow.errors import SpecError
from distilflow.jobspec import load_spec

CATALOG = {
    "workspace": "runs",
    "models": {
        "deepseek-v3": {"backend": "openai", "model": "deepseek-chat", "base_url": "http://127.0.0.1:9/v1",
                        "api_key_env": "DEEPSEEK_API_KEY", "price_per_million_input_tokens": 0.27},
        "phi-4-mini": {"model": "microsoft/Phi-4-mini-instruct", "dtype": "bfloat16"},
        "local-small": "models/small",  # a string is the entry's model
        "served": {"model": "qwen", "base_url": "http://127.0.0.1:8/v1"},  # an endpoint: backend openai
    },
}


def write_config(folder: Path, data=CATALOG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models" / "small").mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def job(**extra) -> DistillationJob:
    return DistillationJob(teacher_model="deepseek-v3", student_model="phi-4-mini", training_data="train.jsonl",
                           task_type="conversation", **extra)


def test_found_like_azure_config_json(tmp_path, monkeypatch):
    path = write_config(tmp_path / "project")
    (tmp_path / "project" / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project" / "src" / "deep")
    found = WorkspaceConfig.find()
    assert found is not None and found.path == path  # the nearest parent holding one
    assert found.workspace == tmp_path / "project" / "runs"  # relative to the file
    assert found.models["local-small"].model == str(tmp_path / "project" / "models" / "small")
    assert found.models["served"].backend == "openai"
    other = write_config(tmp_path / "elsewhere", {"workspace": "/tmp/w", "models": {}})
    monkeypatch.setenv("DISTILFLOW_CONFIG", str(other))
    assert WorkspaceConfig.find().path == other  # $DISTILFLOW_CONFIG before the folders
    assert WorkspaceConfig.find(path).path == path  # an explicit path before both
    monkeypatch.delenv("DISTILFLOW_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert WorkspaceConfig.find() is None
    with pytest.raises(SpecError, match=f"no {CONFIG_FILE} found in .*Client\\(workspace=...\\)"):
        Client.from_config()


def test_from_config_opens_its_workspace_and_catalog(tmp_path, monkeypatch):
    write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    client = Client.from_config()
    assert client.workspace.root == tmp_path / "runs"
    assert Client.from_config(tmp_path).workspace.root == tmp_path / "runs"  # a folder holding the file
    spec = client.jobs._spec(job(output_model_name="support-bot"))
    assert spec.teacher.backend == "openai" and spec.teacher.model == "deepseek-chat"
    assert spec.teacher.api_key_env == "DEEPSEEK_API_KEY" and spec.teacher.price_per_million_input_tokens == 0.27
    assert spec.student.model == "microsoft/Phi-4-mini-instruct" and spec.student.dtype == "bfloat16"
    assert spec.student.name == "phi-4-mini" and spec.output_model_name == "support-bot"
    # The workspace: explicit, then $DISTILFLOW_HOME, then the config's, then the default.
    assert Client(tmp_path / "mine", config=client.config).workspace.root == tmp_path / "mine"
    monkeypatch.setenv("DISTILFLOW_HOME", str(tmp_path / "home"))
    assert workspace_root(None, client.config) == tmp_path / "home"
    assert Client(tmp_path / "plain").jobs.catalog is None  # Client(workspace=...) as before: no catalog


def test_job_keys_override_the_catalog_entry(tmp_path):
    config = WorkspaceConfig.load(write_config(tmp_path))
    spec = job(teacher={"max_concurrency": 2, "price_per_million_input_tokens": 1.0}).to_spec(tmp_path, config)
    assert spec.teacher.max_concurrency == 2 and spec.teacher.price_per_million_input_tokens == 1.0
    assert spec.teacher.base_url == "http://127.0.0.1:9/v1"
    # A teacher that says where it is names the model at that endpoint, never a catalog entry.
    served = DistillationJob(teacher_model="phi-4-mini", teacher={"backend": "openai", "base_url": "http://h:1/v1"},
                             student_model="local-small", training_data="t.jsonl", task_type="qa")
    spec = served.to_spec(tmp_path, config)
    assert spec.teacher.model == "phi-4-mini" and spec.student.model == str(tmp_path / "models" / "small")


def test_unknown_names_list_the_catalog_and_suggest_the_nearest(tmp_path):
    config = WorkspaceConfig.load(write_config(tmp_path))
    with pytest.raises(SpecError, match=r"unknown model 'phi-4-mni'.*known: deepseek-v3, local-small, phi-4-mini, served\)"
                                        r"; did you mean 'phi-4-mini'\?"):
        DistillationJob(teacher_model="deepseek-v3", student_model="phi-4-mni", training_data="t.jsonl",
                        task_type="conversation").to_spec(tmp_path, config)
    with pytest.raises(SpecError, match="a student must be a local model"):
        DistillationJob(teacher_model="deepseek-v3", student_model="deepseek-v3", training_data="t.jsonl",
                        task_type="conversation").to_spec(tmp_path, config)
    # Hub ids (ORG/NAME) and paths are never catalog names.
    spec = DistillationJob(teacher_model="Qwen/Qwen2.5-0.5B-Instruct", student_model=str(tmp_path / "models/small"),
                           training_data="t.jsonl", task_type="conversation").to_spec(tmp_path, config)
    assert spec.teacher.model == "Qwen/Qwen2.5-0.5B-Instruct" and spec.student.name is None


def test_the_catalog_keeps_the_secrets_rules(tmp_path):
    key = "sk-" + "A1b2C3d4E5f6G7h8I9j0"
    bad = {"models": {"t": {"backend": "openai", "model": "m", "base_url": "http://h/v1", "api_key_env": key}}}
    with pytest.raises(SpecError, match="models.t: 'api_key_env': api_key_env must be the NAME") as caught:
        WorkspaceConfig.load(write_config(tmp_path / "a", bad))
    assert key not in str(caught.value)
    bad = {"models": {"t": {"backend": "openai", "model": "m", "base_url": "http://u:pw@h/v1"}}}
    with pytest.raises(SpecError, match="holds credentials"):
        WorkspaceConfig.load(write_config(tmp_path / "b", bad))
    with pytest.raises(SpecError, match="models.t: unknown key 'base_ur'; did you mean 'base_url'"):
        WorkspaceConfig.load(write_config(tmp_path / "c", {"models": {"t": {"model": "m", "base_ur": "x"}}}))
    with pytest.raises(SpecError, match="unknown key 'model'; did you mean 'models'"):
        WorkspaceConfig.load(write_config(tmp_path / "d", {"model": {}}))
    with pytest.raises(SpecError, match="no '/'"):
        WorkspaceConfig.load(write_config(tmp_path / "e", {"models": {"org/name": {"model": "m"}}}))


def test_job_spec_yaml_takes_catalog_names(tmp_path, monkeypatch):
    write_config(tmp_path)
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump({"task_type": "conversation", "teacher": {"model": "deepseek-v3"},
                                         "student": {"model": "phi-4-mini"}, "training_data": "t.jsonl",
                                         "output_model_name": "bot-v1"}))
    monkeypatch.chdir(tmp_path)
    spec = load_spec(spec_file, resolve=spec_resolver(None))
    assert spec.teacher.base_url == "http://127.0.0.1:9/v1" and spec.student.name == "phi-4-mini"
    assert spec.output_model_name == "bot-v1"
    # The resolved spec (what a background job reads) resolves to itself, without reading any config.
    stored = tmp_path / "stored.yaml"
    stored.write_text(yaml.safe_dump(spec.public_dict()))
    (tmp_path / CONFIG_FILE).write_text("models: [broken")
    assert load_spec(stored, resolve=spec_resolver(None)).public_dict() == spec.public_dict()


def test_command_line_reads_the_config(tmp_path):
    write_config(tmp_path)
    write_jsonl(tmp_path / "t.jsonl", conversation_rows(3))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "name": "cat", "task_type": "conversation", "teacher": {"model": "deepseek-v3"},
        "student": {"model": "local-small"}, "training_data": "t.jsonl"}))
    dry = run_cli("generate", "job.yaml", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "openai deepseek-chat at http://127.0.0.1:9/v1" in dry.stdout and "cost:              ~$" in dry.stdout
    listed = run_cli("jobs", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "no jobs" in listed.stdout
    assert (tmp_path / "runs" / "distilflow.db").exists()  # the config's workspace
    (tmp_path / "job.yaml").write_text((tmp_path / "job.yaml").read_text().replace("local-small", "local-smal"))
    typo = run_cli("generate", str(tmp_path / "job.yaml"), "--dry-run", "--config", str(tmp_path / CONFIG_FILE),
                   cwd=tmp_path.parent)
    assert typo.returncode == 1 and "did you mean 'local-small'?" in typo.stderr
    models = run_cli("models", "list", cwd=tmp_path)
    assert models.returncode == 0 and "no registered models" in models.stdout
