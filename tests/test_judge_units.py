"""The judge's parts on their own: the wire contract (what is sent, how a reply is read), the outcome of a pair asked
in both orders, the controls' corruptions and thresholds, Cohen's kappa, and the degeneration checks judged against
the teacher's own rate."""

from __future__ import annotations

import pytest

from distilflow.evaluate.controls import control_figures, corrupted
from distilflow.evaluate.judge_score import combined
from distilflow.evaluate.judge_wire import pairwise_messages, read_pairwise, read_rubric, rubric_messages
from distilflow.metrics.judged import cohen_kappa, ratio_interval, share_intervals
from distilflow.report.checks import warnings, worse_than_teacher


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("b.", "B"), ("Tie", "tie"), ("**B** is clearer", "B"), ("Answer B is better.", "B"),
    ("Verdict: TIE - both are fine", "tie"), ("[[A]]", "A"), ("I prefer B; A rambles", "B"),
    ("Hmm, hard to say.", None), ("", None), ("Both answers are equally good", None)])
def test_a_pairwise_reply_is_read_for_its_first_a_b_or_tie(reply, verdict):
    assert read_pairwise(reply).verdict == verdict


def test_the_rest_of_a_reply_is_its_reason():
    assert read_pairwise("B\nIt names the app's menu.").reason == "It names the app's menu"
    reading = read_rubric("Score: 4\nPolite, but it does not say where to look.")
    assert reading.score == 4 and reading.reason == "Polite, but it does not say where to look"
    assert read_rubric("The answer is fine. score:5").score == 5


@pytest.mark.parametrize("reply", ["Score: 9", "Score: 0", "Rating: 3", "4/5", "Score: ?"])
def test_a_score_off_the_scale_or_missing_is_unreadable(reply):
    assert not read_rubric(reply).readable


def test_requests_end_with_the_answers_under_their_headers_also_when_asked_again():
    for retry in (False, True):
        (pairwise,) = pairwise_messages("Where is my card?", "It is on its way.", "Check the app.", "be kind", retry)
        assert pairwise["role"] == "user"
        assert pairwise["content"].endswith("\n### Answer A\nIt is on its way.\n\n### Answer B\nCheck the app.")
        (rubric,) = rubric_messages("Where is my card?", "It is on its way.", "be kind", retry)
        assert rubric["content"].endswith("\n### Answer\nIt is on its way.")
    assert "could not be read" in pairwise_messages("q", "a", "b", "r", retry=True)[0]["content"]


def test_a_win_or_a_loss_counts_only_when_both_orders_agree():
    assert combined("win", "win") == "win" and combined("loss", "loss") == "loss"
    assert combined("win", "loss") == "tie" and combined("win", "tie") == "tie" and combined("tie", "tie") == "tie"
    assert combined(None, "win") == "unreadable"


def test_corrupted_copies_are_shuffled_or_cut_in_half():
    text = "Open the app and tap Card to see when it arrives"
    shuffled = corrupted(text, "shuffled", "test-1")
    assert shuffled != text and sorted(shuffled.split()) == sorted(text.split())
    assert shuffled == corrupted(text, "shuffled", "test-1")  # the same copy on every run: cached, not re-paid
    assert corrupted(text, "truncated", "test-1") == "Open the app and tap"


def test_the_controls_say_which_check_failed_and_by_how_much():
    good = control_figures(["tie"] * 8, {"shuffled": ["loss"] * 4, "truncated": ["loss"] * 4}, [False] * 24,
                           [True] * 8, unreadable=0, asked=40, control_inputs=4)
    assert good["reliable"] and good["failures"] == []
    first = control_figures(["A"] * 8, {"shuffled": ["tie"] * 4, "truncated": ["tie"] * 4}, [True] * 24, [],
                            unreadable=0, asked=40, control_inputs=4)
    assert not first["reliable"] and first["order_flip_rate"] == 1.0 and first["self_tie_rate"] == 0.0
    assert any("100%" in f and "order" in f for f in first["failures"])
    assert any("0%" in f and "came out tie" in f for f in first["failures"])


def test_cohen_kappa_matches_its_textbook_example():
    # 50 items, two raters: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po 0.7, pe 0.5, kappa 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(first, first) == 1.0 and cohen_kappa([], []) is None


def test_shares_and_ratios_come_with_intervals_that_hold_their_value():
    shares = share_intervals(["win"] * 3 + ["tie"] * 5 + ["loss"] * 2, ("win", "tie", "loss"), 500, 0)
    assert (shares["win"], shares["tie"], shares["loss"], shares["n"]) == (0.3, 0.5, 0.2, 10)
    for kind in ("win", "tie", "loss"):
        assert shares["intervals"][kind]["low"] <= shares[kind] <= shares["intervals"][kind]["high"]
    ratio = ratio_interval([(4, 5), (3, 5), (5, 5), (2, 4)], 500, 0)
    assert ratio["value"] == pytest.approx(14 / 19) and ratio["low"] <= ratio["value"] <= ratio["high"]


def test_degeneration_is_judged_kind_by_kind_against_the_teachers_own_rate():
    # The summarization example's figures: the teacher is "degenerate" only because it hits max_tokens.
    teacher = {"degenerate": 1.0, "empty": 0.0, "repetitive": 0.13, "non_words": 0.0, "unfinished": 1.0}
    student = {"degenerate": 0.98, "empty": 0.0, "repetitive": 0.93, "non_words": 0.05, "unfinished": 0.95}
    assert worse_than_teacher(student, teacher) == ["repetitive"]
    assert worse_than_teacher(teacher, teacher) == []
    report = {"labels": ["teacher", "distilled"], "metric_names": [], "models": {
        "teacher": {"evaluated": True, "degeneration": teacher},
        "distilled": {"evaluated": True, "degeneration": student}}}
    (warning,) = warnings(report)
    assert "distilled" in warning and "93.0% repetitive against 13.0% of the teacher's" in warning
