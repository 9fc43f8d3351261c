"""Alignment across tokenizers (train/alignment.py): targets at the student's tokens from a teacher of another
tokenizer, worked by hand on two tiny tokenizers, one that keeps words whole and one that splits them."""

from __future__ import annotations

import math

import pytest
from tiny_models import build_merge_tokenizer

from distilflow.train.alignment import (
    TeacherPosition,
    align_answer,
    recover_teacher_tokens,
    spans,
)
from distilflow.train.sparse_targets import TokenMapper

# "hello world": whole -> "hello" " world"; split -> "he" "llo" " w" "or" "ld".
WHOLE = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), (" ", "w"), ("o", "r"), (" w", "or"), ("l", "d"),
         (" wor", "ld")]
SPLIT = [("h", "e"), ("l", "l"), ("ll", "o"), (" ", "w"), ("o", "r"), ("l", "d")]
ANSWER = "hello world"


def _student(merges):
    tokenizer = build_merge_tokenizer(merges)
    encoded = tokenizer(ANSWER, add_special_tokens=False, return_offsets_mapping=True)
    return tokenizer, encoded["input_ids"], encoded["offset_mapping"]


def _position(piece: str, *alternatives: tuple[str, float]) -> TeacherPosition:
    return TeacherPosition(piece, math.log(alternatives[0][1]), tuple((p, math.log(v)) for p, v in alternatives))


def _targets(aligned, tokenizer):
    """Per student token: {token text: probability}, and the unmatched probabilities."""
    return [({tokenizer.convert_ids_to_tokens(i): pytest.approx(math.exp(v)) for i, v in zip(ids, values)},
             pytest.approx(rest)) for ids, values, rest in zip(aligned.ids, aligned.logprobs, aligned.unmatched)]


def test_student_that_splits_words_gets_the_product_rule_and_matched_alternatives():
    tokenizer, ids, offsets = _student(SPLIT)
    assert tokenizer.convert_ids_to_tokens(ids) == ["he", "llo", " w", "or", "ld"]
    teacher = [_position("hello", ("hello", 0.6), ("he", 0.2), ("hi", 0.1)),
               _position(" world", (" world", 0.5), (" w", 0.3), (" word", 0.1))]
    aligned = align_answer(ANSWER, teacher, ids, offsets, TokenMapper(tokenizer))
    # By hand: "he" carries p(hello) + p(he) = 0.8, so "llo" gets 0.6 / 0.8 and the product is p(hello) = 0.6;
    # " w" carries 0.5 + 0.3, "or" 0.5 / 0.8, "ld" 1. "hi" and " word" are no student token: ULD's share.
    assert _targets(aligned, tokenizer) == [({"he": 0.8}, [0.1]), ({"llo": 0.75}, []), ({" w": 0.8}, [0.1]),
                                            ({"or": 0.625}, []), ({"ld": 1.0}, [])]
    assert math.exp(sum(v[0] for v in aligned.logprobs[:2])) == pytest.approx(0.6)
    stats = aligned.stats
    assert (stats.student_tokens, stats.aligned_tokens, stats.unmatched_pieces) == (5, 5, 2)
    assert stats.unmatched_mass == pytest.approx(0.2)


def test_student_that_keeps_words_whole_gets_the_product_of_the_teachers_tokens():
    tokenizer, ids, offsets = _student(WHOLE)
    assert tokenizer.convert_ids_to_tokens(ids) == ["hello", " world"]
    teacher = [_position("he", ("he", 0.9), ("hello", 0.05), ("zz", 0.03)), _position("llo", ("llo", 0.8)),
               _position(" w", (" w", 0.7), (" world", 0.2)), _position("or", ("or", 0.9)), _position("ld", ("ld", 1.0))]
    aligned = align_answer(ANSWER, teacher, ids, offsets, TokenMapper(tokenizer))
    # "hello": 0.9 * 0.8 along the teacher's tokens, plus the teacher's whole-word alternative 0.05;
    # " world": 0.7 * 0.9 * 1 + 0.2. "zz" is no student token.
    assert _targets(aligned, tokenizer) == [({"hello": 0.77}, [0.03]), ({" world": 0.83}, [])]


def test_spans_with_several_tokens_on_both_sides_get_no_target_and_are_counted():
    tokenizer, ids, offsets = _student(SPLIT)  # "he" "llo" ...
    teacher = [_position("hel", ("hel", 0.9)), _position("lo", ("lo", 0.9)), _position(" world", (" world", 0.5))]
    aligned = align_answer(ANSWER, teacher, ids, offsets, TokenMapper(tokenizer))
    assert aligned.ids[0] == [] and aligned.ids[1] == []
    assert aligned.stats.aligned_tokens == 3 and aligned.stats.student_tokens == 5


def test_spans_never_end_inside_a_character_and_stop_where_one_side_stops():
    # "é" is two bytes; a byte-level student splits it in two tokens with the same character offsets.
    assert spans([2, 3], [0.5, 2, 3]) == [(range(1), range(2)), (range(1, 2), range(2, 3))]
    assert spans([1], [1, 2]) == [(range(1), range(1))]


def test_teacher_tokens_are_recovered_from_the_api_pieces_even_when_sampled():
    pieces = [["hi", "hello", "he"], [" word", " world"], ["!"]]
    logprobs = [[-0.1, -1.0, -2.0], [-0.2, -0.9], [-0.5]]
    positions = recover_teacher_tokens(ANSWER, pieces, logprobs)
    assert [p.piece for p in positions] == ["hello", " world"]
    assert positions[0].logprob == -1.0 and len(positions[0].alternatives) == 3
    assert recover_teacher_tokens(ANSWER, [["§x§"]], [[-0.1]]) is None
