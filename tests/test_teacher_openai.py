"""The `openai` teacher backend against a real HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest

from distilflow.errors import SpecError
from distilflow.jobspec import TeacherSpec
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers import GenerationParams, TeacherAnswer, TeacherFailure, TeacherRequest, load_teacher
from distilflow.teachers import limits
from distilflow.teachers.openai_api import TeacherEndpointError
from openai_server import OpenAIServer, ServerConfig, answer_for, prompt_of
from virtual_clock import VirtualClock

KEY = "sk-test-SECRET-4242-do-not-leak"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(limits, "BACKOFF_BASE_S", 0.02)
    monkeypatch.setenv("TEST_TEACHER_KEY", KEY)


def make_teacher(server: OpenAIServer, **fields):
    spec = TeacherSpec(model="teacher-model", backend="openai", base_url=server.url, api_key_env="TEST_TEACHER_KEY",
                       **fields)
    return load_teacher(spec)


def make_requests(n: int, prefix: str = "question") -> list[TeacherRequest]:
    return [TeacherRequest(key=f"k{i}", messages=[{"role": "user", "content": f"{prefix} number {i}?"}])
            for i in range(n)]


def collect(teacher, requests, params=None) -> dict[str, TeacherAnswer | TeacherFailure]:
    params = params or GenerationParams(max_tokens=16)
    return {r.key: r for r in teacher.generate(requests, params)}


def test_every_answer_matches_its_own_prompt_with_bounded_concurrency():
    with OpenAIServer(ServerConfig(latency=0.05)) as server:
        teacher = make_teacher(server, max_concurrency=6)
        requests = make_requests(40)
        results = collect(teacher, requests)
        stats = server.stats()
    assert len(results) == 40
    for request in requests:
        answer = results[request.key]
        assert isinstance(answer, TeacherAnswer)
        assert answer.texts == [answer_for(prompt_of(request.messages))]
        assert answer.prompt_tokens > 0 and answer.completion_tokens > 0
    assert 1 < stats["max_in_flight"] <= 6
    assert stats["requests"] == 40
    assert teacher.stats()["requests"] == 40


def test_faults_are_retried_until_every_request_succeeds():
    config = ServerConfig(latency=0.01, rate_429=0.15, rate_500=0.15, rate_malformed=0.1, rate_drop=0.1,
                          rate_truncate=0.1, rate_slow=0.1, slow_latency=3.0, retry_after=0.3)
    with OpenAIServer(config) as server:
        teacher = make_teacher(server, max_concurrency=8, timeout=0.5, max_retries=4)
        requests = make_requests(60)
        results = collect(teacher, requests)
        stats = server.stats()
    assert all(isinstance(r, TeacherAnswer) for r in results.values()), [r for r in results.values()
                                                                          if isinstance(r, TeacherFailure)]
    for request in requests:
        assert results[request.key].texts == [answer_for(prompt_of(request.messages))]
    counts = teacher.stats()
    faults = stats["faults"]
    assert all(faults.get(kind, 0) > 0 for kind in ("429", "500", "malformed", "drop", "truncate", "slow")), faults
    for kind, server_kinds in (("rate_limited", ["429"]), ("server_errors", ["500"]), ("malformed", ["malformed"]),
                               ("connection_errors", ["drop", "truncate"]), ("timeouts", ["slow"])):
        assert counts.get(kind, 0) == sum(faults[k] for k in server_kinds), (kind, counts, faults)
    assert counts["retries"] == sum(stats["faults"].values())
    assert stats["requests"] == 60 + counts["retries"]


def test_retry_after_is_honoured():
    config = ServerConfig(latency=0.0, rate_429=1.0, retry_after=0.7)  # every first attempt is refused
    with OpenAIServer(config) as server:
        teacher = make_teacher(server, max_concurrency=4)
        requests = make_requests(4)
        results = collect(teacher, requests)
        times = server.state.request_times
    assert all(isinstance(r, TeacherAnswer) for r in results.values())
    for request in requests:
        first, second = times[prompt_of(request.messages)]
        assert second - first >= 0.7  # the backoff alone (0.02 s base here) would be far shorter


def test_a_request_that_keeps_failing_becomes_a_failure_with_its_reason():
    with OpenAIServer(ServerConfig(fail_always=("number 3?",), bad_request=("number 5?",))) as server:
        teacher = make_teacher(server, max_retries=2)
        results = collect(teacher, make_requests(8))
        attempts = server.stats()["attempts"]
    assert isinstance(results["k3"], TeacherFailure)
    assert "server error (500)" in results["k3"].reason and "after 3 attempts" in results["k3"].reason
    assert attempts["question number 3?"] == 3
    assert isinstance(results["k5"], TeacherFailure) and "(400)" in results["k5"].reason
    assert attempts["question number 5?"] == 1  # a 400 is not retried
    assert sum(isinstance(r, TeacherAnswer) for r in results.values()) == 6


def test_a_refused_key_stops_at_once_and_is_never_echoed():
    with OpenAIServer(ServerConfig(force_status=401, echo_auth_in_errors=True)) as server:
        teacher = make_teacher(server, max_concurrency=2)
        with pytest.raises(TeacherEndpointError) as caught:
            collect(teacher, make_requests(50))
        requests = server.stats()["requests"]
    assert "refused the API key (401)" in str(caught.value)
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert requests < 10  # stopped, not 50 futile requests


def test_unknown_model_is_a_clear_error():
    with OpenAIServer(ServerConfig(force_status=404)) as server:
        with pytest.raises(TeacherEndpointError, match="404 for model 'teacher-model'"):
            collect(make_teacher(server), make_requests(3))


def test_missing_key_variable_is_a_spec_error(monkeypatch):
    monkeypatch.delenv("TEST_TEACHER_KEY")
    with OpenAIServer() as server:
        with pytest.raises(SpecError, match="TEST_TEACHER_KEY is not set"):
            collect(make_teacher(server), make_requests(1))


def wait_for(condition, what: str, timeout: float = 30) -> None:
    """Poll until `condition()` holds; the deadline is generous (a busy machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_slot_is_held_until_the_consumer_asks_for_the_next_result():
    """The resume invariant: an answer not yet committed by the consumer keeps its concurrency slot."""
    with OpenAIServer(ServerConfig(latency=0.01)) as server:
        teacher = make_teacher(server, max_concurrency=4)
        results = teacher.generate(make_requests(30), GenerationParams(max_tokens=8))
        first = next(results)  # the consumer now "commits" slowly
        wait_for(lambda: server.stats()["answers"] >= 4, "the first 4 requests were not answered")
        # The 4 answers are back; were slots freed on arrival, more requests would follow at once (at 10 ms per
        # answer, ~30 in this window). A correct teacher sends none, however long this takes.
        time.sleep(0.3)
        held = server.stats()["requests"]
        rest = list(results)
        total = server.stats()["requests"]
    assert isinstance(first, TeacherAnswer)
    assert held == 4  # max_concurrency: one slot per answer the consumer has not taken yet
    assert len(rest) == 29 and total == 30


def test_requests_per_minute_paces_requests():
    """On a virtual clock (no real waiting): the burst goes at once, then one request per 0.1 s, and the server
    never sees more requests than the pacing has allowed by then."""
    seen: list[tuple[float, int]] = []  # (the time a wait starts, requests the server had seen by then)
    with OpenAIServer() as server:
        teacher = make_teacher(server, max_concurrency=16, requests_per_minute=600)  # 10/s, burst of 10
        teacher.clock = VirtualClock(on_sleep=lambda clock, _: seen.append((clock.now, server.stats()["requests"])))
        results = collect(teacher, make_requests(30))
        asked = server.stats()["requests"]
    assert len(results) == 30 and all(isinstance(r, TeacherAnswer) for r in results.values()) and asked == 30
    assert teacher.clock.now == pytest.approx(2.0, abs=1e-6)  # 20 requests after the burst, at 10 per second
    assert seen and seen[0][1] <= 10  # nothing beyond the burst before the first wait
    assert all(requests <= 10 + math.floor(now * 10 + 1e-6) for now, requests in seen)


def test_tokens_per_minute_paces_requests():
    """On a virtual clock: each request is charged its estimated tokens up front (the unused part is given back
    when the answer says what it really used); 3,000 tokens/min = 50/s, a burst of 50."""
    params = GenerationParams(max_tokens=10)
    requests = make_requests(10)
    seen: list[int] = []
    with OpenAIServer() as server:
        teacher = make_teacher(server, max_concurrency=16, tokens_per_minute=3000)
        teacher.clock = VirtualClock(on_sleep=lambda clock, _: seen.append(server.stats()["requests"]))
        results = collect(teacher, requests, params)
    assert len(results) == 10 and all(isinstance(r, TeacherAnswer) for r in results.values())
    charged = [teacher.count_tokens(r.messages) + params.max_tokens for r in requests]
    used = sum(r.prompt_tokens + r.completion_tokens for r in results.values())
    rate, burst = 3000 / 60, 50
    # The bucket refilled at least what was really used beyond the burst, at most what was charged beyond it.
    assert (used - burst) / rate <= teacher.clock.now <= (sum(charged) - burst) / rate + 1e-6
    assert used > burst and seen[0] <= burst // min(charged) + 1  # paced: the burst holds two or three requests


def test_generation_options_reach_the_endpoint_and_samples_come_back():
    params = GenerationParams(max_tokens=12, temperature=0.7, top_p=0.9, num_samples=3, seed=11, stop=("END",),
                              top_logprobs=3)
    with OpenAIServer() as server:
        teacher = make_teacher(server, headers={"X-Team": "distil"})
        results = collect(teacher, make_requests(2), params)
        body = server.state.bodies[0]
        headers = server.state.headers[0]
    assert body["model"] == "teacher-model" and body["max_tokens"] == 12 and body["temperature"] == 0.7
    assert body["top_p"] == 0.9 and body["n"] == 3 and body["seed"] == 11 and body["stop"] == ["END"]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert headers["x-team"] == "distil" and headers["authorization"] == f"Bearer {KEY}"
    answer = results["k0"]
    prompt = "question number 0?"
    assert answer.texts == [answer_for(prompt, i) for i in range(3)]
    assert len(answer.top_logprobs) == 3
    top = answer.top_logprobs[1]
    words = answer.texts[1].split(" ")
    assert len(top.logprobs) == len(words) and all(len(row) == 3 for row in top.logprobs)
    assert top.tokens[0][0] == words[0] and top.tokens[1][0] == " " + words[1]
    assert top.logprobs[0][0] == pytest.approx(-0.1)


def test_top_logprobs_are_stored_compactly_and_read_back(tmp_path):
    with OpenAIServer() as server:
        results = collect(make_teacher(server), make_requests(1), GenerationParams(max_tokens=8, top_logprobs=4))
    answer = results["k0"]
    cache = TeacherCache(tmp_path / "teacher.sqlite")
    cache.put_many([answer])
    back = cache.get("k0", with_logprobs=True)
    cache.close()
    assert back.texts == answer.texts
    stored, original = back.top_logprobs[0], answer.top_logprobs[0]
    assert stored.tokens == original.tokens
    assert all(math.isclose(a, b, abs_tol=1e-2) for ra, rb in zip(stored.logprobs, original.logprobs)
               for a, b in zip(ra, rb))


def test_a_server_that_ignores_n_is_asked_again_with_new_seeds():
    with OpenAIServer(ServerConfig(ignore_n=True)) as server:
        results = collect(make_teacher(server), make_requests(1), GenerationParams(max_tokens=8, num_samples=3, seed=0))
        seeds = [b.get("seed") for b in server.state.bodies]
    assert results["k0"].texts == [answer_for("question number 0?", i) for i in range(3)]
    assert seeds == [0, 1, 2]


def test_azure_openai_uses_the_deployment_route_and_api_key_header():
    with OpenAIServer() as server:
        spec = TeacherSpec(model="my-deployment", backend="openai", base_url=f"http://127.0.0.1:{server.port}",
                           api_key_env="TEST_TEACHER_KEY", api_version="2024-10-21")
        results = collect(load_teacher(spec), make_requests(2))
        paths = server.stats()["paths"]
        headers = server.state.headers[0]
    assert all(isinstance(r, TeacherAnswer) for r in results.values())
    assert paths == {"/openai/deployments/my-deployment/chat/completions": 2}
    assert headers["api-key"] == KEY


def test_consumer_stopping_early_shuts_the_background_loop_down():
    with OpenAIServer(ServerConfig(latency=0.02)) as server:
        teacher = make_teacher(server, max_concurrency=4)
        before = threading.active_count()
        results = teacher.generate(make_requests(100), GenerationParams(max_tokens=8))
        taken = [next(results) for _ in range(5)]
        results.close()  # returns once the background loop has ended: nothing is sent after this
        sent = server.stats()["requests"]
    assert len(taken) == 5 and sent <= 5 + 4
    assert threading.active_count() <= before


def test_backoff_and_retry_after_parsing():
    rng = random.Random(0)
    for attempt in range(6):
        ceiling = min(limits.BACKOFF_CAP_S, limits.BACKOFF_BASE_S * 2**attempt)
        assert ceiling / 2 <= limits.backoff_delay(attempt, rng=rng) <= ceiling
    assert 2.0 <= limits.backoff_delay(0, retry_after=2.0, rng=rng) <= 2.2
    assert limits.backoff_delay(0, retry_after=1e9, rng=rng) <= limits.RETRY_AFTER_CAP_S * 1.1
    assert limits.parse_retry_after({"Retry-After": "3"}) == 3.0
    assert limits.parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert limits.parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None  # past: back off
    assert limits.parse_retry_after({"Retry-After": "soon"}) is None
    assert limits.parse_retry_after({}) is None
