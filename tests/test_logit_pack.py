"""The teacher cache's stored top-K form (teachers/logit_pack.py): 6 bytes per kept logit, lossless for ids and
strings, and the earlier npz form still readable (caches of finished jobs are kept)."""

from __future__ import annotations

import math

import pytest

from distilflow.teachers.base import TeacherAnswer, TopLogprobs
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.logit_pack import pack, pack_npz, unpack


def _samples(positions: int = 50, k: int = 20) -> list[TopLogprobs]:
    ids = TopLogprobs(logprobs=[[-0.25 * j - 0.001 * p for j in range(k)] for p in range(positions)],
                      token_ids=[[(p * 7 + j * 131) % 262_144 for j in range(k)] for p in range(positions)])
    ids.token_ids[0][-1], ids.logprobs[0][-1] = -1, -math.inf  # an empty slot
    strings = TopLogprobs(logprobs=[[-0.5] * 4 for _ in range(positions)],
                          tokens=[[" word", f" w{p % 9}", "\\xe2\\x80", ""] for p in range(positions)])
    return [ids, strings]


def test_round_trip_keeps_ids_strings_and_empty_slots_and_costs_at_most_8_bytes_per_logit():
    samples = _samples()
    back = unpack(pack(samples))
    assert back[0].token_ids == samples[0].token_ids and back[0].tokens is None
    assert back[1].tokens == samples[1].tokens and back[1].token_ids is None
    assert back[0].logprobs[0][-1] == -math.inf
    assert back[0].logprobs[3] == pytest.approx(samples[0].logprobs[3], abs=2e-3)  # float16
    ids_only = pack(samples[:1])
    assert len(ids_only) / (50 * 20) <= 6.1  # 2 bytes of log-prob + 4 of id before compression


def test_answers_stored_in_the_earlier_npz_form_are_still_read(tmp_path):
    samples = _samples(positions=5, k=4)
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        cache.put_many([TeacherAnswer(key="new", texts=["a", "b"], top_logprobs=samples)])
        cache._db.execute("INSERT INTO answers(key, record, top_logprobs, created_at) VALUES (?,?,?,?)",
                          ("old", '{"texts": ["a", "b"]}', pack_npz(samples), 0.0))
        new, old = cache.get("new", with_logprobs=True), cache.get("old", with_logprobs=True)
    for answer in (new, old):
        assert answer.top_logprobs[0].token_ids == samples[0].token_ids
        assert answer.top_logprobs[1].tokens == samples[1].tokens
