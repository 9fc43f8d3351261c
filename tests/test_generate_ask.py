"""The one procedure that asks a teacher (generate/ask.py), which one teacher, several teachers and the dry run all
share: which inputs a teacher answers (the route filter), one request per distinct prompt, what the cache already
knows and what is left to ask, and the success-ratio check's message."""

from __future__ import annotations

import pytest

from distilflow.errors import StageError
from distilflow.generate.ask import check_success, plan_requests, teacher_rows
from distilflow.jobspec import parse_spec
from distilflow.tasks import Example, get_task
from distilflow.teachers import TeacherAnswer
from distilflow.teachers.cache import TeacherCache


def job(tmp_path, combine: str):
    hard = {"name": "hard", "model": "m2"}
    if combine == "route":
        hard["route"] = {"field": "level", "values": ["hard"]}
    return parse_spec({"task_type": "math", "student": {"model": "s"}, "training_data": "t.jsonl",
                       "teachers": [{"name": "easy", "model": "m1"}, hard], "generation": {"combine": combine}},
                      "job.yaml", tmp_path)


def question(i: int, level: str) -> Example:
    return Example(f"q{i}", [{"role": "user", "content": f"What is {i} plus one?"}], str(i + 1), fields={"level": level})


def test_route_gives_each_teacher_its_rows_and_the_other_modes_give_all(tmp_path):
    examples = {"train": [question(0, "hard"), question(1, "easy"), question(2, "hard")],
                "validation": [question(3, "easy")], "test": [question(4, "hard")]}
    route = job(tmp_path, "route")
    assert teacher_rows(route, examples, 0) == [("train", 1), ("validation", 0)]  # the fallback: no rule matched
    assert teacher_rows(route, examples, 1) == [("train", 0), ("train", 2)]
    everything = [("train", 0), ("train", 1), ("train", 2), ("validation", 0)]  # the test split is never asked
    assert teacher_rows(route, examples) == everything  # no teacher named: every input (a single teacher)
    assert teacher_rows(job(tmp_path, "vote"), examples, 1) == everything
    assert teacher_rows(route, {"train": examples["train"]}, 1) == [("train", 0), ("train", 2)]  # no validation


def test_inputs_sharing_a_prompt_share_a_request_and_cached_ones_are_not_pending(tmp_path):
    spec, task = job(tmp_path, "vote"), get_task("math")
    examples = {"train": [question(0, "easy"), question(1, "easy")], "validation": [question(1, "easy")]}
    rows = teacher_rows(spec, examples)
    identity = {"backend": "openai", "model": "m1"}
    fresh = plan_requests(spec, task, examples, rows, identity, cache=None)
    assert list(fresh.requests) == rows and len(fresh.unique) == 2  # validation's q1 is train's q1
    assert fresh.requests[("train", 1)].key == fresh.requests[("validation", 0)].key
    assert fresh.known == set() and fresh.pending == list(fresh.unique.values())
    assert fresh.rows_by_split() == {"train": 2, "validation": 1}
    with TeacherCache(tmp_path / "cache" / "teacher.sqlite") as cache:
        first = fresh.requests[("train", 0)].key
        cache.put_many([TeacherAnswer(first, ["0 plus one is 1.\n#### 1"])])
        resumed = plan_requests(spec, task, examples, rows, identity, cache)
    assert resumed.known == {first} and [r.key for r in resumed.pending] == [fresh.requests[("train", 1)].key]
    other_teacher = plan_requests(spec, task, examples, rows, {"backend": "openai", "model": "m2"}, None)
    assert not set(other_teacher.unique) & set(fresh.unique)  # each teacher's answers under its own keys


def test_the_success_ratio_message_names_the_counts_the_setting_and_the_file(tmp_path):
    spec = job(tmp_path, "vote")  # generation.min_success_ratio defaults to 0.9
    check_success(spec, 1, 10, tmp_path / "failed.jsonl", "the teachers")  # 90% answered: allowed
    check_success(spec, 0, 0, tmp_path / "failed.jsonl", "the teacher")  # nothing to ask: nothing failed
    with pytest.raises(StageError) as raised:
        check_success(spec, 2, 10, tmp_path / "failed.jsonl", "the teacher")
    assert str(raised.value) == (
        "the teacher failed on 2 of 10 inputs (20%), more than generation.min_success_ratio=0.9 allows; the 8 "
        f"answers are kept and a re-run asks only for the rest (reasons in {tmp_path / 'failed.jsonl'})")
