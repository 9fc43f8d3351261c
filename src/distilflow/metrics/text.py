"""Text metrics. BLEU/chrF come from sacrebleu and ROUGE from rouge-score; the SQuAD answer normalisation
and token F1 are the few lines of the official SQuAD v1.1 script's logic, written out here because no
maintained library ships them without a hub download (HF `evaluate` fetches its metric scripts).

Every metric is also available as per-example sufficient statistics (`MetricStats`): the score of any
subset of examples is a function of the sum of their rows. That is what makes a corpus-level metric
(BLEU, chrF) resamplable for a bootstrap interval, exactly as sacrebleu's own significance tests do.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: list[str]) -> float:
    """Best token-overlap F1 of the prediction against any reference (SQuAD definition)."""
    best = 0.0
    pred_tokens = normalize_answer(prediction).split()
    for reference in references:
        ref_tokens = normalize_answer(reference).split()
        if not pred_tokens or not ref_tokens:
            best = max(best, float(pred_tokens == ref_tokens))
            continue
        common = collections.Counter(pred_tokens) & collections.Counter(ref_tokens)
        overlap = sum(common.values())
        if overlap == 0:
            continue
        precision, recall = overlap / len(pred_tokens), overlap / len(ref_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measures, best over the references (rouge-score's score_multi)."""
    scores = _rouge_scorer().score_multi(references, prediction)
    return {name: value.fmeasure for name, value in scores.items()}


def _reference_streams(references: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference position; pad rows with fewer references."""
    width = max((len(r) for r in references), default=1)
    return [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]


def sentence_bleu(prediction: str, references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, references).score)


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def sentence_chrf(prediction: str, references: list[str]) -> float:
    """chrF of one text against its references (sacrebleu defaults), 0-100."""
    return float(_chrf().sentence_score(prediction, references).score)


# ----- per-example sufficient statistics ------------------------------------------------------


@dataclass
class MetricStats:
    """One metric over a set of examples: a row of statistics per example, and how a sum of rows becomes
    the score. Mean metrics carry (value, 1); corpus BLEU/chrF carry sacrebleu's n-gram match counts."""

    rows: list[list[float]]
    aggregate: Callable[[Sequence[float]], float]

    @property
    def n(self) -> int:
        return len(self.rows)

    def value(self) -> float | None:
        if not self.rows:
            return None
        width = len(self.rows[0])
        return float(self.aggregate([sum(row[i] for row in self.rows) for i in range(width)]))


def _mean_of_sums(sums: Sequence[float]) -> float:
    return float(sums[0]) / float(sums[1]) if sums[1] else 0.0


def mean_stats(values: Sequence[float]) -> MetricStats:
    """A metric that is the mean of per-example values (accuracy, exact match, F1, ROUGE)."""
    return MetricStats([[float(v), 1.0] for v in values], _mean_of_sums)


def _sacrebleu_stats(metric, predictions: list[str], references: list[list[str]]) -> MetricStats:
    # sacrebleu's segment statistics and score-from-summed-statistics are the same two steps its
    # corpus_score() and its paired bootstrap (sacrebleu.significance) use.
    if not predictions:
        return MetricStats([], lambda sums: 0.0)
    rows = metric._extract_corpus_statistics(predictions, _reference_streams(references))
    return MetricStats([[float(x) for x in row] for row in rows],
                       lambda sums: float(metric._compute_score_from_stats(list(sums)).score))


def bleu_stats(predictions: list[str], references: list[list[str]], *, effective_order: bool = False) -> MetricStats:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exponential smoothing), 0-100. `effective_order`
    (sacrebleu's option for short segments) drops n-gram orders no segment is long enough to have: short
    answer spans would otherwise always score 0."""
    from sacrebleu.metrics import BLEU

    return _sacrebleu_stats(BLEU(effective_order=effective_order), predictions, references)


def chrf_stats(predictions: list[str], references: list[list[str]]) -> MetricStats:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return _sacrebleu_stats(CHRF(), predictions, references)


def rouge_stats(predictions: list[str], references: list[list[str]]) -> dict[str, MetricStats]:
    """ROUGE-1/2/L F-measure averaged over examples, 0-1."""
    per_example = [rouge(p, r) for p, r in zip(predictions, references)]
    return {name: mean_stats([s[name] for s in per_example]) for name in ("rouge1", "rouge2", "rougeL")}
