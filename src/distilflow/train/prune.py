"""Depth pruning (Minitron-style): a smaller student made of some of the teacher's decoder layers.

The pruned copy keeps the embeddings, final norm, LM head and tokenizer of the source model, so logit
distillation against the source stays possible. transformers has no layer-dropping helper (its
`prune_heads` removes attention heads), hence this small module.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from distilflow.errors import SpecError
from distilflow.jobspec import PruneRule

# Where decoder layers live in the common causal-LM families (checked in order).
_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.layers")


def layers_to_keep(rule: list[int] | PruneRule, num_layers: int) -> list[int]:
    """Sorted, unique layer indices to keep; negative indices count from the end, as in Python."""
    if isinstance(rule, PruneRule):
        keep = list(range(0, num_layers, rule.every))
        if rule.keep_last and num_layers - 1 not in keep:
            keep.append(num_layers - 1)
        return keep
    if not rule:
        raise SpecError("student.prune: give at least one layer index to keep")
    kept = []
    for index in rule:
        if not -num_layers <= index < num_layers:
            raise SpecError(f"student.prune: layer {index} does not exist (the model has {num_layers} layers, "
                            f"indices 0..{num_layers - 1})")
        kept.append(index % num_layers)
    if len(set(kept)) != len(kept):
        raise SpecError(f"student.prune: layer indices must be unique (got {rule})")
    return sorted(kept)


def decoder_layers(model: Any) -> tuple[Any, str, nn.ModuleList]:
    """(owner module, attribute name, the ModuleList of decoder layers)."""
    for path in _LAYER_PATHS:
        owner: Any = model
        *parents, name = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
            if owner is None:
                break
        layers = getattr(owner, name, None) if owner is not None else None
        if isinstance(layers, nn.ModuleList):
            return owner, name, layers
    raise SpecError(f"student.prune: cannot find the decoder layers of {type(model).__name__} "
                    f"(looked for {', '.join(_LAYER_PATHS)})")


def prune_layers(model: Any, keep: list[int]) -> Any:
    """Keep only the decoder layers `keep` (in place); the config and per-layer indices follow."""
    owner, name, layers = decoder_layers(model)
    kept = nn.ModuleList(layers[i] for i in keep)
    for new_index, layer in enumerate(kept):
        # The KV cache is indexed by layer_idx: renumber so generation with the pruned model stays correct.
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    setattr(owner, name, kept)
    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    return model
