"""A Hugging Face folder (the merged student) -> one GGUF file that llama.cpp runs, written with the `gguf`
package: its writer, its tensor-name maps and its quantizers. Only the Llama-family layouts the students use here
are converted (Llama/SmolLM2, Mistral, Qwen2, Qwen3, Phi3); anything else is refused before a byte is written."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilflow.errors import DistilflowError

log = logging.getLogger(__name__)

QUANTIZATIONS = ("f16", "q8_0", "q4_1", "q4_0")


@dataclass(frozen=True)
class Layout:
    """How llama.cpp names one HF architecture, and whether q/k rows must be reordered for its rope."""

    arch: str  # gguf.MODEL_ARCH member name
    permute_qk: bool  # HF's rotate-half rope layout -> llama.cpp's interleaved pairs (its "normal" rope)


LAYOUTS = {
    "llama": Layout("LLAMA", True),
    "mistral": Layout("LLAMA", True),  # llama.cpp runs Mistral as llama (no sliding window at these lengths)
    "qwen2": Layout("QWEN2", False),
    "qwen3": Layout("QWEN3", False),
    "phi3": Layout("PHI3", False),
}


def quant_type(name: str):
    """The GGML type of a --quantize value; q4_k_m is refused because the gguf package cannot produce it."""
    from gguf import GGMLQuantizationType as Q

    types = {"f16": Q.F16, "q8_0": Q.Q8_0, "q4_1": Q.Q4_1, "q4_0": Q.Q4_0}
    if name == "q4_k_m":
        raise DistilflowError("--quantize q4_k_m is not available: the gguf package has no Q4_K quantizer; use "
                              "q4_1, q4_0 or q8_0, or run llama.cpp's llama-quantize on the f16 file")
    if name not in types:
        raise DistilflowError(f"unknown --quantize {name!r} (choose from {', '.join(QUANTIZATIONS)})")
    return types[name]


def check_convertible(config: dict[str, Any]) -> Layout:
    """The layout of a model's config.json, or one sentence saying why it cannot become a GGUF file."""
    model_type = config.get("model_type")
    if model_type not in LAYOUTS:
        raise DistilflowError(f"cannot export a {model_type!r} model to GGUF: supported architectures are "
                              f"{', '.join(sorted(LAYOUTS))} (use --format hf for this model)")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        # Llama 3.1+'s llama3 scaling needs llama.cpp's rope_freqs tensor; llama-cpp-python 0.3.36 refused the one
        # written here ("wrong number of tensors"), so it is refused rather than shipped unchecked.
        raise DistilflowError(f"cannot export to GGUF: rope scaling {rope.get('rope_type')!r} is not converted yet "
                              "(use --format hf)")
    return LAYOUTS[model_type]


def _reorder_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q/k projection from HF's halves layout to llama.cpp's adjacent pairs, per head."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _encode(name: str, array: np.ndarray, qtype) -> tuple[np.ndarray, Any]:
    """Quantize a 2-D weight; norms and biases stay f32 and rows a block cannot divide fall back to f16
    (llama.cpp needs whole blocks per row). With 4-bit blocks the embeddings and output head stay 8-bit, as llama.cpp's
    own 4-bit types keep them wider (measured on SmolLM2-135M: argmax agreement with fp32 0.49 -> see bench/README)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    if array.ndim < 2:
        return array.astype(np.float32), GGMLQuantizationType.F32
    if qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1) and name in ("token_embd.weight",
                                                                                  "output.weight"):
        qtype = GGMLQuantizationType.Q8_0
    block = GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        qtype = GGMLQuantizationType.F16
    return quants.quantize(array.astype(np.float32), qtype), qtype


def _tokenizer(writer: Any, folder: Path, vocab_size: int, layout: Layout) -> None:
    """A byte-level BPE tokenizer (tokenizer.json) as GGUF keys; special tokens are marked CONTROL so llama.cpp
    reads `<|im_start|>` in a rendered chat as one token."""
    import gguf

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE" or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise DistilflowError("cannot export to GGUF: only byte-level BPE tokenizers are converted (this one is "
                              f"{model.get('type')}); use --format hf")
    names = {index: text for text, index in model["vocab"].items()}
    types = {index: gguf.TokenType.NORMAL for index in names}
    for added in data.get("added_tokens", []):
        names[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    tokens, kinds = [], []
    for index in range(vocab_size):  # a padded embedding gets unused placeholder tokens
        tokens.append(names.get(index, f"[PAD{index}]"))
        kinds.append(types.get(index, gguf.TokenType.UNUSED))
    if layout.arch == "PHI3" and "<|end|>" not in tokens:  # llama.cpp's phi3 looks it up and fails to load without
        raise DistilflowError("cannot export this phi3 model to GGUF: llama.cpp's phi3 needs the <|end|> token of "
                              "Phi-3 tokenizers, which this tokenizer lacks; use --format hf")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(data.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # llama.cpp's default for a BPE vocabulary may differ from transformers': state whether a BOS token is added.
    special.add_special_token.setdefault("bos", _adds_bos(folder))
    special.add_to_gguf(writer, quiet=True)


def _adds_bos(folder: Path) -> bool:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _pre_tokenizer(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for how text is split before BPE: GPT-2's regex (a plain ByteLevel), or the
    regex a Split step names, matched against transformers' table of llama.cpp's splits."""
    if pre is None or (pre.get("type") == "ByteLevel" and pre.get("use_regex", True)):
        return "gpt-2"
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    steps = pre.get("pretokenizers", [pre])
    regexes = {(s.get("pattern") or {}).get("Regex") for s in steps if s.get("type") == "Split"}
    kinds = [s.get("type") for s in steps]
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        if regex in regexes:
            return name
    raise DistilflowError(f"cannot export to GGUF: the tokenizer's pre-tokenizer ({', '.join(map(str, kinds))}) "
                          "has no llama.cpp equivalent known here; use --format hf")


def _hyperparameters(writer: Any, config: dict[str, Any]) -> int:
    """Architecture keys; returns the vocabulary size."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor",
                                                            config.get("partial_rotary_factor", 1.0))))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    vocab = config["vocab_size"]
    writer.add_vocab_size(vocab)
    return vocab


def _tensors(state: dict[str, Any], config: dict[str, Any], layout: Layout, arch: Any,
             tied: bool) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every weight, renamed by gguf's TensorNameMap."""
    import gguf

    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    out = []
    for hf_name, tensor in state.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise DistilflowError(f"cannot export to GGUF: no llama.cpp name for tensor {hf_name!r}")
        array = tensor.float().numpy()
        if layout.permute_qk and hf_name.endswith("q_proj.weight"):
            array = _reorder_rope_rows(array, heads)
        elif layout.permute_qk and hf_name.endswith("k_proj.weight"):
            array = _reorder_rope_rows(array, kv_heads)
        out.append((name, array))
    return out


def write_gguf(folder: Path, target: Path, quantize: str, *, name: str, license: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """Convert the HF folder to `target` (written beside it, then renamed: never half-written)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    qtype = quant_type(quantize)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    layout = check_convertible(config)
    arch = gguf.MODEL_ARCH[layout.arch]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = model.state_dict()
    staging = target.with_name(f".{target.name}.tmp")
    writer = gguf.GGUFWriter(staging, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_name(name)
        if license:
            writer.add_license(license)
        vocab = _hyperparameters(writer, config)
        _tokenizer(writer, folder, vocab, layout)
        file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                      "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
        writer.add_file_type(file_types[quantize])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        tensors = _tensors(state, config, layout, arch, tied)
        for done, (tensor_name, array) in enumerate(tensors, 1):
            data, kind = _encode(tensor_name, array, qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=kind)
            if progress:
                progress(done, len(tensors))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
    return target
