"""kill -9 during training, run again: training resumes from the last complete checkpoint and ends with the
same weights as an uninterrupted run with the same seed (through the CLI, as a user runs it)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import run_cli, start_cli, write_job

pytestmark = pytest.mark.timeout(300)


def _final_weights(workspace: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(workspace / "jobs" / name / "student" / "final" / "model.safetensors"))


def _wait_for_checkpoint(checkpoints: Path, step: int, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (checkpoints / f"checkpoint-{step}" / "trainer_state.json").exists():
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before checkpoint-{step}:\n{process.stdout.read()}")
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint-{step} after {timeout} s")


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_kill_9_then_rerun_resumes_to_the_same_weights(tmp_path, tiny_models):
    import torch

    # 3 epochs of 6 steps (12 rows, batches of 2): the kill lands mid-run, the resume crosses epoch boundaries.
    job = write_job(tmp_path / "job", tiny_models, name="resume", n_train=12,
                    hyperparameters={"learning_rate": 1e-3, "batch_size": 2, "num_epochs": 3, "temperature": 0.7},
                    training={"method": "kd", "divergence": "jsd", "save_steps": 2, "logging_steps": 1,
                              "lora": {"r": 4, "alpha": 8, "dropout": 0.1}})
    interrupted, uninterrupted = tmp_path / "w1", tmp_path / "w2"
    done = run_cli("generate", str(job), "-w", str(interrupted))
    assert done.returncode == 0, done.stderr
    shutil.copytree(interrupted, uninterrupted)  # the same synthetic data for both runs

    done = run_cli("train", str(job), "-w", str(uninterrupted))
    assert done.returncode == 0, done.stderr
    reference = _final_weights(uninterrupted, "resume")

    checkpoints = interrupted / "jobs" / "resume" / "student" / "checkpoints"
    process = start_cli("train", str(job), "-w", str(interrupted))
    try:
        _wait_for_checkpoint(checkpoints, 4, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (interrupted / "jobs" / "resume" / "student" / "final").exists(), "killed too late: training ended"
    killed_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert killed_at < 18

    done = run_cli("train", str(job), "-w", str(interrupted))
    assert done.returncode == 0, done.stderr
    shown = json.loads(run_cli("jobs", "show", "resume", "-w", str(interrupted), "--json").stdout)
    metrics = next(s["metrics"] for s in shown["stages"] if s["stage"] == "train")
    assert metrics["resumed_from"] and Path(metrics["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(metrics["resumed_from"]).name.split("-")[1]) >= 4
    assert metrics["steps"] == 18

    resumed = _final_weights(interrupted, "resume")
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)

    # Data order: the per-step training losses after the resume point are those of the uninterrupted run.
    def losses(workspace: Path) -> dict[int, float]:
        log = json.loads((workspace / "jobs" / "resume" / "student" / "train_log.json").read_text())
        return {e["step"]: e["loss"] for e in log if "loss" in e}

    assert losses(interrupted).keys() == losses(uninterrupted).keys() == set(range(1, 19))
    for step, value in losses(uninterrupted).items():
        assert losses(interrupted)[step] == pytest.approx(value, rel=1e-5), step
