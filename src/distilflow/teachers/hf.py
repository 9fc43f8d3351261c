"""Teacher backend `hf`: a local Hugging Face model (hub id, folder or .gguf), batched generation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from distilflow.models import Message, generate_batch, load_causal_lm, load_tokenizer, model_revision, render_chat
from distilflow.spec import TeacherSpec
from distilflow.teachers.base import GenerationParams, Teacher, TeacherAnswer, TeacherRequest, TeacherResult


class HFTeacher(Teacher):
    def __init__(self, spec: TeacherSpec) -> None:
        self.spec = spec
        self._model = None
        self._tokenizer = None

    def identity(self) -> dict[str, Any]:
        return {"backend": "hf", "model": self.spec.model, "revision": model_revision(self.spec.model),
                "dtype": self.spec.dtype}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec.model)
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            self._model = load_causal_lm(self.spec.model, device=self.spec.device, dtype=self.spec.dtype).eval()
        return self._model

    def count_tokens(self, messages: list[Message]) -> int | None:
        return len(self.tokenizer(render_chat(self.tokenizer, messages), add_special_tokens=False)["input_ids"])

    def generate(
        self,
        requests: Sequence[TeacherRequest],
        params: GenerationParams,
    ) -> Iterator[TeacherResult]:
        # Sorting by prompt length keeps padding (wasted compute) low inside each batch.
        ordered = sorted(requests, key=lambda r: sum(len(m["content"]) for m in r.messages))
        size = self.spec.batch_size
        for start in range(0, len(ordered), size):
            batch = ordered[start:start + size]
            outputs = generate_batch(self.model, self.tokenizer, [r.messages for r in batch], params)
            for request, output in zip(batch, outputs):
                yield TeacherAnswer(
                    key=request.key,
                    texts=output.texts,
                    prompt_tokens=output.prompt_tokens,
                    completion_tokens=output.completion_tokens,
                    finish_reasons=output.finish_reasons,
                    top_logprobs=output.top_logprobs,
                )

    def close(self) -> None:
        self._model = None
