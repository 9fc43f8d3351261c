"""A model behind an OpenAI-compatible chat endpoint (hosted APIs, Azure OpenAI, vLLM, SGLang, llama.cpp,
Ollama) in the measure loop, through the shared client (models/openai.py). Latency and time to first token
are over the network (streamed answers, one request at a time); throughput is `batch_size` requests in
flight; memory and parameters are the server's and cannot be measured from here; the cost of 1,000 answers
comes from the token usage and the endpoint's prices."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distilflow.evaluate.measure import Answer, Conversation, MeasuredModel, total_tokens
from distilflow.models.openai import OpenAIEndpoint


class ApiModel(MeasuredModel):
    ttft_source = "first streamed content chunk, over the network"

    def __init__(self, endpoint: OpenAIEndpoint, max_tokens: int) -> None:
        self.endpoint = endpoint
        self.client = endpoint.sync_client()  # reads the key now: an unset variable stops before any request
        self.max_tokens = max_tokens
        self.usage_in_stream = True  # cleared if the server rejects stream_options

    def _request(self, messages: Conversation, **extra: Any) -> Any:
        import openai

        try:
            return self.client.chat.completions.create(model=self.endpoint.spec.model, messages=messages,
                                                       max_tokens=self.max_tokens, temperature=0.0, **extra)
        except openai.BadRequestError as error:
            if "stream_options" in extra:
                raise  # answer_one asks again without it
            raise self.endpoint.failure(error) from None
        except openai.APIError as error:
            raise self.endpoint.failure(error) from None

    def answer_one(self, messages: Conversation) -> Answer:
        """One answer, streamed: total latency and the arrival of the first content chunk."""
        import openai

        start = time.perf_counter()
        try:
            stream = self._request(messages, stream=True,
                                   **({"stream_options": {"include_usage": True}} if self.usage_in_stream else {}))
        except openai.BadRequestError:
            self.usage_in_stream = False  # an older server without stream_options: count chunks instead
            return self.answer_one(messages)
        first, parts, usage, chunks = None, [], None, 0
        try:
            for chunk in stream:
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    if choice.delta and choice.delta.content:
                        first = first or time.perf_counter()
                        parts.append(choice.delta.content)
                        chunks += 1
        except openai.APIError as error:
            raise self.endpoint.failure(error) from None
        seconds = time.perf_counter() - start
        return Answer("".join(parts), seconds, None if first is None else first - start,
                      usage.prompt_tokens if usage else None, usage.completion_tokens if usage else chunks)

    def _answer(self, messages: Conversation) -> Answer:
        """One answer, not streamed (the throughput run: only the total time counts)."""
        response = self._request(messages)
        usage = response.usage
        text = (response.choices[0].message.content or "") if response.choices else ""
        return Answer(text, prompt_tokens=usage.prompt_tokens if usage else None,
                      completion_tokens=usage.completion_tokens if usage else None)

    def answer_all(self, conversations: list[Conversation], batch_size: int,
                   on_answered: Callable[[int], None]) -> list[Answer]:
        answers = []
        with ThreadPoolExecutor(max_workers=batch_size) as pool:  # `batch_size` requests in flight
            for answer in pool.map(self._answer, conversations):
                answers.append(answer)
                on_answered(len(answers))
        return answers

    def figures(self, answers: list[Answer]) -> dict[str, Any]:
        prompt_tokens = total_tokens([a.prompt_tokens for a in answers])
        completion_tokens = total_tokens([a.completion_tokens for a in answers])
        return dict(prompt_tokens=prompt_tokens,
                    cost_per_1000_answers=self.endpoint.cost_per_1000_answers(prompt_tokens, completion_tokens,
                                                                              len(answers)),
                    parameters=None, size_on_disk_mb=None, peak_memory_mb=None, model_memory_mb=None,
                    peak_memory_kind="remote (the server's memory cannot be measured from here)",
                    device=f"remote endpoint {self.endpoint.spec.base_url or 'https://api.openai.com/v1'}",
                    network=True)

    def close(self) -> None:
        self.client.close()
        self.endpoint.forget_key()
