"""Teacher backend `recorded`: answers a user already has, imported as the teacher's output.

`teacher.path` is a JSONL file; each line pairs a prompt with one or more responses, in any of these forms:

  {"messages": [...prompt turns...], "response": "text"}           (or "response": ["sample 1", "sample 2"])
  {"prompt": "user text", "response": "text"}                       ("completion" is read like "response")
  {"messages": [...prompt turns..., {"role": "assistant", "content": "text"}]}   (chat form)
  OpenAI stored completions / batch output: the request's messages under "messages", "request" or "body",
  the answer under "choices" or "response" (a chat.completion object, or {"body": chat.completion}).

Inputs are matched by their prompt messages: exactly, then ignoring system turns, then by the last user turn
(so a recording made with another system prompt still matches). An input without a recorded response is a
failure with its reason, and every answer goes through the same validation as a live teacher's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distilflow.errors import DataError, SpecError
from distilflow.fingerprint import file_digest
from distilflow.io import read_json_objects
from distilflow.models import Message
from distilflow.jobspec import TeacherSpec
from distilflow.teachers.base import (
    GenerationParams,
    Teacher,
    TeacherAnswer,
    TeacherFailure,
    TeacherRequest,
    TeacherResult,
)


class RecordedTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, section: str = "teacher") -> None:
        self.spec = spec
        self.path = Path(spec.path or spec.model)
        if not self.path.is_file():
            raise SpecError(f"{section}.path {self.path}: recorded completions file not found")
        self._index: dict[str, list[_Recorded]] | None = None

    def identity(self) -> dict[str, Any]:
        # The file's content decides the answers: an edited recording gives new cache keys.
        return {"backend": "recorded", "path": str(self.path), "sha256": file_digest(self.path)}

    def generate(
        self,
        requests: Sequence[TeacherRequest],
        params: GenerationParams,
    ) -> Iterator[TeacherResult]:
        index = self._load()
        for request in requests:
            found = _lookup(index, request.messages)
            if found is None:
                yield TeacherFailure(request.key, f"no recorded response for this prompt in {self.path.name}")
                continue
            texts = found.texts[:params.num_samples]
            yield TeacherAnswer(key=request.key, texts=texts, prompt_tokens=found.prompt_tokens,
                                completion_tokens=found.completion_tokens,
                                finish_reasons=(found.finish_reasons or ["stop"] * len(texts))[:len(texts)])

    def _load(self) -> dict[str, list["_Recorded"]]:
        if self._index is None:
            self._index = {}
            for line_no, row in read_json_objects(self.path):
                try:
                    recorded = _parse_row(row)
                except ValueError as error:
                    raise DataError(f"{self.path}, line {line_no}: {error}") from None
                for key in _match_keys(recorded.messages):
                    self._index.setdefault(key, []).append(recorded)
        return self._index


class _Recorded:
    def __init__(self, messages: list[Message], texts: list[str], prompt_tokens: int = 0,
                 completion_tokens: int = 0, finish_reasons: list[str] | None = None) -> None:
        self.messages, self.texts = messages, texts
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens
        self.finish_reasons = finish_reasons or []


def _parse_row(row: dict[str, Any]) -> _Recorded:
    messages = _prompt_messages(row)
    completion = _completion_object(row)
    usage: dict[str, Any] = {}
    if completion is not None:
        choices = sorted(completion.get("choices") or [], key=lambda c: c.get("index", 0))
        texts = [((c.get("message") or {}).get("content") or "") for c in choices]
        reasons = [c.get("finish_reason") or "stop" for c in choices]
        usage = completion.get("usage") or {}
    else:
        response = row.get("response", row.get("completion"))
        if response is None and messages and messages[-1]["role"] == "assistant":
            response, messages = messages[-1]["content"], messages[:-1]
        if isinstance(response, str):
            texts = [response]
        elif isinstance(response, list) and all(isinstance(t, str) for t in response):
            texts = list(response)
        else:
            raise ValueError("no response found (expected 'response', 'completion', 'choices', or a final "
                             "assistant turn in 'messages')")
        reasons = []
    if not texts:
        raise ValueError("the recorded completion has no choices")
    if not messages:
        raise ValueError("no prompt found (expected 'messages', 'prompt', or 'request'/'body' with 'messages')")
    return _Recorded(messages, texts, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                     reasons)


def _prompt_messages(row: dict[str, Any]) -> list[Message]:
    for holder in (row, row.get("request"), row.get("body"), row.get("input")):
        if isinstance(holder, dict) and isinstance(holder.get("messages"), list):
            return [_message(m) for m in holder["messages"]]
    if isinstance(row.get("prompt"), str):
        return [{"role": "user", "content": row["prompt"]}]
    if isinstance(row.get("input"), str):
        return [{"role": "user", "content": row["input"]}]
    return []


def _message(value: Any) -> Message:
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise ValueError("each message needs a 'role' and a 'content'")
    content = value.get("content")
    if isinstance(content, list):  # content parts: keep the text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError("message content must be a string")
    return {"role": value["role"], "content": content}


def _completion_object(row: dict[str, Any]) -> dict[str, Any] | None:
    """A chat.completion object in the row (stored completions, batch output), if there is one."""
    for candidate in (row, row.get("response"), row.get("completion")):
        if isinstance(candidate, dict):
            if isinstance(candidate.get("body"), dict):  # batch output: {"status_code": 200, "body": {...}}
                candidate = candidate["body"]
            if isinstance(candidate.get("choices"), list):
                return candidate
    return None


def _normal(text: str) -> str:
    return " ".join(text.split())


def _match_keys(messages: list[Message]) -> list[str]:
    """Keys from strictest to loosest: all turns; turns without system; the last user turn."""
    full = json.dumps([(m["role"], _normal(m["content"])) for m in messages])
    no_system = json.dumps([(m["role"], _normal(m["content"])) for m in messages if m["role"] != "system"])
    users = [m for m in messages if m["role"] == "user"]
    last_user = json.dumps(["user-only", _normal(users[-1]["content"])]) if users else ""
    return [k for k in (f"full:{full}", f"nosys:{no_system}", f"user:{last_user}") if k and not k.endswith(":")]


def _lookup(index: dict[str, list[_Recorded]], messages: list[Message]) -> _Recorded | None:
    for key in _match_keys(messages):
        found = index.get(key)
        if found:
            return found[0]
    return None
