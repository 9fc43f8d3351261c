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


# ----- one name per knob: the teacher's temperature, the throughput batch size, no vllm backend -----------------

def test_the_teacher_temperature_has_one_resolution(tmp_path):
    """generation.temperature wins; hyperparameters.temperature (Azure ML's spelling) counts when it is alone."""
    hyper_only = load_spec(write(tmp_path, BASE))
    assert hyper_only.teacher_temperature == 0.7
    both = load_spec(write(tmp_path, {**BASE, "generation": {"temperature": 0.0}}))
    assert both.teacher_temperature == 0.0  # a given 0 is given: it is not "unset"
    neither = {**BASE, "hyperparameters": {"learning_rate": 1e-4}}
    assert load_spec(write(tmp_path, neither)).teacher_temperature == 0.0


def test_each_temperature_says_what_it_is_for():
    from distilflow.jobspec import GenerationSpec, Hyperparameters, TrainingSpec

    def described(model, name):
        return model.model_fields[name].description

    assert "teacher's sampling" in described(GenerationSpec, "temperature")
    assert "generation.temperature wins" in described(Hyperparameters, "temperature")
    assert "distillation loss" in described(TrainingSpec, "kd_temperature")
    assert "not a sampling temperature" in described(TrainingSpec, "kd_temperature")
    assert "student samples" in described(TrainingSpec, "student_temperature")


def test_throughput_batch_size_is_one_field_with_its_old_spelling_read(tmp_path):
    old = load_spec(write(tmp_path, {**BASE, "evaluation": {"batch_size": 3}}))
    new = load_spec(write(tmp_path, {**BASE, "evaluation": {"throughput_batch_size": 3}}))
    assert old.evaluation.throughput_batch_size == new.evaluation.throughput_batch_size == 3
    assert old.public_dict()["evaluation"] == new.public_dict()["evaluation"]  # stored under the one name
    assert "batch_size" not in new.public_dict()["evaluation"]
    with pytest.raises(SpecError, match="throughput_batch_size or its old spelling batch_size, not both"):
        load_spec(write(tmp_path, {**BASE, "evaluation": {"batch_size": 3, "throughput_batch_size": 4}}))
    with pytest.raises(SpecError, match="'evaluation.batch_size': Input should be greater than or equal to 1"):
        load_spec(write(tmp_path, {**BASE, "evaluation": {"batch_size": 0}}))


def test_vllm_is_not_a_backend_and_the_error_says_how_to_run_it(tmp_path):
    data = {**BASE, "teacher": {"model": "Qwen/Qwen2.5-7B-Instruct", "backend": "vllm"}}
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, data))
    message = str(error.value)
    assert "'teacher.backend'" in message and "`vllm serve MODEL`" in message
    assert "backend: openai with base_url" in message


# Stage fingerprints and teacher cache keys computed by the code before the knobs were renamed (commit 6a4a43b):
# a spec in either spelling must keep them, or every existing job would run again and buy its answers again.
_FINGERPRINT_BASE = {"task_type": "qa", "teacher": {"model": "teacher-model", "backend": "openai",
                                                    "base_url": "http://127.0.0.1:9/v1"},
                     "student": {"model": "student-model"}, "training_data": "/data/train.jsonl",
                     "test_data": "/data/test.jsonl"}
_BEFORE_THE_RENAME = {
    # case: (the spec's sections, generate, train, evaluate fingerprints, teacher cache key's first 16 hex digits)
    "neither": ({}, "eb4dc1bb53996584", "838bdc24320fe680", "c02782c2364cd921", "d2f284c1a6b001b6"),
    "hyperparameters": ({"hyperparameters": {"temperature": 0.7}}, "7b76db549e65e9bc", "b20d53260e5b362c",
                        "99f05c4585895cae", "cf3f6208c83522bf"),
    "generation": ({"generation": {"temperature": 0.3}}, "439eff20a2e97f55", "f30a05efb2962b74",
                   "f1a3c44b4c381672", "329cdfda35ed1110"),
    "both": ({"hyperparameters": {"temperature": 0.7}, "generation": {"temperature": 0.3}}, "439eff20a2e97f55",
             "9806addece9d6176", "e940c4672ee9255e", "329cdfda35ed1110"),
    "old evaluation.batch_size": ({"evaluation": {"batch_size": 4, "max_tokens": 16}}, "eb4dc1bb53996584",
                                  "838bdc24320fe680", "d7040ffd44fb1c78", "d2f284c1a6b001b6"),
    "new evaluation.throughput_batch_size": ({"evaluation": {"throughput_batch_size": 4, "max_tokens": 16}},
                                             "eb4dc1bb53996584", "838bdc24320fe680", "d7040ffd44fb1c78",
                                             "d2f284c1a6b001b6"),
}


@pytest.mark.parametrize("case", list(_BEFORE_THE_RENAME))
def test_renamed_knobs_keep_every_fingerprint_and_cache_key(case):
    from distilflow.jobspec import parse_spec
    from distilflow.pipeline.stages import stage_fingerprints
    from distilflow.teachers.base import request_fingerprint
    from distilflow.teachers.requests import generation_params

    sections, generate, train, evaluate, cache_key = _BEFORE_THE_RENAME[case]
    spec = parse_spec({**_FINGERPRINT_BASE, **sections}, case, Path("/data"))
    fingerprints = stage_fingerprints(spec, {"train": "aaaa", "validation": "bbbb", "test": "cccc"})
    assert (fingerprints["generate"], fingerprints["train"], fingerprints["evaluate"]) == (generate, train, evaluate)
    key = request_fingerprint({"model": "teacher-model"}, [{"role": "user", "content": "hi"}], generation_params(spec))
    assert key[:16] == cache_key


def test_an_evaluation_result_keeps_its_fingerprint_under_the_new_name():
    """A model's metrics.json is reused when its fingerprint matches: the rename must not invalidate it."""
    from distilflow.evaluate.config import ModelTarget, worker_config
    from distilflow.jobspec import parse_spec
    from distilflow.tasks import Example

    examples = [Example(id="t1", messages=[{"role": "user", "content": "hi"}], reference="x")]
    found = {}
    for spelling in ("batch_size", "throughput_batch_size"):
        spec = parse_spec({**_FINGERPRINT_BASE, "evaluation": {spelling: 4, "max_tokens": 16}}, spelling, Path("/d"))
        config = worker_config("teacher", ModelTarget.served(spec.teacher, "teacher"), task_type="qa",
                               examples=examples, settings=spec.evaluation, output_dir=Path("/tmp/x"))
        found[spelling] = config.with_fingerprint().fingerprint
    assert found == {"batch_size": "67a27050d363cd21", "throughput_batch_size": "67a27050d363cd21"}


def test_settings_added_or_redefaulted_since_keep_the_fingerprints_of_specs_that_do_not_set_them():
    """on_policy_warmup is new and student_temperature's default changed (1.0 -> 0.5): a spec without them keeps
    the train fingerprint it had ("neither" above); a spec that sets them hashes what it set."""
    from distilflow.jobspec import parse_spec
    from distilflow.pipeline.stages import stage_fingerprints

    def train_fingerprint(training: dict) -> str:
        spec = parse_spec({**_FINGERPRINT_BASE, "training": training}, "t", Path("/data"))
        return stage_fingerprints(spec, {"train": "aaaa", "validation": "bbbb", "test": "cccc"})["train"]

    before = _BEFORE_THE_RENAME["neither"][2]
    assert train_fingerprint({}) == train_fingerprint({"student_temperature": 1.0}) == before
    assert len({before, train_fingerprint({"student_temperature": 0.5}), train_fingerprint({"on_policy_warmup": 0.5}),
                train_fingerprint({"on_policy_warmup": 1.0})}) == 4
