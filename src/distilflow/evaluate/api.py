"""A model behind an OpenAI-compatible chat endpoint (hosted APIs, Azure OpenAI, vLLM, SGLang, llama.cpp,
Ollama) in the measure loop, through the shared client (models/openai.py). Latency and time to first token
are over the network (streamed answers, one request at a time); throughput is `batch_size` requests in
flight; memory and parameters are the server's and cannot be measured from here; the cost of 1,000 answers
comes from the token usage and the endpoint's prices.

Answers are paid for, so each is committed to the teacher cache (teachers/cache.py, keyed like a teacher
request) as it arrives: a re-run after a crash, or of an unchanged job, asks only for what is missing. An
input the endpoint refuses (a 400 for that input) is a failed prediction; an endpoint that refuses everything
(a bad key, an unknown model, `max_consecutive_failures` failures in a row) stops this model's evaluation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distilflow.evaluate.measure import Answer, Conversation, MeasuredModel, total_tokens
from distilflow.models import GenerationParams
from distilflow.models.openai import EndpointError, OpenAIEndpoint
from distilflow.teachers.base import TeacherAnswer, request_fingerprint
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.limits import CircuitBreaker, CircuitOpen
from distilflow.teachers.openai_api import endpoint_identity


class _NoAnswer(Exception):
    """This input got no answer (a 4xx or 5xx the SDK's retries did not fix): a failed prediction."""


def cache_identity(endpoint: OpenAIEndpoint) -> dict[str, Any]:
    """The cache key's model part: a job's teacher is keyed exactly as in the teacher stage; a model evaluated
    on its own also by its URL (two local servers may serve different models under one name)."""
    identity = endpoint_identity(endpoint.spec)
    return identity if endpoint.role == "teacher" else {**identity, "base_url": endpoint.spec.base_url}


class ApiModel(MeasuredModel):
    ttft_source = "first streamed content chunk, over the network"

    def __init__(self, endpoint: OpenAIEndpoint, max_tokens: int, cache: TeacherCache | None = None) -> None:
        self.endpoint = endpoint
        self.client = endpoint.sync_client()  # reads the key now: an unset variable stops before any request
        self.max_tokens = max_tokens
        self.usage_in_stream = True  # cleared if the server rejects stream_options
        self.cache = cache
        self.identity = cache_identity(endpoint)
        self.params = GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=None)  # what is sent
        self.breaker = CircuitBreaker(endpoint.spec.max_consecutive_failures)
        self._breaker_lock = threading.Lock()  # the throughput run asks from several threads

    # ----- the cache -----------------------------------------------------------------------------------------
    def _key(self, messages: Conversation) -> str:
        return request_fingerprint(self.identity, messages, self.params)

    def cached(self, messages: Conversation) -> bool:
        return self.cache is not None and bool(self.cache.known_keys([self._key(messages)]))

    def answer_one(self, messages: Conversation) -> Answer:
        """The stored answer (not timed), else one asked now, streamed and timed, and committed before returning."""
        stored = self.cache.get(self._key(messages)) if self.cache is not None else None
        if stored is not None:
            return Answer(stored.texts[0], prompt_tokens=stored.prompt_tokens,
                          completion_tokens=stored.completion_tokens, cached=True)
        answer = self._guarded(self._stream, messages)
        if answer.error is None and self.cache is not None:
            self.cache.put_many([TeacherAnswer(key=self._key(messages), texts=[answer.text],
                                               prompt_tokens=answer.prompt_tokens or 0,
                                               completion_tokens=answer.completion_tokens or 0)])
        return answer

    # ----- asking ----------------------------------------------------------------------------------------------
    def _guarded(self, ask: Callable[[Conversation], Answer], messages: Conversation) -> Answer:
        """`ask(messages)`, with a refused input turned into a failed answer; a dead endpoint stops everything."""
        try:
            answer = ask(messages)
        except _NoAnswer as error:
            with self._breaker_lock:
                try:
                    self.breaker.failure(str(error))
                except CircuitOpen as stop:
                    raise self.endpoint.dead(stop.failures, stop.last_reason) from None
            return Answer("", error=str(error))
        with self._breaker_lock:
            self.breaker.success()
        return answer

    def _request(self, messages: Conversation, **extra: Any) -> Any:
        import openai

        try:
            return self.client.chat.completions.create(model=self.endpoint.spec.model, messages=messages,
                                                       max_tokens=self.max_tokens, temperature=0.0, **extra)
        except openai.BadRequestError as error:
            if "stream_options" in extra:
                raise  # _stream asks again without it
            raise self._failed(error) from None
        except (openai.APIStatusError, openai.APITimeoutError) as error:
            raise self._failed(error) from None
        except openai.APIError as error:  # no connection at all (after the SDK's retries): nothing will work
            raise self.endpoint.failure(error) from None

    def _failed(self, error: Exception) -> Exception:
        """A refusal of every request (bad key, unknown model, no quota) as is; else this input's failure."""
        failure = self.endpoint.failure(error)
        return failure if isinstance(failure, EndpointError) else _NoAnswer(str(failure))

    def _stream(self, messages: Conversation) -> Answer:
        """One answer, streamed: total latency and the arrival of the first content chunk."""
        import openai

        start = time.perf_counter()
        try:
            stream = self._request(messages, stream=True,
                                   **({"stream_options": {"include_usage": True}} if self.usage_in_stream else {}))
        except openai.BadRequestError:  # an older server without stream_options? Ask again without it
            self.usage_in_stream = False  # (count chunks instead)
            try:
                return self._stream(messages)
            except _NoAnswer:
                self.usage_in_stream = True  # refused again: it was this input, not the option
                raise
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
            raise self._failed(error) from None
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

    def warm_up(self, singles: list[Conversation], batch: list[Conversation]) -> None:
        for messages in singles:  # asked, not stored: stored, its timed answer would come from the cache
            self._guarded(self._stream, messages)

    def answer_all(self, conversations: list[Conversation], batch_size: int,
                   on_answered: Callable[[int], None]) -> list[Answer]:
        answers = []
        with ThreadPoolExecutor(max_workers=batch_size) as pool:  # `batch_size` requests in flight
            for answer in pool.map(lambda m: self._guarded(self._answer, m), conversations):
                answers.append(answer)
                on_answered(len(answers))
        return answers

    def figures(self, answers: list[Answer]) -> dict[str, Any]:
        answered = [a for a in answers if a.error is None]
        prompt_tokens = total_tokens([a.prompt_tokens for a in answered])
        completion_tokens = total_tokens([a.completion_tokens for a in answered])
        return dict(prompt_tokens=prompt_tokens,
                    cost_per_1000_answers=self.endpoint.cost_per_1000_answers(prompt_tokens, completion_tokens,
                                                                              len(answered)),
                    parameters=None, size_on_disk_mb=None, peak_memory_mb=None, model_memory_mb=None,
                    peak_memory_kind="remote (the server's memory cannot be measured from here)",
                    device=f"remote endpoint {self.endpoint.spec.base_url or 'https://api.openai.com/v1'}",
                    network=True)

    def close(self) -> None:
        self.client.close()
        if self.cache is not None:
            self.cache.close()
        self.endpoint.forget_key()
