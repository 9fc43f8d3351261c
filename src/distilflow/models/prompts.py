"""Rendering chat messages to the text a model sees: the one place distilflow turns messages into a prompt.

Two formats. `chat` applies the tokenizer's chat template (instruct models, APIs' chat endpoint). `completion` is
plain text, for base models and for small instruct models that follow a many-shot pattern far better than a chat
(measured here: SmolLM2-135M-Instruct labels customer messages well above chance from a plain 40-shot prompt and
near chance through its chat template). A completion prompt is the earlier turns as "user answer" pairs, one per
paragraph, then the last user turn; the model continues with " answer".
"""

from __future__ import annotations

from typing import Any, Literal

Message = dict[str, str]
PromptFormat = Literal["chat", "completion"]

# Used when a tokenizer has no chat template of its own (base models, hand-made test tokenizers).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
COMPLETION_TURN_END = "\n\n"  # between the examples of a completion prompt (and where its answers stop)


def render_chat(tokenizer: Any, messages: list[Message], *, generation_prompt: bool = True) -> str:
    """The chat-template text of `messages`; with `generation_prompt`, ready for the model to answer."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def render_completion(messages: list[Message]) -> str:
    """Plain text: system text, then each earlier (user, assistant) pair as "user answer", then the last user turn.

    `[user "Message: hi\\nLabel:", assistant "greeting", user "Message: bye\\nLabel:"]` becomes
    "Message: hi\\nLabel: greeting\\n\\nMessage: bye\\nLabel:", which the model continues with " label".
    """
    parts: list[str] = []
    pending_user: str | None = None
    for message in messages:
        if message["role"] == "system":
            parts.append(message["content"].strip() + COMPLETION_TURN_END)
        elif message["role"] == "user":
            if pending_user is not None:  # two user turns in a row: keep both
                parts.append(pending_user + COMPLETION_TURN_END)
            pending_user = message["content"]
        else:
            parts.append(f"{pending_user or ''}{completion_answer(message['content'])}{COMPLETION_TURN_END}")
            pending_user = None
    return "".join(parts) + (pending_user or "")


def completion_answer(answer: str) -> str:
    """How an answer follows its prompt in completion format (after one space)."""
    return " " + answer.strip()


def render_prompt(tokenizer: Any, messages: list[Message], prompt_format: PromptFormat = "chat") -> str:
    """The prompt text a model answers, in either format."""
    if prompt_format == "completion":
        return render_completion(messages)
    return render_chat(tokenizer, messages)
