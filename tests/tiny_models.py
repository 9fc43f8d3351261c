"""Tiny random causal LMs with a locally trained tokenizer, saved as normal HF folders (no network)."""

from __future__ import annotations

import copy
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Premise: A man is playing a guitar. Hypothesis: A person makes music. entailment neutral contradiction",
    "Solve the problem step by step, then give the final answer on its own line as #### 42",
    "Summarize the following text in one or two sentences. Context: Question: Answer with a short phrase.",
    "Hello! How can I help you today? I would like to book a table for two at seven o'clock.",
    "The quick brown fox jumps over the lazy dog 0123456789 + - * / = ? ! , . ; : ' \" ( )",
] * 20 + [" entailment neutral contradiction"] * 200  # so each label is one token




def build_tokenizer(folder: Path, vocab_size: int = 512, all_bytes: bool = True):
    """A byte-level BPE trained on CORPUS; `all_bytes=False` keeps only the ASCII bytes, so any token sequence
    decodes to text (a random model using it never writes half a UTF-8 character)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if all_bytes else
                                  [bytes_to_unicode()[b] for b in range(128)],
                                  show_progress=False)
    core.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(folder: Path, tokenizer, *, layers: int, hidden: int, seed: int = 0, vocab_size: int | None = None,
                **config_overrides):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True, **config_overrides,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# The architectures of the students users name first (Phi-3/3.5/4-mini are Phi3, Llama 3.x and SmolLM2 are Llama), at
# tiny size: model_type -> the transformers config class.
ARCHITECTURES = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
                 "phi3": "Phi3Config"}


def build_arch_model(folder: Path, tokenizer, arch: str, *, layers: int = 2, hidden: int = 64, seed: int = 0):
    """A tiny random model of architecture `arch` (a key of ARCHITECTURES), with the shared tokenizer."""
    import torch
    import transformers

    if arch == "phi3":  # Phi-3 tokenizers end a turn with <|end|>; llama.cpp's phi3 looks it up
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]})
    torch.manual_seed(seed)
    config = getattr(transformers, ARCHITECTURES[arch])(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=arch != "phi3")
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random norms and biases, so a layout mistake in a converter cannot hide behind ones/zeros
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_constant_model(folder: Path, tokenizer, text: str, *, layers: int = 2, hidden: int = 32,
                         arch: str = "llama"):
    """A model whose every next token is `text` (one token): a deterministic teacher for tests; `arch` is a key of
    ARCHITECTURES.

    Layers are zeroed so the residual stream is the input embedding; every embedding has a positive first
    component, and only the target token's lm_head row reads it, so that token always has the top logit.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    (token_id,) = tokenizer(text, add_special_tokens=False)["input_ids"]
    config = getattr(transformers, ARCHITECTURES[arch])(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[token_id, 0] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_pair(root: Path) -> tuple[Path, Path]:
    """A 4-layer teacher and a 2-layer student sharing one tokenizer."""
    tokenizer = build_tokenizer(root / "tokenizer")
    teacher = build_model(root / "teacher", tokenizer, layers=4, hidden=64, seed=1)
    student = build_model(root / "student", tokenizer, layers=2, hidden=32, seed=2)
    return teacher, student


def build_merge_tokenizer(merges: list[tuple[str, str]], alphabet: str = "abcdefghijklmnopqrstuvwxyz "):
    """A character BPE with the given merges and no pre-tokenizer, so a test knows every split by hand: merges that
    build whole words give a tokenizer that keeps words whole, a few short merges one that splits them."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<|endoftext|>", *alphabet])}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
