"""A small OpenAI-protocol chat server for tests and benchmarks, with fault injection.

It answers POST .../chat/completions (any prefix, so Azure's /openai/deployments/NAME/... works too)
with a deterministic answer derived from the prompt (streamed when asked), and can be told to be slow, to answer 429 with
Retry-After, 500, a malformed body, HTTP 200 with an error body instead of a completion, or to drop the
connection. It counts every attempt and every
answer per prompt, so tests can assert "answered at most C prompts twice".

In a test:      with OpenAIServer(ServerConfig(latency=0.05)) as server: ... server.url ... server.stats()
As a process:   python tests/openai_server.py --latency 0.2 --port-file PORT   (GET /_stats for counters)

Faults are chosen per (prompt, attempt) from a hash, so a run is reproducible and a retried request
eventually succeeds (faults hit only the first `fault_attempts` attempts of a prompt).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

# Dropped connections are on purpose here; aiohttp would log each as an error.
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


def answer_for(prompt: str, sample: int = 0) -> str:
    """The server's answer to a prompt (what a test compares synthetic rows with, byte for byte)."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    suffix = f" (variant {sample})" if sample else ""
    return f"Answer {digest} — « {prompt[-40:].strip()} » ✓{suffix}"


def prompt_of(messages: list[dict[str, Any]]) -> str:
    """The identity of a request for counting: every message's content, in order."""
    return "\n".join(str(m.get("content", "")) for m in messages)


@dataclass
class ServerConfig:
    latency: float = 0.0                 # seconds before each answer
    rate_429: float = 0.0                # share of (prompt, attempt) pairs answered 429
    rate_500: float = 0.0
    rate_malformed: float = 0.0          # 200 with a body that is not JSON
    rate_drop: float = 0.0               # the connection is closed without an answer
    rate_truncate: float = 0.0           # half an answer is sent, then the connection is closed
    rate_slow: float = 0.0               # answered after `slow_latency` instead of `latency`
    rate_error_200: float = 0.0          # 200 with {"error": {"message": error_200_message}} instead of a completion
    error_200_message: str = "model overloaded"
    error_200_code: int | str | None = None  # the body's error code, when the server gives one
    slow_latency: float = 5.0
    fault_attempts: int = 1              # faults hit only attempts < this (so retries succeed)
    retry_after: float | None = 1.0      # Retry-After seconds sent with 429 (None: no header)
    retry_after_header: str | None = None  # the Retry-After header sent as is instead ("nan", a date, ...)
    fail_always: tuple[str, ...] = ()    # prompts containing any of these get 500 on every attempt
    bad_request: tuple[str, ...] = ()    # prompts containing any of these get 400 (not retryable)
    distinct_samples: bool = True        # n > 1: sample i gets " (variant i)" appended
    answers: dict[str, list[str]] = field(default_factory=dict)  # prompt substring -> fixed sample texts
    echo_auth_in_errors: bool = False    # error bodies quote the Authorization header (scrubbing test)
    force_status: int | None = None      # every request gets this error status (401, 404, ...)
    force_status_after: int = 0          # ... once this many requests were let through (a server that goes bad mid-run)
    ignore_n: bool = False               # answer one choice whatever `n` asks (like some local servers)
    # A function of the request's messages that gives the answer text (a scripted judge, a teacher that answers
    # by rule); None: the answers above.
    reply: Callable[[list[dict[str, Any]]], str] | None = None


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()     # prompt -> requests received
        self.answered: Counter[str] = Counter()     # prompt -> answers generated (billed), delivered or not
        self.granted = 0                            # requests given no fault on arrival (force_status_after counts them)
        self.faults: Counter[str] = Counter()       # fault kind -> count
        self.in_flight = 0
        self.max_in_flight = 0
        self.request_times: dict[str, list[float]] = {}
        self.paths: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.answer_times: list[float] = []
        self.answer_log: list[tuple[str, float, float]] = []  # (prompt, arrived, answered), monotonic seconds

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "attempts": dict(self.attempts), "answered": dict(self.answered), "faults": dict(self.faults),
                "max_in_flight": self.max_in_flight, "paths": dict(self.paths),
                "requests": sum(self.attempts.values()), "answers": sum(self.answered.values()),
                "answer_times": list(self.answer_times), "answer_log": list(self.answer_log),
            }


def _unit(*parts: Any) -> float:
    """A reproducible number in [0, 1) from the parts (used to pick faults)."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _fault(config: ServerConfig, prompt: str, attempt: int, answers: int) -> str | None:
    if config.force_status is not None and answers >= config.force_status_after:
        return "forced"
    if any(s in prompt for s in config.bad_request):
        return "400"
    if any(s in prompt for s in config.fail_always):
        return "500"
    if attempt >= config.fault_attempts:
        return None
    x = _unit(prompt, attempt)
    for kind, rate in (("429", config.rate_429), ("500", config.rate_500), ("malformed", config.rate_malformed),
                       ("drop", config.rate_drop), ("truncate", config.rate_truncate), ("slow", config.rate_slow),
                       ("error_200", config.rate_error_200)):
        if x < rate:
            return kind
        x -= rate
    return None


def _logprobs(text: str, k: int) -> dict[str, Any]:
    """Chat-completions logprobs: one entry per (word-)token with K alternatives, deterministic."""
    content = []
    for position, token in enumerate(text.split(" ")):
        token = token if position == 0 else " " + token
        top = [{"token": token if j == 0 else f"{token}#{j}", "logprob": -0.1 - j - 0.01 * position,
                "bytes": list((token if j == 0 else f"{token}#{j}").encode())} for j in range(k)]
        content.append({"token": token, "logprob": top[0]["logprob"] if top else -0.1,
                        "bytes": list(token.encode()), "top_logprobs": top})
    return {"content": content}


def _words(text: str) -> int:
    return max(1, len(text.split()))


def build_app(config: ServerConfig, state: _State) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        body = json.loads(raw)
        messages = body.get("messages", [])
        prompt = prompt_of(messages)
        with state.lock:
            attempt = state.attempts[prompt]
            state.attempts[prompt] += 1
            state.request_times.setdefault(prompt, []).append(time.monotonic())
            state.paths[request.path] += 1
            state.headers.append({k.lower(): v for k, v in request.headers.items()})
            state.bodies.append(body)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            with state.lock:  # decided and counted at once: requests in flight cannot all slip under the limit
                fault = _fault(config, prompt, attempt, state.granted)
                state.granted += fault is None
                if fault:
                    state.faults[fault] += 1
            await asyncio.sleep(config.slow_latency if fault == "slow" else config.latency)
            detail = f" (you sent {_credentials(request)})" if config.echo_auth_in_errors else ""
            if fault == "forced":
                return web.json_response({"error": {"message": f"refused{detail}", "type": "forced",
                                                    "code": "forced"}}, status=config.force_status or 500)
            if fault == "400":
                return web.json_response({"error": {"message": f"bad request{detail}", "type": "invalid_request_error"}},
                                         status=400)
            if fault == "429":
                headers = {} if config.retry_after is None else {"Retry-After": f"{config.retry_after:g}"}
                if config.retry_after_header is not None:
                    headers = {"Retry-After": config.retry_after_header}
                return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}},
                                         status=429, headers=headers)
            if fault == "500":
                return web.json_response({"error": {"message": f"internal error{detail}", "type": "server_error"}},
                                         status=500)
            if fault == "error_200":  # what some gateways send when the model fails after accepting the request
                error: dict[str, Any] = {"message": config.error_200_message}
                if config.error_200_code is not None:
                    error["code"] = config.error_200_code
                return web.json_response({"error": error})
            if fault == "malformed":
                return web.Response(text='{"id": "chatcmpl-x", "choices": [', content_type="application/json")
            if fault == "drop":
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped on purpose")
            if fault == "truncate":
                partial = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "4096"})
                await partial.prepare(request)
                await partial.write(b'{"id": "chatcmpl-x", "object": "chat.completion", "choi')
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("cut on purpose")
            n = 1 if config.ignore_n else int(body.get("n") or 1)
            texts = [config.reply(messages)] * n if config.reply else _seeded_texts(config, prompt, n, body.get("seed"))
            k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
            choices = [{"index": i, "finish_reason": "stop", "logprobs": _logprobs(t, k) if k else None,
                        "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)]
            completion = sum(_words(t) for t in texts)
            payload = {
                "id": f"chatcmpl-{hashlib.sha1(prompt.encode()).hexdigest()[:12]}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model", "test"), "choices": choices,
                "usage": {"prompt_tokens": _words(prompt), "completion_tokens": completion,
                          "total_tokens": _words(prompt) + completion},
            }
            # Counted as answered once generated, delivered or not: that is when an API bills.
            with state.lock:
                state.answered[prompt] += 1
                state.answer_times.append(time.monotonic())
                state.answer_log.append((prompt, arrived, state.answer_times[-1]))
            if body.get("stream"):
                return await _stream(request, payload, bool((body.get("stream_options") or {}).get("include_usage")))
            return web.json_response(payload)
        finally:
            with state.lock:
                state.in_flight -= 1

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.snapshot())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{prefix:.*}chat/completions", chat)
    app.router.add_get("/_stats", stats)
    return app


async def _stream(request: web.Request, payload: dict[str, Any], with_usage: bool) -> web.StreamResponse:
    """The completion as server-sent chat.completion.chunk events, a word at a time (what `stream: true` gets)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
            "model": payload["model"]}
    text = payload["choices"][0]["message"]["content"]
    for i, word in enumerate(text.split(" ")):
        delta = {"role": "assistant", "content": word if i == 0 else " " + word}
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if with_usage:
        await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': payload['usage']})}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _credentials(request: web.Request) -> str:
    """Every header that looks like a credential (Authorization, api-key, X-...-Token), as a careless server
    would quote them in an error body."""
    return "; ".join(f"{name}: {value}" for name, value in request.headers.items()
                     if any(word in name.lower() for word in ("auth", "key", "token", "secret")))


def _texts(config: ServerConfig, prompt: str, n: int) -> list[str]:
    for needle, fixed in config.answers.items():
        if needle in prompt:
            return [fixed[i % len(fixed)] for i in range(n)]
    return [answer_for(prompt, i if config.distinct_samples else 0) for i in range(n)]


def _seeded_texts(config: ServerConfig, prompt: str, n: int, seed: Any) -> list[str]:
    """Like _texts, but a request with another seed gets other variants (servers that ignore `n`)."""
    texts = _texts(config, prompt, n)
    if config.ignore_n and isinstance(seed, int) and seed and config.distinct_samples and not config.answers:
        return [answer_for(prompt, seed)]
    return texts


class OpenAIServer:
    """The server on 127.0.0.1 in a background thread (its own event loop); a context manager."""

    def __init__(self, config: ServerConfig | None = None, port: int = 0) -> None:
        self.config = config or ServerConfig()
        self.state = _State()
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "OpenAIServer":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(build_app(self.config, self.state), handle_signals=False, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()


def steady_rate(times: list[float], trim: float = 0.1) -> float:
    """Answers per second between the `trim` and `1 - trim` quantiles of answer times (ramp-up/down cut)."""
    times = sorted(times)
    if len(times) < 10:
        return math.nan
    lo, hi = int(len(times) * trim), int(len(times) * (1 - trim)) - 1
    span = times[hi] - times[lo]
    return (hi - lo) / span if span > 0 else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once listening")
    parser.add_argument("--config", type=str, default="{}", help="ServerConfig fields as JSON")
    args = parser.parse_args()
    config = ServerConfig(**json.loads(args.config))
    server = OpenAIServer(config, args.port).__enter__()
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(server.port))
        tmp.replace(args.port_file)
    print(f"listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
