"""Bootstrap intervals on data whose answer is known, against a brute-force bootstrap and sacrebleu's own."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sacrebleu

from distilflow.metrics.intervals import bootstrap_interval, bootstrap_scores, intervals_overlap, percentile_bounds
from distilflow.metrics.text import bleu_stats, chrf_stats, mean_stats
from distilflow.tasks.scoring import agreement_stats, score_with_intervals
from distilflow.tasks import get_task


def test_constant_data_has_a_zero_width_interval():
    interval = bootstrap_interval(mean_stats([1.0] * 50), samples=200, seed=3)
    assert (interval.value, interval.low, interval.high, interval.n) == (1.0, 1.0, 1.0, 50)


def test_bernoulli_interval_matches_the_normal_approximation():
    values = [1.0] * 200 + [0.0] * 200  # p = 0.5, n = 400: 95% half width 1.96 * sqrt(.25 / 400) = 0.049
    interval = bootstrap_interval(mean_stats(values), samples=2000, seed=0)
    half = 1.96 * math.sqrt(0.25 / 400)
    assert interval.value == 0.5
    assert interval.low == pytest.approx(0.5 - half, abs=0.01)
    assert interval.high == pytest.approx(0.5 + half, abs=0.01)


def test_mean_bootstrap_equals_a_brute_force_loop_with_the_same_draws():
    values = [random.Random(1).random() for _ in range(30)]
    scores = bootstrap_scores(mean_stats(values), samples=300, seed=7)
    rng = np.random.default_rng(7)
    indices = rng.choice(len(values), size=(300, len(values)), replace=True)
    brute = [sum(values[i] for i in row) / len(row) for row in indices]
    assert scores == pytest.approx(brute)
    ordered = sorted(brute)
    assert percentile_bounds(scores) == (pytest.approx(ordered[300 // 40]), pytest.approx(ordered[300 - 300 // 40 - 1]))


def test_corpus_bleu_interval_resamples_the_corpus_like_sacrebleu():
    hyps = ["the cat sat on the mat", "a dog ran", "hello world again and again", "the quick brown fox"] * 5
    refs = ["the cat sat on a mat", "the dog ran fast", "hello world", "a quick brown fox jumps"] * 5
    # sacrebleu's own bootstrap (seed 12345): mean +- half width from the same order statistics
    theirs = sacrebleu.BLEU().corpus_score(hyps, [refs], n_bootstrap=1000)
    ours = bootstrap_interval(bleu_stats(hyps, [[r] for r in refs]), samples=1000, seed=12345)
    assert ours.value == pytest.approx(theirs.score)
    assert (ours.high - ours.low) / 2 == pytest.approx(theirs._ci, abs=1e-4)
    assert ours.low < ours.value < ours.high
    chrf = bootstrap_interval(chrf_stats(hyps, [[r] for r in refs]), samples=1000, seed=12345)
    their_chrf = sacrebleu.CHRF().corpus_score(hyps, [refs], n_bootstrap=1000)
    assert (chrf.high - chrf.low) / 2 == pytest.approx(their_chrf._ci, abs=1e-3)


def test_intervals_are_seeded_and_reproducible():
    values = [float(i % 3 == 0) for i in range(60)]
    a = bootstrap_interval(mean_stats(values), 500, seed=1)
    assert a == bootstrap_interval(mean_stats(values), 500, seed=1)
    assert (a.low, a.high) != (bootstrap_interval(mean_stats(values), 500, seed=2).low,
                               bootstrap_interval(mean_stats(values), 500, seed=2).high)


def test_no_samples_or_no_data_gives_no_bounds():
    assert bootstrap_interval(mean_stats([1.0, 0.0]), samples=0).low is None
    empty = bootstrap_interval(mean_stats([]), samples=100)
    assert (empty.value, empty.low, empty.n) == (None, None, 0)


def test_overlap():
    assert intervals_overlap({"low": 0.1, "high": 0.3}, {"low": 0.25, "high": 0.5}) is True
    assert intervals_overlap({"low": 0.1, "high": 0.2}, {"low": 0.25, "high": 0.5}) is False
    assert intervals_overlap({"low": None, "high": None}, {"low": 0.25, "high": 0.5}) is None


def test_every_task_metric_gets_an_interval_with_n():
    task = get_task("summarization")
    rows = [{"prediction": "the cat sat on the mat", "reference": ["the cat sat on a mat"]},
            {"prediction": "a dog barked", "reference": ["the dog barked at night"]},
            {"prediction": "no reference here", "reference": None}]
    scored = score_with_intervals(task, rows, samples=200, seed=0)
    assert scored["scored_examples"] == 2
    assert set(scored["intervals"]) == set(task.metric_names)
    for name, interval in scored["intervals"].items():
        assert interval["n"] == 2 and interval["low"] <= interval["value"] <= interval["high"]
        assert scored["task_metrics"][name] == interval["value"]


def test_agreement_with_the_teacher():
    nli = get_task("nli")
    kind, stats = agreement_stats(nli, ["entailment", "Neutral.", "gibberish"], ["Entailment!", "contradiction", "x"])
    assert kind == "answer_agreement" and stats.value() == pytest.approx(1 / 3)  # unparseable never agrees
    conversation = get_task("conversation")
    kind, stats = agreement_stats(conversation, ["I am fine, thanks 1."], ["I am fine, thanks 1."])
    assert kind == "bleu_vs_teacher" and stats.value() == pytest.approx(100.0)
