"""The students users name first (Llama/SmolLM2, Mistral, Qwen2, Qwen3, Phi3: Phi-3/3.5/4-mini), each built at tiny
size from its config and taken through pruning, kd, LoRA, evaluation and GGUF export; the exported file must give
llama.cpp the logits transformers gives. An architecture the exporter does not know is refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_job
from tiny_models import ARCHITECTURES, build_arch_model, build_tokenizer

from distilflow import Client
from distilflow.errors import DistilflowError
from distilflow.models.llamacpp import load_llama

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("arch-tokenizer"))


def _logits_agree(folder: Path, gguf: Path, text: str) -> float:
    """Largest |llama.cpp logit - transformers logit| over a prompt, relative to the largest logit."""
    import torch
    from transformers import AutoTokenizer

    from distilflow.models import load_causal_lm

    ids = AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    llm = load_llama(gguf, n_ctx=128, logits_all=True)
    try:
        llm.eval(ids)
        ours = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    with torch.no_grad():
        theirs = load_causal_lm(str(folder), device="cpu")(torch.tensor([ids])).logits[0].numpy()  # adapters applied
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# Phi3 (fused qkv and gate/up) and Qwen3 (q/k norms, llama.cpp's NEOX rope) run by default; Llama (also exported by
# test_export.py), Mistral (written with llama's layout) and Qwen2 (Qwen3 less the norms, plus biases) run with the
# slow tests (CI), which keeps the default suite's share of this file near 12 s.
@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in ("llama", "mistral", "qwen2") else a
                                  for a in sorted(ARCHITECTURES)])
@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_student_of_each_architecture_is_pruned_distilled_with_lora_evaluated_and_exported(tmp_path, tokenizer, arch):
    # The teacher is a 3-layer model of the architecture; the student its copy pruned to layers 0 and 2. (Its folder
    # names the exported model; llama-cpp-python 0.3.36 fails to load a phi3 file whose general.name holds "phi3" or
    # "phi-3" unless its tokenizer is a real Phi-3 one, hence "tiny-phi".)
    teacher = build_arch_model(tmp_path / f"tiny-{arch.rstrip('3')}", tokenizer, arch, layers=3, seed=1)
    job = write_job(tmp_path / "job", {"teacher": teacher, "student": teacher}, name=f"arch-{arch}", n_train=4,
                    n_val=0, n_test=2, student={"model": str(teacher), "prune": [0, 2]},
                    # Qwen3's adapter is saved unmerged: export merges it.
                    training={"method": "kd", "max_steps": 2,
                              "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "merge": arch != "qwen3"}},
                    generation={"max_tokens": 4},
                    evaluation={"max_tokens": 4, "warmup": 0, "models": ["distilled"], "throughput": False,
                                "uncached_examples": 0, "bootstrap_samples": 0})
    client = Client(tmp_path / "w")
    from distilflow.jobspec import load_spec

    record = client.jobs.run(load_spec(job))
    assert record.status == "completed", record.error
    metrics = json.loads((tmp_path / "w" / "jobs" / f"arch-{arch}" / "eval" / "distilled" / "metrics.json").read_text())
    assert metrics["examples"] == 2 and metrics["parameters"] > 0
    gguf = client.models.export(f"arch-{arch}", format="gguf", quantize="f16")
    final = tmp_path / "w" / "jobs" / f"arch-{arch}" / "student" / "final"
    assert (final / "adapter_config.json").exists() is (arch == "qwen3")
    from gguf import GGUFReader

    assert GGUFReader(gguf).fields[f"{arch if arch != 'mistral' else 'llama'}.block_count"].contents() == 2
    assert _logits_agree(final, gguf, "Hello number 200, how are you? The quick brown fox") < 2e-3


def test_export_refuses_an_architecture_llama_cpp_layout_is_not_written_for(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from distilflow.export.to_gguf import write_gguf

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(DistilflowError, match=r"cannot export a 'gpt2' model to GGUF: supported architectures are "
                                              r"llama, mistral, phi3, qwen2, qwen3 \(use --format hf"):
        write_gguf(folder, tmp_path / "out.gguf", "q8_0", name="gpt2")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.tmp"))


def test_export_refuses_llama3_rope_scaling_in_one_sentence(tmp_path, tokenizer):
    import transformers

    from distilflow.export.to_gguf import write_gguf

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=4, rope_parameters=rope)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "llama31")
    with pytest.raises(DistilflowError, match=r"^cannot export to GGUF: rope scaling 'llama3' is not converted yet "
                                              r"\(use --format hf\)$"):
        write_gguf(tmp_path / "llama31", tmp_path / "out.gguf", "f16", name="llama31")
    assert not list(tmp_path.glob("*.gguf"))
