"""The judge's wire contract: what a judge is sent and how its reply is read, so that any model server can judge
and a user can write a judge of their own (docs/evaluation.md, "The wire contract").

- A pairwise request is one user message that ends with the two answers, each under its own header line:
  `### Answer A`, then `### Answer B` (nothing follows Answer B). The reply is read for its first standalone `A`,
  `B` or `tie` (any case); what follows it is the reason.
- A rubric request is one user message that ends with the answer under `### Answer`. The reply is read for
  `Score: N` (N on the scale, 1 to 5); the rest of the reply is the reason.
- A reply that cannot be read is asked once more, with a reminder of the reply format put at the start of the
  message (so that the message still ends with the answers); if that one cannot be read either, the item is counted
  apart as unreadable, never as a verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distilflow.models import Message

SCALE = (1, 5)  # the rubric's fixed scale
VERDICTS = ("A", "B", "tie")
_VERDICT = re.compile(r"(?<![\w])(a|b|tie)(?![\w])", re.IGNORECASE)
_SCORE = re.compile(r"score\s*:\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
REASON_CHARS = 300

PAIRWISE_INSTRUCTIONS = (
    "You are judging two answers to the same task input. Which answer is better?\n"
    "What makes an answer good: {rubric}\n"
    "Reply on the first line with one word: A if Answer A is better, B if Answer B is better, or tie if they are "
    "equally good (or equally bad). On the next line give one short reason.")
RUBRIC_INSTRUCTIONS = (
    "You are grading one answer to a task input on a scale of {low} (useless) to {high} (excellent).\n"
    "What makes an answer good: {rubric}\n"
    "Reply on the first line with `Score: N`, N from {low} to {high}. On the next line give one short reason.")
PAIRWISE_REMINDER = "Your previous reply could not be read. Begin your reply with A, B or tie.\n\n"
RUBRIC_REMINDER = "Your previous reply could not be read. Begin your reply with `Score: N`.\n\n"


@dataclass(frozen=True)
class Reading:
    """What a judge's reply says: a verdict ("A", "B", "tie") or a score, and its reason; `readable` False when the
    reply says neither."""

    verdict: str | None = None
    score: float | None = None
    reason: str = ""

    @property
    def readable(self) -> bool:
        return self.verdict is not None or self.score is not None


def pairwise_messages(task_input: str, answer_a: str, answer_b: str, rubric: str, retry: bool = False) -> list[Message]:
    text = (f"{PAIRWISE_REMINDER if retry else ''}{PAIRWISE_INSTRUCTIONS.format(rubric=rubric)}\n\n"
            f"### Task input\n{task_input.strip()}\n\n### Answer A\n{answer_a.strip()}\n\n"
            f"### Answer B\n{answer_b.strip()}")
    return [{"role": "user", "content": text}]


def rubric_messages(task_input: str, answer: str, rubric: str, retry: bool = False) -> list[Message]:
    low, high = SCALE
    text = (f"{RUBRIC_REMINDER if retry else ''}{RUBRIC_INSTRUCTIONS.format(rubric=rubric, low=low, high=high)}\n\n"
            f"### Task input\n{task_input.strip()}\n\n### Answer\n{answer.strip()}")
    return [{"role": "user", "content": text}]


def _reason(text: str) -> str:
    reason = " ".join(text.replace("*", " ").split()).strip(" .:-–—")
    return reason[:REASON_CHARS]


def read_pairwise(reply: str) -> Reading:
    """The first standalone A, B or tie of a reply (any case), and the rest as the reason."""
    found = _VERDICT.search(reply)
    if found is None:
        return Reading(reason=_reason(reply))
    word = found.group(1).lower()
    verdict = "tie" if word == "tie" else word.upper()
    return Reading(verdict=verdict, reason=_reason(reply[found.end():]))


def read_rubric(reply: str) -> Reading:
    """`Score: N` in a reply (N on the scale), and the rest of the reply as the reason."""
    found = _SCORE.search(reply)
    if found is None:
        return Reading(reason=_reason(reply))
    score = float(found.group(1))
    if not SCALE[0] <= score <= SCALE[1]:
        return Reading(reason=_reason(reply))
    return Reading(score=score, reason=_reason(reply[:found.start()] + " " + reply[found.end():]))


def task_input_text(messages: list[Message]) -> str:
    """A test input as the judge reads it: the user's message, or the whole conversation turn by turn."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)
