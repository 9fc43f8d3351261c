"""Training with more than one process (accelerate, gloo DDP on CPU) after `distilflow generate`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import pytest
from conftest import cli_env, run_cli, write_job

# Two processes launched through accelerate (~25 s): CI runs them with the slow tests.
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def _accelerate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *args], capture_output=True, text=True,
                          timeout=240, env=cli_env())


def test_accelerate_launch_two_processes_trains_one_model(tmp_path, tiny_models):
    job = write_job(tmp_path / "job", tiny_models, name="ddp", n_train=8,
                    training={"method": "kd", "logging_steps": 1, "save_steps": 1})
    workspace = tmp_path / "w"
    done = run_cli("generate", str(job), "-w", str(workspace))
    assert done.returncode == 0, done.stderr
    shutil.copytree(workspace, tmp_path / "w2")
    student = workspace / "jobs" / "ddp" / "student"

    # Two processes with gloo on CPU (accelerate's --multi_gpu launcher is torchrun; without GPUs it uses gloo).
    done = _accelerate("--multi_gpu", "--num_processes", "2", "--main_process_port", "29517", "-m", "distilflow",
                       "train", str(job), "--workspace", str(workspace))
    assert done.returncode == 0, done.stderr[-3000:]
    # 8 rows, batches of 2 per process, 2 processes: 2 optimizer steps of 4 rows each.
    state = json.loads((student / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["max_steps"] == 2
    assert {p.name for p in (student / "checkpoints" / "checkpoint-2").glob("rng_state*")} == \
        {"rng_state_0.pth", "rng_state_1.pth"}  # one per rank: both trained
    assert (student / "final" / "model.safetensors").is_file()
    # Only rank 0 writes: one final model, one TensorBoard event file, one log, no stray staging folders.
    assert sorted(p.name for p in student.iterdir()) == ["checkpoints", "final", "train_log.json"]
    writers = {p.name.split(".")[-2] for p in (workspace / "jobs" / "ddp" / "logs" / "tensorboard").iterdir()}
    assert len(writers) == 1  # event files of one process (named ...<host>.<pid>.<n>)
    assert not (student / "checkpoints" / "runs").exists()
    shown = json.loads(run_cli("jobs", "show", "ddp", "-w", str(workspace), "--json").stdout)
    train = next(s for s in shown["stages"] if s["stage"] == "train")
    assert train["status"] == "completed" and train["metrics"]["steps"] == 2

    # The command line: accelerate's --cpu launcher starts one process unless an MPI hostfile is given.
    done = _accelerate("--cpu", "--num_processes", "2", "-m", "distilflow", "train", str(job), "--workspace",
                       str(tmp_path / "w2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "w2" / "jobs" / "ddp" / "student" / "final" / "model.safetensors").is_file()
