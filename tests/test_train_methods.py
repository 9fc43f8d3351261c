"""Training methods end to end on tiny random models: kd (forward KL, JSD with packing), sparse_kd from stored
top-k log-probs, the tokenizer/chat-template preflight, pruned students and LoRA."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_job
from tiny_models import build_model, build_tokenizer

from distilflow.errors import DistilflowError
from distilflow.pipeline.runner import run_job
from distilflow.jobspec import load_spec
from distilflow.workspace import Workspace

pytestmark = pytest.mark.timeout(300)


def _run(job: Path, workspace: Path, stages=("generate", "train")):
    record = run_job(load_spec(job), Workspace.open(workspace), list(stages))
    return next(s for s in record.stages if s.stage == "train")


def _scalars(workspace: Path, name: str) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = workspace / "jobs" / name / "logs" / "tensorboard"
    tags: set[str] = set()
    for events in folder.iterdir():
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.parametrize("training", [
    {"method": "kd", "divergence": "forward_kl", "kd_temperature": 2.0},
    {"method": "kd", "divergence": "jsd", "jsd_beta": 0.3, "packing": True, "loss_chunk_size": 7},
], ids=["forward_kl", "jsd_packed"])
def test_kd_job_trains_and_logs_distillation_terms(tmp_path, tiny_models, training):
    job = write_job(tmp_path / "job", tiny_models, name="kd", training={**training, "logging_steps": 1})
    train = _run(job, tmp_path / "w")
    assert train.status == "completed"
    metrics = train.metrics
    assert metrics["method"] == "kd" and metrics["steps"] >= 1
    assert metrics["validation_kd_loss"] >= 0 and metrics["validation_ce_loss"] > 0
    # loss = alpha * kd + (1 - alpha) * ce (default alpha 0.5), per label token
    assert metrics["validation_loss"] == pytest.approx(0.5 * metrics["validation_kd_loss"]
                                                       + 0.5 * metrics["validation_ce_loss"], rel=1e-4)
    final = tmp_path / "w" / "jobs" / "kd" / "student" / "final"
    assert (final / "model.safetensors").is_file()
    # Training turns the key/value cache off; the saved student must generate with it (else it is many times slower).
    assert json.loads((final / "config.json").read_text())["use_cache"] is True
    assert {"train/loss", "train/kd_loss", "train/ce_loss", "eval/loss", "eval/kd_loss"} <= _scalars(tmp_path / "w", "kd")
    log = json.loads((tmp_path / "w" / "jobs" / "kd" / "student" / "train_log.json").read_text())
    assert any("kd_loss" in entry for entry in log)


def test_sparse_kd_job_trains_from_stored_top_logprobs(tmp_path, tiny_models):
    job = write_job(tmp_path / "job", tiny_models, name="sparse", generation={"max_tokens": 8, "top_logprobs": 8},
                    training={"method": "sparse_kd", "divergence": "reverse_kl", "logging_steps": 1})
    train = _run(job, tmp_path / "w")
    assert train.status == "completed"
    metrics = train.metrics
    assert metrics["method"] == "sparse_kd"
    assert metrics["stored_teacher_tokens"] > 0 and metrics["unmappable_teacher_tokens"] == 0
    rows = metrics["rows_with_teacher_targets"] + metrics["rows_without_teacher_targets"]
    assert rows == 10  # 8 training + 2 validation rows, each counted once
    assert (tmp_path / "w" / "jobs" / "sparse" / "student" / "final" / "model.safetensors").is_file()


def test_logit_methods_train_a_student_with_another_vocabulary_through_the_alignment(tmp_path, tiny_models):
    tokenizer = build_tokenizer(tmp_path / "other-tokenizer", vocab_size=320)  # splits what the teacher keeps whole
    other = build_model(tmp_path / "other-student", tokenizer, layers=2, hidden=32, seed=3)
    models = {**tiny_models, "student": other}
    for method, generation in (("kd", {}), ("sparse_kd", {"top_logprobs": 4})):
        job = write_job(tmp_path / method, models, name=method, training={"method": method},
                        generation={"max_tokens": 8, **generation})
        train = _run(job, tmp_path / "w")
        assert train.status == "completed"
        # Every row is counted: with targets, or without and why (the random teacher's sampled tokens are seldom
        # among its stored top-4, where sparse_kd looks for the teacher's own tokens).
        assert train.metrics["rows_with_teacher_targets"] + train.metrics["rows_without_teacher_targets"] == 10
    assert set(train.metrics["rows_without_teacher_targets_by_reason"]) <= {"teacher_tokens_not_in_stored_top_k"}
    # Matching inner layers still needs one tokenizer: refused before the teacher runs.
    job = write_job(tmp_path / "layers", models, name="layers", generation={"max_tokens": 8},
                    training={"method": "kd", "hidden_states": {"layers": [[1, 3]]}})
    with pytest.raises(DistilflowError, match="tokenizer"):
        _run(job, tmp_path / "w")
    assert not (tmp_path / "w" / "jobs" / "layers" / "synthetic").exists()


def test_kd_refuses_a_student_whose_chat_template_places_the_answer_differently(tmp_path, tiny_models):
    student = tmp_path / "student"
    shutil.copytree(tiny_models["student"], student)
    config = json.loads((student / "tokenizer_config.json").read_text())
    (student / "chat_template.jinja").unlink(missing_ok=True)
    config["chat_template"] = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + "
                               "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
                               "{{ '<|im_start|>assistant: ' }}{% endif %}")
    (student / "tokenizer_config.json").write_text(json.dumps(config))
    job = write_job(tmp_path / "job", {**tiny_models, "student": student}, name="tpl", training={"method": "kd"})
    with pytest.raises(DistilflowError, match="chat template"):
        _run(job, tmp_path / "w")


def test_student_pruned_from_the_teacher_trains_with_kd_and_is_saved_with_two_layers(tmp_path, tiny_models):
    job = write_job(tmp_path / "job", tiny_models, name="pruned", training={"method": "kd"},
                    student={"model": str(tiny_models["teacher"]), "prune": [0, 3]})
    train = _run(job, tmp_path / "w")
    assert train.status == "completed"
    student = tmp_path / "w" / "jobs" / "pruned" / "student"
    for folder in ("initial", "final"):
        config = json.loads((student / folder / "config.json").read_text())
        assert config["num_hidden_layers"] == 2, folder
        assert (student / folder / "tokenizer.json").is_file()
    spec = load_spec(job)
    paths = Workspace.open(tmp_path / "w").job("pruned")
    assert paths.baseline_student(spec) == str(student / "initial")  # evaluation's baseline: pruned, untrained


def test_pruned_copy_keeps_the_chosen_layers_and_generates(tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    from distilflow.errors import SpecError
    from distilflow.jobspec import PruneRule
    from distilflow.train.prune import layers_to_keep, prune_layers

    assert layers_to_keep(PruneRule(every=2), 5) == [0, 2, 4]
    assert layers_to_keep(PruneRule(every=2), 4) == [0, 2, 3]
    assert layers_to_keep(PruneRule(every=2, keep_last=False), 4) == [0, 2]
    assert layers_to_keep([3, 0, -1], 5) == [0, 3, 4]
    with pytest.raises(SpecError, match="does not exist"):
        layers_to_keep([0, 4], 4)
    source = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"])
    pruned = prune_layers(AutoModelForCausalLM.from_pretrained(tiny_models["teacher"]), [0, 3])
    assert len(pruned.model.layers) == 2 and pruned.config.num_hidden_layers == 2
    assert torch.equal(pruned.model.layers[1].mlp.up_proj.weight, source.model.layers[3].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    out = pruned.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False)  # KV cache indices valid
    assert out.shape == (1, 7)


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
@pytest.mark.parametrize("merge", [True, False])
def test_lora_trains_adapters_and_saves_merged_or_adapter(tmp_path, tiny_models, merge):
    import torch

    from distilflow.models import load_causal_lm

    job = write_job(tmp_path / "job", tiny_models, name="lora",
                    training={"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "merge": merge}})
    train = _run(job, tmp_path / "w")
    assert train.status == "completed"
    final = tmp_path / "w" / "jobs" / "lora" / "student" / "final"
    assert (final / "adapter_config.json").exists() is not merge
    model = load_causal_lm(str(final), device="cpu")  # what evaluation does, merged or not
    base = load_causal_lm(str(tiny_models["student"]), device="cpu")
    changed = [n for n, p in model.named_parameters() if "lora" not in n and n in dict(base.named_parameters())
               and not torch.equal(p, dict(base.named_parameters())[n])]
    if merge:
        assert not any("lora" in name for name, _ in model.named_parameters())
        assert changed and all("proj" in name for name in changed)  # only adapted linear layers moved
    else:
        assert any("lora" in name for name, _ in model.named_parameters()) and not changed
