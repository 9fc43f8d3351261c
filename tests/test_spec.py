from pathlib import Path

import pytest
import yaml

from distilflow.errors import SpecError
from distilflow.jobspec import load_spec

BASE = {
    "task_type": "conversation",
    "teacher": {"model": "deepseek-chat", "backend": "openai", "base_url": "http://127.0.0.1:8000/v1",
                "api_key_env": "OPENAI_API_KEY"},
    "student": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "training_data": "data/train.jsonl",
    "validation_data": "data/validation.jsonl",
    "hyperparameters": {"learning_rate": 2.0e-5, "batch_size": 2, "num_epochs": 3, "temperature": 0.7},
}


def write(tmp_path: Path, data, name="support-bot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_design_md_spec_loads_with_flat_hyperparameters(tmp_path):
    spec = load_spec(write(tmp_path, {**BASE, "generation": {"max_tokens": 64}, "evaluation": {"max_tokens": 32}}))
    assert spec.name == "support-bot"  # derived from the file name
    assert spec.hyperparameters.learning_rate == 2.0e-5 and spec.hyperparameters.num_epochs == 3
    assert spec.teacher_temperature == 0.7
    assert spec.generation.max_tokens == 64 and spec.evaluation.max_tokens == 32
    # relative data paths resolve against the spec file's folder
    assert spec.training_data == str((tmp_path / "data" / "train.jsonl").resolve())
    # hub ids and endpoint model names are left alone
    assert spec.student.model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_generation_temperature_overrides_hyperparameters(tmp_path):
    spec = load_spec(write(tmp_path, {**BASE, "generation": {"temperature": 0.2}}))
    assert spec.teacher_temperature == 0.2


def test_local_model_path_resolves_against_spec_folder(tmp_path):
    (tmp_path / "models" / "teacher").mkdir(parents=True)
    data = {**BASE, "teacher": {"model": "models/teacher", "backend": "hf"}}
    spec = load_spec(write(tmp_path, data))
    assert spec.teacher.model == str((tmp_path / "models" / "teacher").resolve())


@pytest.mark.parametrize("data, expected", [
    ({**BASE, "hyperparameter": {}}, "unknown key 'hyperparameter'; did you mean 'hyperparameters'?"),
    ({**BASE, "teacher": {**BASE["teacher"], "modle": "x"}}, "unknown key 'teacher.modle'; did you mean 'teacher.model'?"),
    ({**BASE, "generation": {"max_token": 5}}, "unknown key 'generation.max_token'; did you mean 'generation.max_tokens'?"),
    ({**BASE, "hyperparameters": {"learning_rte": 1e-5}}, "did you mean 'hyperparameters.learning_rate'?"),
])
def test_unknown_key_names_key_and_suggests_nearest(tmp_path, data, expected):
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, data))
    assert expected in str(error.value)
    assert str(tmp_path) in str(error.value)


def test_missing_key_and_bad_value(tmp_path):
    data = {k: v for k, v in BASE.items() if k != "training_data"}
    with pytest.raises(SpecError, match="missing required key 'training_data'"):
        load_spec(write(tmp_path, data))
    with pytest.raises(SpecError, match="'task_type'"):
        load_spec(write(tmp_path, {**BASE, "task_type": "translation"}))


def test_pasted_api_key_is_rejected_without_echoing_it(tmp_path):
    secret = "sk-live-THIS-IS-SECRET-123"
    data = {**BASE, "teacher": {**BASE["teacher"], "api_key_env": secret}}
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, data))
    assert "NAME of an environment variable" in str(error.value)
    assert secret not in str(error.value)


def test_invalid_yaml_reports_line(tmp_path):
    path = write(tmp_path, "task_type: nli\nteacher:\n  model: [unclosed\nstudent: x\n")
    with pytest.raises(SpecError, match=r"line \d"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="job spec not found"):
        load_spec(tmp_path / "nope.yaml")
