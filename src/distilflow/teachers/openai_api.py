"""Teacher backend `openai`: any OpenAI-compatible chat API (hosted, Azure OpenAI, vLLM/SGLang/llama.cpp/Ollama).

Requests go through the official SDK's async client on a background event loop (async_bridge.py), at most
`teacher.max_concurrency` at a time, paced by `requests_per_minute` / `tokens_per_minute`. The SDK's own
retries are off (max_retries=0) so that we decide: 429, 5xx, timeouts, dropped connections, malformed
bodies and HTTP 200 answers that carry the server's error instead of a completion ("model overloaded") are
retried with exponential backoff and jitter, honouring Retry-After, up to `teacher.max_retries` times; a
request that still fails becomes a TeacherFailure with its reason (the server's own words where it gave some).
Errors no retry can fix (bad key, unknown model, no quota) stop the stage at once, and so does a dead endpoint: after
`teacher.max_consecutive_failures` failed requests in a row with no answer between them (connection refused,
DNS failure, the same 4xx for every input) the circuit breaker (limits.py) ends the stage with one sentence.

The key, the client and the wording of errors no retry can fix are the shared OpenAI endpoint's
(models/openai.py): the key is read from the variable named by `teacher.api_key_env` when generation starts,
lives only in memory and is scrubbed from every message.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from distilflow.models import Message
from distilflow.models.openai import EndpointError, OpenAIEndpoint, body_error, error_detail
from distilflow.jobspec import TeacherSpec
from distilflow.teachers.async_bridge import answer_concurrently
from distilflow.teachers.base import (
    GenerationParams,
    Teacher,
    TeacherAnswer,
    TeacherFailure,
    TeacherRequest,
    TeacherResult,
    TopLogprobs,
)
from distilflow.teachers.limits import (
    SYSTEM_CLOCK,
    CircuitBreaker,
    CircuitOpen,
    Clock,
    TokenBucket,
    backoff_delay,
    parse_retry_after,
)
from distilflow.teachers.routing import EndpointPool, Route
from distilflow.teachers.token_estimate import estimate_prompt_tokens

log = logging.getLogger(__name__)
# Distinct reasons for a request that failed for good shown on the terminal per run (failed.jsonl has every one).
SHOWN_FAILURE_REASONS = 3
# The name callers know this error by; it is the shared endpoint's (one wording for teacher and evaluation).
TeacherEndpointError = EndpointError


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class _Malformed(Exception):
    """The endpoint answered 200 with a body that is not a usable chat completion."""


def endpoint_identity(spec: TeacherSpec) -> dict[str, Any]:
    """What determines an endpoint's answers besides the request (the cache key's teacher part)."""
    # The model name decides the answers, not where it is served: a server restarted on another port (or a
    # gateway in front of the same model) keeps the cache, so a resume never pays again for stored answers.
    return {"backend": "openai", "model": spec.model}


class OpenAITeacher(Teacher):
    def __init__(self, spec: TeacherSpec, section: str = "teacher") -> None:
        self.spec = spec
        # One per teacher.base_url (a list: several replicas of one teacher); each checks its Azure settings now.
        self.endpoints = [OpenAIEndpoint(one, section=section) for one in spec.endpoints()]
        self.endpoint = self.endpoints[0]  # its wording and key scrubbing serve every message
        self.counts: Counter[str] = Counter()
        self.pool: EndpointPool | None = None
        self.clock: Clock = SYSTEM_CLOCK  # what pacing and retry waits wait on

    def identity(self) -> dict[str, Any]:
        return endpoint_identity(self.spec)

    def count_tokens(self, messages: list[Message]) -> int | None:
        return estimate_prompt_tokens(messages)

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def answers_by_endpoint(self) -> dict[str, int]:
        return self.pool.answers_by_endpoint() if self.pool is not None and len(self.endpoints) > 1 else {}

    # ----- generation -----------------------------------------------------------------------
    def generate(
        self,
        requests: Sequence[TeacherRequest],
        params: GenerationParams,
    ) -> Iterator[TeacherResult]:
        for endpoint in self.endpoints:
            endpoint.open_key()
        spec = self.spec
        pool = self.pool = EndpointPool([Route(e.spec.base_url or "default", e) for e in self.endpoints],
                                        spec.max_concurrency)
        rpm = TokenBucket(spec.requests_per_minute, clock=self.clock) if spec.requests_per_minute else None
        tpm = TokenBucket(spec.tokens_per_minute, clock=self.clock) if spec.tokens_per_minute else None
        breaker = CircuitBreaker(spec.max_consecutive_failures)  # shared by every request in flight
        shown: set[str] = set()

        async def start() -> None:
            for route in pool.routes:
                route.client = route.endpoint.async_client(spec.max_concurrency)

        async def finish() -> None:
            for route in pool.routes:
                client, route.client = route.client, None
                if client is not None:
                    await client.close()

        async def ask(request: TeacherRequest) -> TeacherResult:
            try:
                result = await self._ask(pool, request, params, rpm, tpm, breaker)
                if isinstance(result, TeacherFailure):
                    _show_failure(result.reason, shown)
                    breaker.failure(result.reason)
                else:
                    breaker.success()
            except CircuitOpen as stop:
                raise self.endpoint.dead(stop.failures, stop.last_reason) from None
            return result

        try:
            yield from answer_concurrently(requests, ask, pool.capacity, start, finish)
        finally:
            for endpoint in self.endpoints:
                endpoint.forget_key()

    async def _attempt(self, pool: EndpointPool, request: TeacherRequest, params: GenerationParams, n: int,
                       offset: int) -> tuple[list[tuple[str, str, TopLogprobs | None]], int, int]:
        """One try at the endpoint the pool picks; its outcome tells the pool whether that endpoint is unwell (a 429
        says busy, not broken)."""
        async with pool.route() as route:
            try:
                got = await self._send(route, request, params, n, offset)
            except _Retryable as error:
                if error.kind != "rate_limited":
                    pool.failed(route)
                raise
            pool.succeeded(route)
            return got

    async def _ask(self, pool: EndpointPool, request: TeacherRequest, params: GenerationParams, rpm: TokenBucket | None,
                   tpm: TokenBucket | None, breaker: CircuitBreaker) -> TeacherResult:
        """All samples of one request: retried as needed; a failure is returned, never raised (unless fatal).
        An unreachable endpoint counts on `breaker` at every attempt (retrying cannot help if nothing listens)."""
        texts: list[str] = []
        reasons: list[str] = []
        logprobs: list[TopLogprobs] = []
        usage = [0, 0]
        attempt = 0
        while len(texts) < params.num_samples:
            wanted = params.num_samples - len(texts)
            estimate = 0
            if tpm is not None:
                estimate = estimate_prompt_tokens(request.messages) + params.max_tokens * wanted
                await tpm.acquire(estimate)
            if rpm is not None:
                await rpm.acquire(1)
            try:
                self.counts["requests"] += 1
                got, prompt_tokens, completion_tokens = await self._attempt(pool, request, params, wanted, len(texts))
            except _Retryable as error:
                self.counts[error.kind] += 1
                if tpm is not None:
                    tpm.adjust(estimate)  # a refused request used no tokens
                if error.kind == "unreachable":
                    breaker.failure(self.endpoint.scrub(str(error)))
                if attempt >= self.spec.max_retries:
                    self.counts["failed"] += 1
                    return TeacherFailure(request.key, self.endpoint.scrub(
                        f"{error} (gave up after {attempt + 1} attempts)"))
                self.counts["retries"] += 1
                await self.clock.sleep(backoff_delay(attempt, error.retry_after))
                attempt += 1
                continue
            except _Rejected as error:
                self.counts["failed"] += 1
                return TeacherFailure(request.key, self.endpoint.scrub(str(error)))
            if tpm is not None:  # charge what was really used (the estimate stands if the server reports no usage)
                tpm.adjust(estimate - (prompt_tokens + completion_tokens or estimate))
            for text, reason, top in got:
                texts.append(text)
                reasons.append(reason)
                if top is not None:
                    logprobs.append(top)
            usage[0] += prompt_tokens
            usage[1] += completion_tokens
        return TeacherAnswer(key=request.key, texts=texts[:params.num_samples], prompt_tokens=usage[0],
                             completion_tokens=usage[1], finish_reasons=reasons[:params.num_samples],
                             top_logprobs=logprobs[:params.num_samples] if params.top_logprobs else None)

    async def _send(self, route: Route, request: TeacherRequest, params: GenerationParams, n: int,
                    offset: int) -> tuple[list[tuple[str, str, TopLogprobs | None]], int, int]:
        import openai

        client, where = route.client, route.endpoint.where
        kwargs: dict[str, Any] = {"model": self.spec.model, "messages": request.messages,
                                  "max_tokens": params.max_tokens, "temperature": params.temperature,
                                  "top_p": params.top_p}
        if n > 1:
            kwargs["n"] = n
        if params.seed is not None:
            # Samples asked for again (a server that ignores `n`) get a new seed, or they would repeat.
            kwargs["seed"] = params.seed + offset
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.top_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = params.top_logprobs
        try:
            # The SDK's generic `post` (its documented way to call any endpoint) with the body as plain JSON:
            # it skips the typed-params transform and pydantic parsing (measured: ~40% less CPU per request,
            # which matters at 300+ answers/s on one event loop); auth, base_url and Azure routing stay the SDK's.
            response = await client.post("/chat/completions", body=kwargs, cast_to=object)
        except openai.APITimeoutError as error:
            if (cause := _unreachable(error)) is not None:
                raise _Retryable("unreachable", f"cannot connect to {where} ({cause})") from None
            if _dropped(error):  # the SDK's aiohttp transport reports a dropped connection as a timeout
                raise _Retryable("connection_errors", "the connection was dropped before an answer") from None
            raise _Retryable("timeouts", f"no answer within teacher.timeout={self.spec.timeout:g}s") from None
        except openai.APIConnectionError as error:
            if (unreachable := _unreachable(error)) is not None:
                raise _Retryable("unreachable", f"cannot connect to {where} ({unreachable})") from None
            cause = error.__cause__ or error
            raise _Retryable("connection_errors", f"connection failed ({cause.__class__.__name__})") from None
        except openai.APIResponseValidationError:
            raise _Retryable("malformed", "the endpoint answered with a body that is not a chat completion") from None
        except openai.APIStatusError as error:
            self._raise_for_status(error)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable("malformed", "the endpoint answered with a body that is not valid JSON") from None
        except openai.APIError as error:  # any other SDK error: worth another try, and reported if it persists
            raise _Retryable("api_errors", f"{error.__class__.__name__}: {error}") from None
        if (said := body_error(response)) is not None:
            self._raise_for_body_error(*said)
        try:
            return self._parse(response, params)
        except _Malformed as error:
            raise _Retryable("malformed", str(error)) from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Retryable("malformed", "the endpoint answered with malformed log-probs") from None

    def _raise_for_status(self, error: Any) -> None:
        status = error.status_code
        detail = error_detail(error)
        refusal = self.endpoint.refusal(status, getattr(error, "code", None), detail)
        if refusal is not None:
            raise refusal
        retry_after = parse_retry_after(getattr(error.response, "headers", None))
        if status == 429:
            raise _Retryable("rate_limited", f"rate limited (429): {detail}", retry_after)
        if status >= 500 or status in (408, 409):
            raise _Retryable("server_errors", f"server error ({status}): {detail}", retry_after)
        raise _Rejected(f"rejected by the endpoint ({status}): {detail}")

    def _raise_for_body_error(self, message: str, code: Any) -> None:
        """HTTP 200 with the server's error instead of a completion. Retried like a 5xx: the request was accepted
        (a bad key, model or request gets its own status code), so what failed is the server's side of it (an
        overloaded or crashed model), which a later try may not meet; a numeric 4xx code in the body is honoured."""
        status = code if isinstance(code, int) and 400 <= code < 600 else None
        if status is not None and (refusal := self.endpoint.refusal(status, None, message)) is not None:
            raise refusal
        text = f"the endpoint answered HTTP 200 with an error: {message}"
        if status == 429:
            raise _Retryable("rate_limited", text)
        if status is not None and status < 500 and status not in (408, 409):
            raise _Rejected(text)
        raise _Retryable("server_errors", text)

    def _parse(self, response: Any, params: GenerationParams) -> tuple[list[tuple[str, str, TopLogprobs | None]], int, int]:
        """A chat.completion as decoded JSON -> (text, finish reason, top log-probs) per choice, and usage."""
        choices = response.get("choices") if isinstance(response, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise _Malformed("the endpoint answered with a body that is not a chat completion")
        if not choices:
            raise _Malformed("the endpoint answered with no choices")
        got = []
        for choice in sorted(choices, key=lambda c: c.get("index") or 0):
            message = choice.get("message")
            if not isinstance(message, dict):
                raise _Malformed("the endpoint answered with a choice without a message")
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise _Malformed("the endpoint answered with a message whose content is not text")
            top = None
            if params.top_logprobs:
                top = _top_logprobs(choice.get("logprobs"), params.top_logprobs)
                if top is None and text:
                    raise EndpointError(
                        f"generation.top_logprobs is {params.top_logprobs}, but the endpoint returned no log-probs "
                        f"(does it support logprobs/top_logprobs for model {self.spec.model!r}?)")
                if top is None:  # an empty answer has no positions
                    top = TopLogprobs(logprobs=[], tokens=[])
            got.append((text, choice.get("finish_reason") or "", top))
        usage = response.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        return got, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _show_failure(reason: str, shown: set[str]) -> None:
    """Say on the terminal why requests fail (the server's own words), once per reason and for a few reasons only:
    the stage's last message may only count the failures."""
    kind = reason.split(" (gave up after")[0]
    if kind not in shown and len(shown) < SHOWN_FAILURE_REASONS:
        shown.add(kind)
        log.warning("a teacher request failed: %s; failed.jsonl lists every failed input with its reason", reason)


class _Rejected(Exception):
    """A 4xx the endpoint gives for this request only (too long, bad content): not retried."""


_DROPPED = ("ServerDisconnectedError", "RemoteProtocolError", "ClientConnectionResetError", "ClientOSError")


# aiohttp's errors of the connect phase (nothing answered at that address). Not the SDK's httpx-named wrapper
# around them: it calls every aiohttp error, a dropped connection included, ConnectTimeout.
_CONNECT_FAILED = ("ClientConnectorError", "ClientConnectorDNSError", "ConnectionTimeoutError")


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    for _ in range(8):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return
        yield seen


def _unreachable(error: BaseException) -> str | None:
    """Why no connection could be made (refused, name not found, connect timeout); None if one was made."""
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return "the host name could not be resolved"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
    if any(type(cause).__name__ in _CONNECT_FAILED for cause in causes):
        return "no connection could be made"
    return None


def _dropped(error: BaseException) -> bool:
    """Whether an error was caused by the connection closing (not by waiting too long)."""
    return any(isinstance(seen, ConnectionError) or type(seen).__name__ in _DROPPED for seen in _causes(error))


def _top_logprobs(logprobs: Any, k: int) -> TopLogprobs | None:
    """Chat-completions logprobs -> K log-probs and token strings per position (padded with -inf and "")."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if content is None:
        return None
    values: list[list[float]] = []
    tokens: list[list[str]] = []
    for position in content:
        top = list(position.get("top_logprobs") or [])[:k]
        values.append([float(t["logprob"]) for t in top] + [-math.inf] * (k - len(top)))
        tokens.append([str(t["token"]) for t in top] + [""] * (k - len(top)))
    return TopLogprobs(logprobs=values, tokens=tokens)
