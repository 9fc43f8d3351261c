"""Chat logs -> training inputs (`distilflow inputs-from-logs`): OpenAI chat-completions request logs (the request
body, with or without its response), stored-completions and Batch API exports, or plain `messages` JSONL. Each
logged exchange becomes one input in chat form (its turns up to the last user turn); its logged answer is either
kept as a recorded teacher answer (a file the `recorded` backend reads, so the job pays for nothing it already
has) or discarded, so that the job's teacher answers afresh. The forms are the recorded backend's own (recorded.py
reads them); identical prompts are kept once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distilflow.errors import DataError
from distilflow.io import read_json_objects, write_jsonl_atomic
from distilflow.models import Message
from distilflow.teachers.recorded import _completion_object, _prompt_messages

AnswerUse = Literal["keep", "discard"]
INPUTS_FILE, RECORDED_FILE = "inputs.jsonl", "recorded.jsonl"


@dataclass
class LogImport:
    """What one import wrote, and what it skipped."""

    inputs: Path
    recorded: Path | None
    rows: int = 0
    kept: int = 0
    answers: int = 0  # inputs with a logged answer (kept as recorded answers, or discarded)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items()) or "none"
        lines = [f"{self.kept} training inputs from {self.rows} logged rows -> {self.inputs} (skipped: {skipped})"]
        if self.recorded is not None:
            lines.append(f"{self.answers} logged answers kept as the teacher's -> {self.recorded}; in the job spec:\n"
                         f"  training_data: {self.inputs}\n  teacher: {{backend: recorded, model: logged, path: {self.recorded}}}")
        else:
            lines.append(f"logged answers discarded ({self.answers}); the job's teacher answers every input: "
                         f"training_data: {self.inputs}")
        return "\n".join(lines)


def logged_exchange(row: dict[str, Any]) -> tuple[list[Message], list[str]]:
    """A logged row's prompt turns (up to its last user turn) and its logged answers (none for a bare request)."""
    messages = _prompt_messages(row)
    answers: list[str] = []
    completion = _completion_object(row)
    if completion is not None:
        choices = sorted(completion.get("choices") or [], key=lambda c: c.get("index", 0))
        answers = [(c.get("message") or {}).get("content") or "" for c in choices]
    elif isinstance(row.get("response"), str):
        answers = [row["response"]]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    if not answers and last_user >= 0 and last_user + 1 < len(messages):  # plain messages: the final assistant turn
        answers = [m["content"] for m in messages[last_user + 1:] if m["role"] == "assistant"][-1:]
    return messages[:last_user + 1], [a for a in answers if a.strip()]


def import_logs(path: str | Path, out: str | Path, answers: AnswerUse = "keep") -> LogImport:
    """Read a log file and write `out`/inputs.jsonl (and, keeping answers, `out`/recorded.jsonl)."""
    out = Path(out)
    result = LogImport(out / INPUTS_FILE, out / RECORDED_FILE if answers == "keep" else None)
    inputs: list[dict[str, Any]] = []
    recorded: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line_no, row in read_json_objects(path):
        result.rows += 1
        try:
            prompt, logged = logged_exchange(row)
        except ValueError as error:
            raise DataError(f"{path}, line {line_no}: {error}") from None
        reason = ("no_user_turn" if not prompt else
                  "duplicate" if json.dumps(prompt) in seen else "")
        if reason:
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
            continue
        seen.add(json.dumps(prompt))
        inputs.append({"messages": prompt, "source": {"file": str(path), "line": line_no}})
        result.answers += bool(logged)
        if logged and answers == "keep":
            recorded.append({"messages": prompt, "response": logged})
    if not inputs:
        raise DataError(f"{path}: no logged exchange with a user turn (expected chat-completions requests, stored "
                        f"completions, or rows with 'messages')")
    result.kept = len(inputs)
    write_jsonl_atomic(result.inputs, inputs)
    if result.recorded is not None:
        write_jsonl_atomic(result.recorded, recorded)
    return result
