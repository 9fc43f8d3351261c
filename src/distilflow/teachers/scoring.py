"""A served teacher scores text it did not write: the log-probabilities of every token of a given sequence, from
an OpenAI-compatible *completions* endpoint with `echo: true, logprobs: K` (the legacy OpenAI protocol that
llama.cpp's server and vLLM implement; vLLM calls it prompt log-probs). `training.method: on_policy` sends each
student sample this way and learns from the teacher's top-K alternatives at every token.

The sequence goes as token ids where the server accepts them (the OpenAI protocol and vLLM do): the server then
scores exactly the student's tokens. A server that refuses ids (llama-cpp-python's takes text only: 422) is sent
the text from then on (any error status but 429 before ids have worked once), which its tokenizer splits again,
mostly but not always as the student did.

One request per sequence, `max_tokens: 1` (the one generated token is ignored; 0 means "until the context is full"
on llama.cpp's server). Requests run concurrently on the teacher stage's machinery: at most `max_concurrency` in
flight (async_bridge.py), paced by `requests_per_minute` / `tokens_per_minute`, retried on 429 / 5xx / timeouts /
dropped connections with backoff that honours Retry-After, up to `max_retries` times; errors no retry can fix (bad
key, unknown model, no quota) stop at once with the endpoint's one sentence. Requests, retries and prompt tokens
are counted for the job record (they cost money).

What comes back per request is the server's token strings and, per token, a dict {token string: log-prob} of its
top alternatives (None for the first token, which has no context). Aligning them with the student's token ids is
the caller's business (train/served_targets.py), because servers differ in what they echo (llama.cpp drops BOS
tokens and spells special tokens as '').
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distilflow.models.openai import OpenAIEndpoint, error_detail
from distilflow.jobspec import TeacherSpec
from distilflow.teachers.async_bridge import answer_concurrently
from distilflow.teachers.base import TeacherFailure
from distilflow.teachers.limits import TokenBucket, backoff_delay, parse_retry_after
from distilflow.teachers.token_estimate import estimate_prompt_tokens


@dataclass
class ScoreRequest:
    key: str  # the caller's name for this sequence (results are returned under it)
    text: str  # the whole sequence, special tokens spelt out, as the server's tokenizer should read it
    token_ids: list[int] | None = None  # the same sequence as token ids, sent instead where the server takes them


@dataclass
class PromptScores:
    key: str
    tokens: list[str]  # the server's tokens of the echoed text (and the one generated token, last)
    top: list[dict[str, float] | None]  # per token, its top alternatives and their log-probs
    prompt_tokens: int = 0
    from_ids: bool = False  # the server scored the token ids it was sent (one echoed entry per id, in order)


class _Retry(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class PromptLogprobScorer:
    def __init__(self, spec: TeacherSpec, top_k: int) -> None:
        self.spec, self.top_k = spec, top_k
        self.endpoint = OpenAIEndpoint(spec, section="teacher")
        self.counts: Counter[str] = Counter()
        self.ids_accepted: bool | None = None  # None until the server has answered (or refused) a token-id prompt

    def score(self, requests: Sequence[ScoreRequest]) -> dict[str, PromptScores | TeacherFailure]:
        """Every request's scores (or failure, after retries), by key."""
        self.endpoint.open_key()
        holder: dict[str, Any] = {}
        rpm = TokenBucket(self.spec.requests_per_minute) if self.spec.requests_per_minute else None
        tpm = TokenBucket(self.spec.tokens_per_minute) if self.spec.tokens_per_minute else None

        async def start() -> None:
            holder["client"] = self.endpoint.async_client(self.spec.max_concurrency)

        async def finish() -> None:
            client = holder.pop("client", None)
            if client is not None:
                await client.close()

        async def ask(request: ScoreRequest) -> PromptScores | TeacherFailure:
            return await self._ask(holder["client"], request, rpm, tpm)

        try:
            results = answer_concurrently(requests, ask, self.spec.max_concurrency, start, finish)  # type: ignore[arg-type]
            return {result.key: result for result in results}  # type: ignore[union-attr]
        finally:
            self.endpoint.forget_key()

    async def _ask(self, client: Any, request: ScoreRequest, rpm: TokenBucket | None,
                   tpm: TokenBucket | None) -> PromptScores | TeacherFailure:
        attempt = 0
        while True:
            estimate = estimate_prompt_tokens([{"role": "user", "content": request.text}]) + 1
            if tpm is not None:
                await tpm.acquire(estimate)
            if rpm is not None:
                await rpm.acquire(1)
            self.counts["requests"] += 1
            try:
                scores = await self._send(client, request)
            except _Retry as error:
                self.counts[error.kind] += 1
                if tpm is not None:
                    tpm.adjust(estimate)  # a refused request used no tokens
                if attempt >= self.spec.max_retries or error.kind == "rejected":  # a 4xx for this request: final
                    self.counts["failed"] += 1
                    return TeacherFailure(request.key, self.endpoint.scrub(f"{error} (gave up after {attempt + 1} "
                                                                           f"attempts)"))
                self.counts["retries"] += 1
                await asyncio.sleep(backoff_delay(attempt, error.retry_after))
                attempt += 1
                continue
            if tpm is not None:
                tpm.adjust(estimate - (scores.prompt_tokens or estimate))
            self.counts["prompt_tokens"] += scores.prompt_tokens
            return scores

    async def _send(self, client: Any, request: ScoreRequest) -> PromptScores:
        import openai

        as_ids = request.token_ids is not None and self.ids_accepted is not False
        body = {"model": self.spec.model, "prompt": request.token_ids if as_ids else request.text, "max_tokens": 1,
                "echo": True, "logprobs": self.top_k, "temperature": 0.0}
        try:
            response = await client.post("/completions", body=body, cast_to=object)
            if as_ids:
                self.ids_accepted = True
        except openai.APITimeoutError:
            raise _Retry("timeouts", f"no answer within teacher.timeout={self.spec.timeout:g}s") from None
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            raise _Retry("connection_errors", f"connection failed ({cause.__class__.__name__})") from None
        except openai.APIStatusError as error:
            status, detail = error.status_code, error_detail(error)
            refusal = self.endpoint.refusal(status, getattr(error, "code", None), detail)
            if refusal is not None:
                raise refusal from None
            if as_ids and status != 429 and not self.ids_accepted:
                # A server that reads text only: llama-cpp-python answers token ids with 500 (its validation error
                # wrapped), others with 400 / 422. Until ids have worked once, any such answer switches to text.
                self.ids_accepted = False
                self.counts["requests"] += 1  # the refused id request was a call too; the text one follows
                return await self._send(client, request)
            if status == 429 or status >= 500 or status in (408, 409):
                raise _Retry("rate_limited" if status == 429 else "server_errors", f"{status}: {detail}",
                             parse_retry_after(getattr(error.response, "headers", None))) from None
            raise _Retry("rejected", f"rejected by the endpoint ({status}): {detail}") from None
        except (openai.APIError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _Retry("api_errors", f"{error.__class__.__name__}: {error}") from None
        try:
            scores = _parse(request.key, response)
            scores.from_ids = as_ids
            return scores
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            raise _Retry("malformed", "the endpoint answered without prompt log-probs (does it support echo with "
                                      "logprobs on the completions endpoint?)") from None


def _parse(key: str, response: Any) -> PromptScores:
    choice = response["choices"][0]
    logprobs = choice["logprobs"]
    tokens = [str(t) for t in logprobs["tokens"]]
    top = [None if entry is None else {str(k): float(v) for k, v in entry.items()}
           for entry in logprobs["top_logprobs"]]
    if len(tokens) != len(top) or not tokens:
        raise ValueError("tokens and top_logprobs differ in length")
    usage = response.get("usage") or {}
    return PromptScores(key=key, tokens=tokens, top=top, prompt_tokens=int(usage.get("prompt_tokens") or 0))
