"""A teacher spread over several endpoints (`teacher.base_url` as a list): three fault-injecting servers on 127.0.0.1,
one of them dead (503 to everything). Every row is answered, the dead one gets nothing once its cool-down starts,
`max_concurrency` holds per endpoint, the report counts answers per endpoint, and the cache does not care which
endpoint answered."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import write_job
from openai_server import OpenAIServer, ServerConfig

from distilflow.pipeline.runner import run_job
from distilflow.jobspec import TeacherSpec, load_spec
from distilflow.teachers import load_teacher
from distilflow.teachers.routing import COOL_DOWN_AFTER, EndpointPool, Route
from distilflow.workspace import Workspace

pytestmark = pytest.mark.timeout(120)

ROWS, PER_ENDPOINT = 40, 2


def _job(folder, tiny_models, urls):
    teacher = {"backend": "openai", "model": "teacher-model", "base_url": urls, "max_concurrency": PER_ENDPOINT}
    return write_job(folder, tiny_models, name="replicas", n_train=ROWS, n_val=0, teacher=teacher,
                     generation={"max_tokens": 8, "verify": "none", "deduplicate": False})


def test_rows_are_spread_over_live_endpoints_and_a_dead_one_is_cooled_down(tmp_path, tiny_models, caplog):
    # Faults a retry fixes, of the kind that says "busy", not "broken" (429): a live endpoint is never cooled down here.
    # (A 500 counts towards a cool-down; 10% of them land 3 in a row on one endpoint in about one run of five.)
    live = ServerConfig(latency=0.02, rate_429=0.1, retry_after=0.05)
    with OpenAIServer(live) as first, OpenAIServer(ServerConfig(force_status=503)) as dead, \
            OpenAIServer(live) as second:
        urls = [first.url, dead.url, second.url]
        spec = load_spec(_job(tmp_path / "job", tiny_models, urls))
        record = run_job(spec, Workspace.open(tmp_path / "w"), ["generate"])
        stats = {url: server.stats() for url, server in zip(urls, (first, dead, second))}
    stage = next(s for s in record.stages if s.stage == "generate")
    assert stage.status == "completed" and stage.metrics["failed"] == 0
    assert stage.metrics["accepted"]["train"] == ROWS
    by_endpoint = stage.metrics["this_run"]["answers_by_endpoint"]
    assert by_endpoint[dead.url] == 0 and sum(by_endpoint.values()) == ROWS
    # Both live ones share the work; not evenly here: the servers run on threads of this process, and the one the GIL
    # favours answers faster and so gets more (bench/endpoints.py, servers in their own processes: within 2%).
    assert by_endpoint[first.url] > 0 and by_endpoint[second.url] > 0
    # The dead one saw only the attempts that failed before its cool-down began (and those already in flight then).
    assert 0 < stats[dead.url]["requests"] <= COOL_DOWN_AFTER + PER_ENDPOINT - 1
    cooled = [r.getMessage() for r in caplog.records if "no requests go to it" in r.getMessage()]
    assert cooled and all(dead.url in message for message in cooled)
    assert stats[first.url]["faults"].get("429", 0) + stats[second.url]["faults"].get("429", 0) > 0
    assert all(s["max_in_flight"] <= PER_ENDPOINT for s in stats.values())
    assert sum(s["answers"] for s in stats.values()) >= ROWS
    report_line = "Answers per endpoint"
    from distilflow.report.markdown import _md_teacher_stage

    assert any(report_line in line for line in _md_teacher_stage(stage.metrics))

    # The same rows asked of one other endpoint: all answers come from the cache, none is bought again.
    with OpenAIServer(ServerConfig()) as other:
        again = load_spec(_job(tmp_path / "job", tiny_models, other.url))
        record = run_job(again, Workspace.open(tmp_path / "w"), ["generate"])
        assert other.stats()["requests"] == 0
    stage = next(s for s in record.stages if s.stage == "generate")
    assert stage.metrics["cached_before"] == ROWS and stage.metrics["accepted"]["train"] == ROWS


def test_cache_identity_and_evaluation_do_not_depend_on_the_endpoints():
    one = TeacherSpec(model="m", backend="openai", base_url="http://a:1/v1")
    many = TeacherSpec(model="m", backend="openai", base_url=["http://b:2/v1", "http://a:1/v1"])
    assert load_teacher(one).identity() == load_teacher(many).identity()
    assert [e.base_url for e in many.endpoints()] == ["http://b:2/v1", "http://a:1/v1"]
    assert TeacherSpec(model="m", backend="openai", base_url=["http://a:1/v1"]).base_url == "http://a:1/v1"
    with pytest.raises(ValueError, match="same URL twice"):
        TeacherSpec(model="m", backend="openai", base_url=["http://a:1/v1", "http://a:1/v1"])
    from distilflow.evaluate.config import ModelTarget

    assert ModelTarget.served(many, "teacher").endpoint.base_url == "http://b:2/v1"  # timed at one endpoint


def test_pool_picks_the_least_busy_open_endpoint_and_waits_out_a_cool_down():
    now = [0.0]
    pool = EndpointPool([Route("a", None), Route("b", None)], per_endpoint=2, clock=lambda: now[0])

    async def scenario() -> list[str]:
        picked = []
        async with pool.route() as r1:
            async with pool.route() as r2:
                picked += [r1.url, r2.url]  # one each: the fewest in flight first
        for _ in range(COOL_DOWN_AFTER):
            pool.failed(pool.routes[0])
        async with pool.route() as r3:
            picked.append(r3.url)  # "a" is cooling
        now[0] += 1000
        pool.succeeded(pool.routes[1])
        async with pool.route() as r4, pool.route() as r5:
            picked += [r4.url, r5.url]  # the cool-down is over: both again
        return picked

    picked = asyncio.run(scenario())
    assert picked[:2] in (["a", "b"], ["b", "a"]) and picked[2] == "b" and sorted(picked[3:]) == ["a", "b"]
    assert json.dumps(pool.answers_by_endpoint()) == '{"a": 0, "b": 1}'
