"""FSDP2 with two CPU processes (gloo): distilflow's distillation loss on a student sharded with torch's `fully_shard`,
run as DistillationTrainer runs it, gives the unsharded loss and gradients. What this does not cover: accelerate
applies an FSDP config only when the processes have accelerators, so the Trainer path (`accelerate launch
--config_file fsdp.yaml ... train`) is not FSDP on CPU (docs/training.md says exactly what is tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env
from llama_server import free_port

# ~15 s (two processes importing torch, transformers and TRL): with the slow tests, which CI runs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_kd_loss_on_an_fsdp2_sharded_student_matches_the_unsharded_one(tiny_models):
    worker = Path(__file__).with_name("fsdp_worker.py")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(worker), str(tiny_models["student"]), str(tiny_models["teacher"])],
                          capture_output=True, text=True, timeout=240, env=cli_env(OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["world"] == 2 and result["head_is_sharded"]  # the DTensor branch of lm_head() ran
    assert result["loss"] == pytest.approx(result["expected"], rel=1e-5)
    assert result["worst_grad_rel_diff"] < 1e-4
