"""Every task metric against values computed by hand and against the reference library itself."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from conftest import task_scores
from distilflow.metrics.text import (
    bleu_stats,
    chrf_stats,
    exact_match,
    mean_stats,
    normalize_answer,
    rouge,
    token_f1,
)
from distilflow.tasks import get_task

HYP = "the cat sat on the mat"
REF = "the cat sat on a mat"


# ----- SQuAD normalisation, exact match, token F1 ------------------------------------------------------


def test_squad_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Eiffel-Tower!  ") == "eiffeltower"
    assert normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"


def test_exact_match_uses_the_best_reference():
    assert exact_match("The Eiffel Tower.", ["Louvre", "eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0


def test_token_f1_by_hand():
    # prediction tokens [cat, sat]; reference [cat, sat, down]: precision 1, recall 2/3 -> F1 0.8
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    # best over references; no overlap is 0; both empty after normalisation counts as a match
    assert token_f1("cat", ["dog", "cat"]) == 1.0
    assert token_f1("cat", ["dog"]) == 0.0
    assert token_f1("the", ["a"]) == 1.0


def test_qa_task_scores_the_first_line_with_em_and_f1():
    task = get_task("qa")
    predictions = ["The Eiffel Tower\nIt is in Paris.", "cat sat", "no idea"]
    references = [["Eiffel Tower"], ["the cat sat down"], ["Louvre"]]
    scores = task_scores(task, predictions, references)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    # F1: 1.0, (P 1, R 2/3 -> 0.8), 0.0
    assert scores["f1"] == pytest.approx((1.0 + 0.8 + 0.0) / 3)
    assert task.example_scores(predictions, references) == pytest.approx([1.0, 0.8, 0.0])
    # BLEU and chrF of the extracted answers come from sacrebleu (effective order for short spans)
    answers = ["The Eiffel Tower", "cat sat", "no idea"]
    expected = sacrebleu.BLEU(effective_order=True).corpus_score(answers, [[r[0] for r in references]]).score
    assert scores["bleu"] == pytest.approx(expected)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(answers, [[r[0] for r in references]]).score)


# ----- accuracy: NLI labels and GSM8K-style final numbers ------------------------------------------------


def test_nli_accuracy_by_hand():
    task = get_task("nli")
    predictions = ["Entailment.", "I think it is neutral", "contradiction", "no idea"]
    references = ["entailment", "contradiction", "contradiction", "neutral"]
    assert task_scores(task, predictions, references) == {"accuracy": pytest.approx(0.5)}


def test_math_accuracy_gsm8k_final_number():
    task = get_task("math")
    predictions = ["3 + 4 = 7\n#### 7", "so the total is 1,234.", "#### 12.50", "#### 8", "no number"]
    references = ["7", "1234", "12.5", "9", "3"]
    assert task.example_scores(predictions, references) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert task_scores(task, predictions, references)["accuracy"] == pytest.approx(0.6)
    # the reference side understands GSM8K's '#### N' form too
    assert task.reference_from_text("Natalia sold 48 + 24 = 72 clips.\n#### 72") == "72"


# ----- ROUGE (rouge-score) -------------------------------------------------------------------------


def test_rouge_by_hand():
    scores = rouge(HYP, [REF])
    # unigrams: 5 of 6 match both ways; bigrams: the-cat, cat-sat, sat-on of 5; LCS 'the cat sat on mat' = 5
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)


def test_rouge_against_the_library_and_best_of_references():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    pairs = [("the cats are sitting on mats", "a cat sat on the mat"), ("nothing in common", "the dog barked")]
    for hyp, ref in pairs:
        expected = scorer.score(ref, hyp)
        assert rouge(hyp, [ref]) == {k: pytest.approx(v.fmeasure) for k, v in expected.items()}
    assert rouge(HYP, ["unrelated words", REF])["rouge1"] == pytest.approx(5 / 6)


def test_summarization_scores_rouge_mean_and_corpus_bleu_chrf():
    task = get_task("summarization")
    predictions = [HYP, "a dog barked loudly at night"]
    references = [[REF], ["the dog barked at night"]]
    scores = task_scores(task, predictions, references)
    assert scores["rouge1"] == pytest.approx((rouge(HYP, [REF])["rouge1"] + rouge(*predictions[1:], references[1])["rouge1"]) / 2)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [[REF, "the dog barked at night"]]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [[REF, "the dog barked at night"]]).score)


# ----- BLEU and chrF (sacrebleu) -------------------------------------------------------------------


def test_bleu_by_hand():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty
    expected = 100 * math.exp((math.log(5 / 6) + math.log(3 / 5) + math.log(2 / 4) + math.log(1 / 3)) / 4)
    assert bleu_stats([HYP], [[REF]]).value() == pytest.approx(expected)
    # a hypothesis half as long as its reference pays the brevity penalty exp(1 - 12/6)
    long_ref = "the cat sat on the mat and then it went to sleep there"
    bp = math.exp(1 - len(long_ref.split()) / 6)
    assert bleu_stats([HYP], [[long_ref]]).value() == pytest.approx(bp * 100, rel=1e-6)


def test_bleu_and_chrf_against_sacrebleu_with_several_references():
    hyps = ["the cat sat on the mat", "hello there general kenobi", "I am fine, thanks 7."]
    refs = [["the cat sat on a mat", "a cat was sitting on the mat"], ["hello there"], ["I am fine, thanks 7."]]
    streams = [[r[0] for r in refs], [r[1] if len(r) > 1 else r[0] for r in refs]]
    assert bleu_stats(hyps, refs).value() == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    assert chrf_stats(hyps, refs).value() == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score)
    conversation = task_scores(get_task("conversation"), hyps, refs)
    assert conversation == {"bleu": pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score),
                            "chrf": pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score),
                            "exact_match": pytest.approx(2 / 3)}  # SQuAD normalisation drops "the" / "a"


def test_chrf_extremes_by_hand():
    assert chrf_stats(["identical text here"], [["identical text here"]]).value() == pytest.approx(100.0)
    assert chrf_stats(["xyz"], [["abc"]]).value() == 0.0


def test_corpus_bleu_is_not_the_mean_of_sentence_bleu():
    # the sufficient statistics are summed before the score is taken: that is what corpus BLEU means
    hyps, refs = [HYP, "completely different"], [[REF], ["nothing alike at all here"]]
    corpus = bleu_stats(hyps, refs).value()
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]]).score)
    mean_sentence = sum(sacrebleu.sentence_bleu(h, r).score for h, r in zip(hyps, refs)) / 2
    assert corpus != pytest.approx(mean_sentence)


def test_mean_stats_and_empty_inputs():
    assert mean_stats([1, 0, 1, 1]).value() == pytest.approx(0.75)
    assert mean_stats([]).value() is None
    assert bleu_stats([], []).value() is None
