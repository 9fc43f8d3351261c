"""Models: loading (hub ids, folders, .gguf files, pkg: references), chat prompt rendering, local generation and
the one OpenAI-protocol client. Below the stages: teachers, training and evaluation all load models from here."""

from distilflow.models.generation import GenerationParams, TopLogprobs, generate_batch
from distilflow.models.loading import (cache_home, context_length, load_causal_lm, load_tokenizer, local_model_dir,
                                       model_revision, parameter_count, pick_device, pick_dtype, resolve_model_ref, size_on_disk)
from distilflow.models.prompts import Message, PromptFormat, render_chat, render_prompt

__all__ = ["GenerationParams", "Message", "TopLogprobs", "cache_home", "context_length", "generate_batch",
           "load_causal_lm", "load_tokenizer", "local_model_dir", "model_revision", "parameter_count", "pick_device", "pick_dtype",
           "PromptFormat", "render_chat", "render_prompt", "resolve_model_ref", "size_on_disk"]
