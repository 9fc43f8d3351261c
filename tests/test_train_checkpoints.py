"""A checkpoint counts only when its files verify: a truncated latest checkpoint is set aside with a warning and
training resumes from the one before it (instead of failing every resume)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from conftest import write_job
from distilflow.pipeline.runner import run_job
from distilflow.jobs.store import JobStore
from distilflow.jobspec import load_spec
from distilflow.train.recipe import checkpoint_problem, complete_checkpoints
from distilflow.workspace import Workspace


def _checkpoint(folder: Path, step: int) -> Path:
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.ones(64, 64), "b": torch.zeros(64)}, str(path / "model.safetensors"))
    torch.save({"state": {0: torch.ones(64)}}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_checkpoint_files_are_verified(tmp_path):
    good, *damaged = [_checkpoint(tmp_path, step) for step in (2, 4, 6, 8, 10)]
    _truncate(damaged[0] / "model.safetensors")
    _truncate(damaged[1] / "optimizer.pt")
    (damaged[2] / "trainer_state.json").write_text('{"global_step": 8')  # cut mid-write
    (damaged[3] / "model.safetensors").write_bytes(b"\x10\x00")  # not even a header length
    assert checkpoint_problem(good) is None
    assert "model.safetensors" in checkpoint_problem(damaged[0])
    assert "optimizer.pt is cut short" == checkpoint_problem(damaged[1])
    assert "trainer_state.json" in checkpoint_problem(damaged[2])
    assert "shorter than its header" in checkpoint_problem(damaged[3])
    assert complete_checkpoints(tmp_path) == [good]


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_models, caplog):
    spec = load_spec(write_job(tmp_path / "job", tiny_models, name="ckpt", n_train=8, n_val=0,
                               hyperparameters={"learning_rate": 1e-3, "batch_size": 2, "num_epochs": 1},
                               training={"save_steps": 2, "logging_steps": 1}))
    workspace = Workspace.open(tmp_path / "ws")
    run_job(spec, workspace, ["generate", "train"])
    paths = workspace.job("ckpt")
    latest = paths.checkpoints / "checkpoint-4"
    assert sorted(p.name for p in paths.checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    _truncate(latest / "model.safetensors", keep=0.9)  # e.g. a full disk: every file there, one cut short
    shutil.rmtree(paths.student_final)

    with caplog.at_level(logging.WARNING, logger="distilflow"):
        run_job(spec, workspace, ["train"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("checkpoint-4 is damaged (model.safetensors" in w and "resumes from the one before" in w
               for w in warnings), warnings
    metrics = JobStore(workspace.db_path).get("ckpt").stage("train").metrics
    assert Path(metrics["resumed_from"]).name == "checkpoint-2" and metrics["steps"] == 4
    assert (paths.student_final / "model.safetensors").exists()


@pytest.mark.parametrize("name", ["model.safetensors.index.json"])
def test_a_sharded_checkpoint_needs_every_shard(tmp_path, name):
    path = _checkpoint(tmp_path, 2)
    (path / name).write_text(json.dumps({"weight_map": {"w": "model.safetensors", "b": "model-2.safetensors"}}))
    assert checkpoint_problem(path) == "model-2.safetensors is missing"
