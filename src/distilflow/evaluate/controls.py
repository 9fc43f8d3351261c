"""The judge is checked before it is believed: every judged run also judges a control set drawn from the test
inputs, whose right verdicts are known in advance.

- self vs self: the teacher's answer against itself, in both orders: each verdict should be a tie
  (`self_tie_rate`: the share of those requests answered tie);
- corrupted copies: the teacher's answer against a copy with its words shuffled, and against a copy cut to its first
  half, in both orders: the corrupted copy must lose (`corrupted_loss_rate`: the share of those pairs whose two
  verdicts agree that it loses). A judge that prefers longer answers passes the cut copies and fails the shuffled
  ones: the report shows both kinds;
- order flips: over every pair asked in both orders, the share whose verdict changes with the order
  (`order_flip_rate`; a judge that always picks the first answer flips every pair).

With a rubric, the corrupted copies must score below the original (`rubric_corrupted_lower_rate`). The judge is
`reliable` when every control it took passes its threshold below and few replies were unreadable; otherwise the
report says at its top which control failed, and by how much.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

# Thresholds of a reliable judge. A strong judge model meets them easily (an identical pair is a tie, a shuffled
# answer loses); they are set well inside the range of a judge that decides by position, length or chance.
SELF_TIE_MIN = 0.5
CORRUPTED_LOSS_MIN = 0.75
ORDER_FLIP_MAX = 0.25
RUBRIC_CORRUPTED_LOWER_MIN = 0.75
UNREADABLE_MAX = 0.2
MIN_WORDS = 4  # a control answer needs this many words for its corrupted copies to differ from it
CORRUPTIONS = ("shuffled", "truncated")


def corrupted(text: str, kind: str, seed: str) -> str:
    """The answer with its words shuffled (never left in order), or cut to its first half of words."""
    words = text.split()
    if kind == "truncated":
        return " ".join(words[:max(1, len(words) // 2)])
    shuffled = list(words)
    random.Random(seed).shuffle(shuffled)
    if shuffled == words:
        shuffled.reverse()
    return " ".join(shuffled)


def control_ids(answers: Mapping[str, str], size: int) -> list[str]:
    """`size` test inputs (by id) for the controls, chosen at random with a fixed seed among those whose answer has
    MIN_WORDS words or more (so that a corrupted copy differs); fewer when fewer qualify."""
    eligible = sorted(i for i, text in answers.items() if len(set(text.split())) >= 2 and len(text.split()) >= MIN_WORDS)
    random.Random(0).shuffle(eligible)
    return sorted(eligible[:size])


def _share(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def control_figures(self_verdicts: Sequence[str], corrupted_outcomes: Mapping[str, Sequence[str]],
                    flips: Sequence[bool], rubric_lower: Sequence[bool], unreadable: int, asked: int,
                    control_inputs: int) -> dict[str, Any]:
    """The controls' figures, `reliable`, and one sentence per failed control ("by how much").

    `self_verdicts`: each self-vs-self request's verdict ("tie", "A", "B"); `corrupted_outcomes`: per corruption
    kind, each pair's combined outcome for the corrupted copy ("loss", "tie", "win"); `flips`: per pair asked in both
    orders, whether its verdict changed with the order; `rubric_lower`: per corrupted copy scored, whether it scored
    below the original; `unreadable` of `asked` judged items could not be read."""
    every_corrupted = [o for outcomes in corrupted_outcomes.values() for o in outcomes]
    figures: dict[str, Any] = {
        "n": control_inputs,
        "self_tie_rate": _share([v == "tie" for v in self_verdicts]),
        "corrupted_loss_rate": _share([o == "loss" for o in every_corrupted]),
        "corrupted_loss_rate_by_kind": {kind: _share([o == "loss" for o in outcomes])
                                        for kind, outcomes in corrupted_outcomes.items()},
        "order_flip_rate": _share(list(flips)),
        "rubric_corrupted_lower_rate": _share(list(rubric_lower)),
        "unreadable_rate": unreadable / asked if asked else None,
    }
    failures = []
    checks = (("self_tie_rate", SELF_TIE_MIN, True, "the teacher's answer against itself came out tie in {v} of the "
                                                    "requests (a reliable judge: {t} or more)"),
              ("corrupted_loss_rate", CORRUPTED_LOSS_MIN, True, "a corrupted copy (words shuffled, or cut in half) "
                                                               "lost to the original in {v} of the pairs ({t} or more)"),
              ("order_flip_rate", ORDER_FLIP_MAX, False, "the verdict changed with the order of the answers in {v} of "
                                                         "the pairs ({t} at most)"),
              ("rubric_corrupted_lower_rate", RUBRIC_CORRUPTED_LOWER_MIN, True,
               "a corrupted copy scored below the original in {v} of the rubric controls ({t} or more)"),
              ("unreadable_rate", UNREADABLE_MAX, False, "{v} of the judge's replies could not be read ({t} at most)"))
    for name, threshold, at_least, sentence in checks:
        value = figures[name]
        if value is not None and (value < threshold if at_least else value > threshold):
            failures.append(sentence.format(v=f"{value:.0%}", t=f"{threshold:.0%}"))
    if not control_inputs:
        failures.append(f"no test input has an answer of {MIN_WORDS} words or more to build the controls from")
    figures["reliable"] = not failures
    figures["failures"] = failures
    figures["thresholds"] = {"self_tie_rate_min": SELF_TIE_MIN, "corrupted_loss_rate_min": CORRUPTED_LOSS_MIN,
                             "order_flip_rate_max": ORDER_FLIP_MAX,
                             "rubric_corrupted_lower_rate_min": RUBRIC_CORRUPTED_LOWER_MIN,
                             "unreadable_rate_max": UNREADABLE_MAX}
    return figures
