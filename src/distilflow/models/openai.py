"""The one OpenAI-protocol client of distilflow, for the teacher stage and for evaluation alike: any
OpenAI-compatible chat API (hosted APIs, Azure OpenAI, vLLM/SGLang/llama.cpp/Ollama servers).

It owns what both need to agree on: the API key (read from the environment variable NAMED by
`api_key_env` only when a connection opens, held in memory only, and scrubbed from every message), client
construction (async for the teacher's many requests in flight, sync for evaluation's timed ones; Azure when
`api_version` is set; headers given as {env: NAME} read now), and one wording for the errors no retry can fix
(bad key, unknown model, no quota). The key is also remembered by `distilflow.secrets`, so that whatever else
this process prints is scrubbed of it too.
"""

from __future__ import annotations

import os
from typing import Any

from distilflow import secrets
from distilflow.errors import DistilflowError, SpecError
from distilflow.jobspec import TeacherSpec

# Placeholder key for endpoints that need none (local vLLM / llama.cpp / Ollama servers accept any key; the
# SDK insists on one). "EMPTY" is the value vLLM's own documentation uses.
NO_KEY = "EMPTY"
MAX_MESSAGE_CHARS = 300  # an endpoint's error body can be a whole HTML page: keep messages readable


class EndpointError(DistilflowError):
    """The endpoint refuses every request (bad key, unknown model, no quota): retrying cannot help."""


def error_detail(error: Any) -> str:
    """The endpoint's own explanation in an SDK error: the JSON body's error message when there is one."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        nested = body.get("error")
        message = nested.get("message") if isinstance(nested, dict) else body.get("message")
        if message:
            return str(message)
    return str(getattr(error, "message", "") or error)


def body_error(body: Any) -> tuple[str, Any] | None:
    """The server's own error in an HTTP 200 answer, as (message, code); None for an answer without one.

    Some servers and gateways answer 200 with `{"error": {"message": ...}}` instead of a chat completion: OpenRouter
    documents this for a failure that happens once the model has started (the request itself was accepted), and
    proxies in front of a busy model do it for "model overloaded". Its text is what tells the user what went wrong.
    """
    if not isinstance(body, dict) or body.get("choices") or body.get("error") is None:
        return None
    error = body["error"]
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or error.get("code") or "no message"
        return str(message), error.get("code")
    return str(error), None


class OpenAIEndpoint:
    """One endpoint, described by the `openai` fields of a TeacherSpec (model, base_url, api_key_env, api_version,
    headers, timeout, max_retries, prices). `section` names those settings in messages: "teacher" for a job's
    teacher (`teacher.base_url`), None for a model given on its own (`base_url`)."""

    def __init__(self, spec: TeacherSpec, section: str | None = "teacher") -> None:
        spec = spec.endpoints()[0]  # a teacher spread over several endpoints: this client serves the first
        self.spec = spec
        self.role = section or "model"
        self._prefix = f"{section}." if section else ""
        if spec.api_version and not spec.base_url:
            raise SpecError(f"{self._prefix}api_version selects Azure OpenAI, which needs {self._prefix}base_url "
                            f"(the resource endpoint, like https://NAME.openai.azure.com)")
        self._key: str | None = None

    @property
    def where(self) -> str:
        return self.spec.base_url or "the OpenAI API"

    # ----- the key -------------------------------------------------------------------------------------------
    def open_key(self) -> str:
        """Read the key now (not at construction: a spec is checked long before any request is sent)."""
        name = self.spec.api_key_env
        if not name:
            self._key = NO_KEY
            return self._key
        value = os.environ.get(name, "").strip()
        if not value:
            raise SpecError(f"{self._prefix}api_key_env is {name}, but the environment variable {name} is not set "
                            f"(it should hold the API key for {self.where}; export {name}=... before running)")
        secrets.remember(value)
        self._key = value
        return value

    def forget_key(self) -> None:
        self._key = None

    def scrub(self, text: str, limit: int | None = MAX_MESSAGE_CHARS) -> str:
        """The text with the API key (and every other secret this process read) replaced by ***, cut to `limit`
        characters (a readable length)."""
        text = secrets.scrub(text)  # the key is among the secrets: open_key remembered it
        return text if limit is None or len(text) <= limit else text[:limit] + "..."

    # ----- clients -------------------------------------------------------------------------------------------
    def _options(self, max_retries: int) -> dict[str, Any]:
        import openai

        return {"api_key": self._key or self.open_key(), "max_retries": max_retries,
                "timeout": openai.Timeout(self.spec.timeout, connect=min(10.0, self.spec.timeout)),
                "default_headers": self.spec.resolved_headers() or None}

    def sync_client(self) -> Any:
        """A blocking client with the SDK's own retries (`max_retries`): one timed request at a time."""
        import openai

        options = self._options(self.spec.max_retries)
        if self.spec.api_version:
            return openai.AzureOpenAI(azure_endpoint=self.spec.base_url, api_version=self.spec.api_version, **options)
        return openai.OpenAI(base_url=self.spec.base_url, **options)

    def async_client(self, max_in_flight: int) -> Any:
        """An async client for `max_in_flight` concurrent requests; the SDK's retries are off, the caller decides."""
        import openai

        options = self._options(0)
        # Keep a connection per concurrent request (the SDK default keeps only 100 alive).
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=max_in_flight + 16,
                                                         max_keepalive_connections=max_in_flight)
        http_client = None
        aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
        if aiohttp_client is not None:
            try:  # the aiohttp transport is faster under high concurrency; available with aiohttp installed
                http_client = aiohttp_client(timeout=options["timeout"], limits=limits)
            except RuntimeError:
                http_client = None
        if http_client is None:
            http_client = openai.DefaultAsyncHttpxClient(timeout=options["timeout"], limits=limits)
        if self.spec.api_version:
            return openai.AsyncAzureOpenAI(azure_endpoint=self.spec.base_url, api_version=self.spec.api_version,
                                           http_client=http_client, **options)
        return openai.AsyncOpenAI(base_url=self.spec.base_url, http_client=http_client, **options)

    # ----- errors --------------------------------------------------------------------------------------------
    def refusal(self, status: int, code: str | None, detail: str) -> EndpointError | None:
        """The error for a status no retry can fix (bad key, unknown model, no quota); None for any other."""
        p, env = self._prefix, self.spec.api_key_env
        if status == 429 and code == "insufficient_quota":
            message = f"the {self.role} API account has no quota left (429 insufficient_quota): {detail}"
        elif status in (401, 403) and env:
            message = (f"the {self.role} endpoint refused the API key ({status}); check the key in ${env} and "
                       f"{p}base_url: {detail}")
        elif status in (401, 403):
            message = f"the {self.role} endpoint wants an API key ({status}); set {p}api_key_env: {detail}"
        elif status == 404:
            message = (f"the {self.role} endpoint answered 404 for model {self.spec.model!r}: check {p}model and "
                       f"{p}base_url ({self.spec.base_url or 'the OpenAI default'}): {detail}")
        else:
            return None
        return EndpointError(self.scrub(message))

    def dead(self, failures: int, last_reason: str) -> EndpointError:
        """The one sentence that ends the work when `failures` requests in a row failed and none was answered."""
        p = self._prefix
        return EndpointError(self.scrub(
            f"the {self.role} endpoint {self.where} failed {failures} requests in a row and answered none (the last: "
            f"{self.scrub(last_reason, 200)}); check {p}base_url and {p}model ({p}max_consecutive_failures sets how "
            f"many failures end it); answers already received are kept and a re-run asks only for the rest", None))

    def failure(self, error: Exception) -> DistilflowError:
        """Any SDK error of a request that is not retried further, as one sentence."""
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            detail = error_detail(error)
            return self.refusal(status, getattr(error, "code", None), detail) or DistilflowError(self.scrub(
                f"request to {self.where} for model {self.spec.model!r} failed ({status}): {detail}"))
        first_line = (str(error).splitlines() or [""])[0]
        return DistilflowError(self.scrub(f"request to {self.where} for model {self.spec.model!r} failed: "
                                          f"{error.__class__.__name__}: {first_line}"))

    def cost_per_1000_answers(self, prompt_tokens: int | None, completion_tokens: int | None,
                              answers: int) -> float | None:
        """The endpoint's price of 1,000 such answers (None without prices, answers, or the token counts priced)."""
        spec = self.spec
        if not answers or (spec.price_per_million_input_tokens is not None and prompt_tokens is None) or (
                spec.price_per_million_output_tokens is not None and completion_tokens is None):
            return None
        total = spec.cost_usd(prompt_tokens or 0, completion_tokens or 0)
        return None if total is None else total / answers * 1000
