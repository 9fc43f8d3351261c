"""Text metrics. BLEU/chrF come from sacrebleu and ROUGE from rouge-score; the SQuAD answer normalisation
and token F1 are the few lines of the official SQuAD v1.1 script's logic, written out here because no
maintained library ships them without a hub download (HF `evaluate` fetches its metric scripts)."""

from __future__ import annotations

import collections
import re
import string
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


def corpus_bleu(predictions: list[str], references: list[list[str]]) -> float:
    import sacrebleu

    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(predictions, _reference_streams(references)).score)


def corpus_chrf(predictions: list[str], references: list[list[str]]) -> float:
    import sacrebleu

    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_chrf(predictions, _reference_streams(references)).score)


def sentence_bleu(prediction: str, references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, references).score)
