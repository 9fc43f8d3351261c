"""Checks that a model's answers are text at all, whatever their scores: n-gram metrics reward a "summary" made of
the source's function words ("The use to a help a state-based-based-based- the a." scored ROUGE-L like a real one),
so the report shows, per model, the share of answers that are

- empty: nothing but whitespace;
- repetitive: a word or a word piece repeated three times in a row, or a three-word sequence said twice;
- made of non-words: most of their words appear nowhere in the test inputs or references, nor among common words;
- unfinished: cut at the token limit instead of ending (the model never stopped).

A student far above its teacher on these gets a warning at the top of the report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

CHECKS = ("empty", "repetitive", "non_words", "unfinished")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_REPEATED_WORD = re.compile(r"\b(\w+)\b(?:\W+\1\b){2,}", re.IGNORECASE | re.UNICODE)
_REPEATED_PIECE = re.compile(r"(\w{3,}\W?)\1{2,}", re.UNICODE)  # "based-based-based-"
NON_WORD_SHARE = 0.3  # an answer is "non-words" when more than this share of its words are unknown ...
NON_WORD_MIN = 2  # ... and at least this many
# Words a correct answer may use that an input need not contain (function words of English).
COMMON_WORDS = frozenset("""a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now
of off on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves paper propose proposed show shows method
methods approach results new use using used based model models we our""".split())


@dataclass
class AnswerChecks:
    empty: bool
    repetitive: bool
    non_words: bool
    unfinished: bool | None  # None: the token count is unknown (a ranked answer, an API without usage)

    @property
    def degenerate(self) -> bool:
        return self.empty or self.repetitive or self.non_words or bool(self.unfinished)


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The words of the test inputs and references, lower-cased: what an answer about them may say."""
    return frozenset(w.lower() for text in texts for w in _WORD.findall(text)) | COMMON_WORDS


def repetitive(text: str) -> bool:
    if _REPEATED_WORD.search(text) or _REPEATED_PIECE.search(text):
        return True
    words = [w.lower() for w in _WORD.findall(text)]
    trigrams = Counter(zip(words, words[1:], words[2:]))
    return any(n >= 2 for n in trigrams.values())


def non_words(text: str, known: frozenset[str]) -> bool:
    words = [w.lower() for w in _WORD.findall(text) if len(w) >= 3]
    unknown = sum(w not in known for w in words)
    return unknown >= NON_WORD_MIN and unknown > NON_WORD_SHARE * len(words)


def check_answer(text: str, known: frozenset[str], output_tokens: int | None, max_tokens: int | None) -> AnswerChecks:
    unfinished = None if output_tokens is None or not max_tokens else output_tokens >= max_tokens
    blank = not text.strip()
    return AnswerChecks(empty=blank, repetitive=not blank and repetitive(text),
                        non_words=not blank and non_words(text, known), unfinished=unfinished)


def degeneration_shares(checks: list[AnswerChecks]) -> dict[str, float | None]:
    """The share of answers failing each check, and failing any ("degenerate")."""
    if not checks:
        return {}
    shares: dict[str, float | None] = {name: sum(bool(getattr(c, name)) for c in checks) / len(checks)
                                       for name in CHECKS}
    if all(c.unfinished is None for c in checks):
        shares["unfinished"] = None
    shares["degenerate"] = sum(c.degenerate for c in checks) / len(checks)
    return shares
