"""What one writing request asks for: a sampled variation directive (persona, tone, length, noise, edge case), the
seeds it shows, and its prompt in either form; and reading a numbered list back out of the writer's answer.

Two prompt forms, as the teacher has. `completion`: the description, the directive, then the seeds as the start of
a numbered list the writer continues ("4." left open) -- small instruct models (SmolLM2-135M) continue a list far
more reliably than they follow an instruction. `chat`: an instruction with the seeds as examples, answered with a
numbered list.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass

from distilflow.jobspec.inputs import InputsSpec
from distilflow.models import Message

_NUMBERED = re.compile(r"^\s*(\d{1,3})\s*[.)]\s*(.*\S)\s*$")
_QUOTES = "\"'“”‘’`"
MAX_INPUT_CHARS = 2000  # a written input longer than this is a run-on answer, not an input
MIN_INPUT_CHARS = 3


@dataclass(frozen=True)
class Directive:
    """How the inputs of one request should vary from the seeds."""

    persona: str
    tone: str
    length: str
    noise: str
    edge_case: str

    def text(self) -> str:
        return (f"written by {self.persona}; tone: {self.tone}; length: {self.length}; {self.noise}; "
                f"{self.edge_case}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def sample_directive(inputs: InputsSpec, rng: random.Random) -> Directive:
    return Directive(rng.choice(inputs.personas), rng.choice(inputs.tones), rng.choice(inputs.lengths),
                     rng.choice(inputs.noise), rng.choice(inputs.edge_cases))


def target_line(target: str) -> str:
    """What every input of a request is written for (a label), as the prompt says it."""
    return f"Every message below is about: {target.replace('_', ' ')}.\n" if target else ""


def writing_messages(inputs: InputsSpec, prompt_format: str, target: str, directive: Directive,
                     seeds: list[str]) -> list[Message]:
    """The prompt of one writing request: `inputs.per_request` new inputs like `seeds`, varied by `directive`."""
    if prompt_format == "completion":
        listed = "".join(f"{i}. {one_line(seed)}\n" for i, seed in enumerate(seeds, 1))
        text = (f"{inputs.description.strip()}\n{target_line(target)}"
                f"Style: {directive.text()}.\n\n{listed}{len(seeds) + 1}.")
        return [{"role": "user", "content": text}]
    examples = "\n".join(f"- {one_line(seed)}" for seed in seeds)
    text = (f"{inputs.description.strip()}\n{target_line(target)}\nExamples:\n{examples}\n\n"
            f"Write {inputs.per_request} new, different ones ({directive.text()}). Do not repeat the examples. "
            f"Answer with a numbered list only, one per line: 1. ... 2. ...")
    return [{"role": "user", "content": text}]


def rewrite_messages(inputs: InputsSpec, prompt_format: str, target: str, text: str) -> list[Message]:
    """The prompt that makes one written input harder or more specific (the optional rewrite round)."""
    about = f" (about {target.replace('_', ' ')})" if target else ""
    if prompt_format == "completion":
        prompt = (f"{inputs.description.strip()}\n{target_line(target)}\n"
                  f"Plain: {one_line(text)}\nMore specific and less obvious:")
        return [{"role": "user", "content": prompt}]
    prompt = (f"{inputs.description.strip()}\nRewrite this one{about} so that it is more specific and harder to "
              f"tell apart from similar ones, keeping what it asks for. Answer with the rewritten text only.\n\n"
              f"{one_line(text)}")
    return [{"role": "user", "content": prompt}]


def one_line(text: str) -> str:
    return " ".join(text.split())


def clean_item(text: str) -> str:
    """A written input as kept: one line, surrounding quotes removed."""
    return one_line(text).strip(_QUOTES).strip()


def parse_numbered(answer: str, prompt_format: str, first_number: int, limit: int) -> list[str]:
    """The items of a numbered list in the writer's answer, at most `limit`. In completion form the answer
    continues an open "N." (the first item has no number of its own)."""
    text = f"{first_number}. {answer.lstrip()}" if prompt_format == "completion" else answer
    items: list[str] = []
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match:
            items.append(match.group(2))
        elif items and line.strip() and prompt_format == "completion":
            break  # the list ended (the writer went on with something else)
    return [clean_item(item) for item in items[:limit]]


def parse_rewrite(answer: str) -> str:
    """The rewritten input: the answer's first non-empty line."""
    return clean_item(next((line for line in answer.strip().splitlines() if line.strip()), ""))


def unusable(text: str) -> bool:
    return not MIN_INPUT_CHARS <= len(text) <= MAX_INPUT_CHARS
