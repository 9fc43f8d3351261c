"""Rendering chat messages to the text a model sees: the one place distilflow applies a chat template."""

from __future__ import annotations

from typing import Any

Message = dict[str, str]

# Used when a tokenizer has no chat template of its own (base models, hand-made test tokenizers).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat(tokenizer: Any, messages: list[Message], *, generation_prompt: bool = True) -> str:
    """The chat-template text of `messages`; with `generation_prompt`, ready for the model to answer."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
