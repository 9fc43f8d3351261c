"""The near-duplicate index every data check of a job uses (metrics/near_duplicates.py)."""

from __future__ import annotations

import random
import string

import pytest

from distilflow.metrics.near_duplicates import NearDuplicateIndex, shingles, similarity


def test_similarity_is_the_exact_jaccard_of_normalised_character_5grams() -> None:
    assert similarity("My card has not arrived", "  my CARD has   not arrived ") == 1.0
    assert shingles("abcdef") == {"abcde", "bcdef"}
    # abcdef -> {abcde, bcdef}; abcdeg -> {abcde, bcdeg}: one shared of three
    assert similarity("abcdef", "abcdeg") == pytest.approx(1 / 3)
    assert similarity("hello world", "zzzzzzzzzz") == 0.0
    assert similarity("hi", "HI") == 1.0 and similarity("hi", "ho") == 0.0


def test_index_finds_a_near_duplicate_and_not_an_unrelated_text() -> None:
    index = NearDuplicateIndex(threshold=0.8)
    index.add("train:1", "How do I activate my new card? It arrived this morning.")
    index.add("train:2", "What is the exchange rate for euros to dollars today?")
    index.add("train:3", "I want to close my account and get my money back")
    assert index.matches("how do I activate my new card?  it arrived this morning!") == ["train:1"]
    assert index.matches("Why was I charged a fee for a cash withdrawal abroad?") == []


def test_exact_duplicates_always_match_even_when_shorter_than_a_shingle() -> None:
    index = NearDuplicateIndex(threshold=1.0)
    index.add("a", "Hi")
    index.add("b", "hi ")
    index.add("c", "yes")
    assert index.matches("HI") == ["a", "b"]
    assert index.matches("ye") == []


def test_matches_agree_with_the_exact_similarity_on_random_variants() -> None:
    """No LSH false positive (every match is confirmed exactly), and pairs well above the threshold are found."""
    rng = random.Random(7)
    base = ["".join(rng.choice(string.ascii_lowercase + " ") for _ in range(80)) for _ in range(60)]
    index = NearDuplicateIndex(threshold=0.7)
    for i, text in enumerate(base):
        index.add(str(i), text)
    for i, text in enumerate(base):
        variant = list(text)
        for _ in range(rng.randint(0, 6)):  # a few typos
            variant[rng.randrange(len(variant))] = rng.choice(string.ascii_lowercase)
        query = "".join(variant)
        found = index.matches(query)
        for key in found:
            assert similarity(query, base[int(key)]) >= 0.7
        if similarity(query, text) >= 0.85:
            assert str(i) in found


def test_a_key_is_added_once_and_the_threshold_is_checked() -> None:
    index = NearDuplicateIndex()
    index.add("k", "some text here")
    with pytest.raises(ValueError, match="already"):
        index.add("k", "other text")
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(threshold=0.0)
    assert len(index) == 1
