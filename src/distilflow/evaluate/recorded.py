"""A `recorded` teacher has no model to run: it can be scored on quality only, from recorded answers to the
very test inputs. Speed and memory are not measurable (the answers were produced elsewhere, some time ago).

Recorded rows are read leniently, in the forms users export: {"messages": [..., assistant]},
{"prompt": str | messages, "response" | "completion" | "output": str}, and OpenAI stored-completion
exports ({"request": {"messages"}, "response": {"choices": [{"message": {"content"}}]}}, or "input"/"choices").
A test input matches a recorded row when their last user turns are the same text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.evaluate.local_model import last_user_text

if TYPE_CHECKING:
    from distilflow.runner import StageContext


def _text(value: Any) -> str | None:
    """A response in any of the recorded forms, as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "choices" in value:
            return _text(value["choices"])
        if "message" in value:
            return _text(value["message"])
        if "content" in value:
            return _text(value["content"])
    if isinstance(value, list) and value:
        if all(isinstance(m, dict) and "role" in m for m in value):  # messages: the last assistant turn
            return next((_text(m) for m in reversed(value) if m.get("role") == "assistant"), None)
        return _text(value[0])
    return None


def _prompt_key(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict) and "messages" in value:
        return _prompt_key(value["messages"])
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        text = last_user_text([m for m in value if "role" in m and isinstance(m.get("content"), str)])
        return text.strip() or None
    return None


def recorded_pair(row: dict[str, Any]) -> tuple[str, str] | None:
    """(last user text, response text) of one recorded row; None when the row has neither."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant":
        prompt, response = _prompt_key(messages[:-1]), _text(messages[-1])
    else:
        prompt = _prompt_key(row.get("prompt") or row.get("input") or row.get("request") or messages)
        response = _text(row.get("response") or row.get("completion") or row.get("output") or row.get("choices"))
    return (prompt, response) if prompt and response is not None else None


def load_recorded(path: str | Path) -> dict[str, str]:
    answers: dict[str, str] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the teacher stage reports bad rows; here an unreadable row simply does not match
            pair = recorded_pair(row) if isinstance(row, dict) else None
            if pair:
                answers.setdefault(*pair)
    return answers


def evaluate_recorded(ctx: "StageContext", config: dict[str, Any]) -> dict[str, Any] | None:
    """Score the recorded answers to the test inputs; None when some test input has no recorded answer."""
    from distilflow.evaluate.worker import finish
    from distilflow.generate import teacher_messages

    path = Path(config["model"])
    if not path.is_file():
        return None
    answers = load_recorded(path)
    predictions = []
    for example in ctx.examples("test"):
        keys = (last_user_text(example.messages).strip(),
                last_user_text(teacher_messages(example, ctx.spec)).strip())
        answer = next((answers[k] for k in keys if k in answers), None)
        if answer is None:
            return None
        predictions.append({"id": example.id, "input": keys[0], "prediction": answer,
                            "reference": example.reference})
    figures = {"note": "recorded answers: scored on quality only; speed and memory were not measured",
               "network": False, "latency_mean_s": None, "peak_memory_mb": None, "parameters": None}
    return finish({**config, "kind": "recorded"}, predictions, figures)
