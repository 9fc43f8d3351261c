"""Batched chat generation with a local transformers model (used by the hf teacher and by evaluation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from distilflow.models.prompts import COMPLETION_TURN_END, Message, PromptFormat, render_prompt


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    choices: tuple[str, ...] = ()  # answer by ranking these (labels) instead of generating; see scoring.py

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        if self.choices:
            data["choices"] = list(self.choices)
        else:  # keys of generated answers stay what they were before ranking existed (no re-paying)
            del data["choices"]
        return data


@dataclass
class TopLogprobs:
    """Top-K log-probabilities per generated position of one sample (K columns per row).

    `token_ids` index the teacher tokenizer's vocabulary; `tokens` hold the token strings where the
    backend returns strings only (APIs), to be mapped to ids later.
    """

    logprobs: list[list[float]]
    token_ids: list[list[int]] | None = None
    tokens: list[list[str]] | None = None


@dataclass
class LocalOutput:
    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: list[str] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] | None = None


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate_batch(model, tokenizer, conversations: list[list[Message]], params: GenerationParams,
                   prompt_format: PromptFormat = "chat") -> list[LocalOutput]:
    """Answer each conversation `params.num_samples` times; results are in input order. In completion format an
    answer also ends at the blank line that separates a completion prompt's examples."""
    import torch

    prompts = [render_prompt(tokenizer, messages, prompt_format) for messages in conversations]
    if prompt_format == "completion" and COMPLETION_TURN_END not in params.stop:
        params = replace(params, stop=(*params.stop, COMPLETION_TURN_END))
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    sampling = params.temperature > 0
    kwargs: dict = {
        "max_new_tokens": params.max_tokens,
        "do_sample": sampling,
        "num_return_sequences": params.num_samples,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "return_dict_in_generate": True,
        "output_logits": params.top_logprobs > 0,
    }
    if sampling:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=None)
        if params.seed is not None:
            torch.manual_seed(params.seed)
    else:
        # Greedy: clear sampling defaults a model's generation_config may carry (avoids warnings).
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if params.stop:
        kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
    with torch.inference_mode():
        result = model.generate(**encoded, **kwargs)
    prompt_len = encoded["input_ids"].shape[1]
    generated = result.sequences[:, prompt_len:]
    prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id}

    outputs: list[LocalOutput] = []
    for i in range(len(conversations)):
        texts, reasons, lengths, logprobs = [], [], [], []
        for s in range(params.num_samples):
            row = i * params.num_samples + s
            ids = generated[row].tolist()
            length = next((j for j, t in enumerate(ids) if t in special), len(ids))
            finished = length < len(ids)
            text, stopped = _cut_at_stop(tokenizer.decode(ids[:length], skip_special_tokens=True), params.stop)
            texts.append(text.strip() if prompt_format == "completion" else text)
            reasons.append("stop" if finished or stopped else "length")
            lengths.append(length)
            if params.top_logprobs:
                steps = torch.stack([step[row] for step in result.logits[:length]]) if length else None
                logprobs.append(_top_k(steps, params.top_logprobs))
        outputs.append(LocalOutput(
            texts=texts,
            prompt_tokens=int(prompt_tokens[i]),
            completion_tokens=sum(lengths),
            finish_reasons=reasons,
            top_logprobs=logprobs or None,
        ))
    return outputs


def _top_k(logits, k: int) -> TopLogprobs:
    import torch

    if logits is None:
        return TopLogprobs(logprobs=[], token_ids=[])
    values, ids = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return TopLogprobs(logprobs=values.tolist(), token_ids=ids.tolist())
