"""The `inputs:` section: training inputs written by a teacher (or a writer of its own) from a description and a
few example rows, instead of (or besides) inputs a user already has. generate/write_inputs.py does the writing."""

from __future__ import annotations

from pydantic import Field

from distilflow.jobspec.names import PromptFormat
from distilflow.jobspec.sections import TeacherSpec, _Section

# Variation directives: one of each list is sampled per request (distill-slm's persona / tone / length / noise /
# edge-case axes), so that requests differ in more than their seeds. Each list can be replaced in the spec.
PERSONAS = ["a first-time customer", "a long-time customer", "a busy professional", "an elderly customer",
            "a student", "a non-native English speaker", "a frustrated customer", "a polite, formal customer"]
TONES = ["neutral", "polite", "impatient", "worried", "angry", "casual", "confused"]
LENGTHS = ["very short (a few words)", "one short sentence", "one or two sentences", "a short paragraph"]
NOISE = ["no typos", "no typos", "a typo or two", "all lower case, no punctuation", "text-message abbreviations"]
EDGE_CASES = ["a plain, typical request", "a plain, typical request", "an indirect way of asking",
              "two questions where this one is the main one", "extra details that do not matter",
              "a question that is easy to confuse with a similar one"]


class InputsSpec(_Section):
    count: int = Field(ge=1, description="how many training inputs to write")
    description: str = Field(min_length=1, description="what the inputs are, in the user's words")
    seeds: str | None = Field(None, description="JSONL of example rows (default: the rows of training_data)")
    seeds_per_request: int = Field(3, ge=1, description="example rows shown in each writing request")
    per_request: int = Field(10, ge=1, le=50, description="inputs asked for in each writing request")
    rewrite: float = Field(0.0, ge=0.0, le=1.0, description="share of written inputs made harder or more specific "
                                                             "in a second round")
    prompt_format: PromptFormat | None = Field(
        None, description="completion (a numbered list the writer continues) or chat (an instruction); default: "
                          "the writer's own prompt_format")
    writer: TeacherSpec | None = Field(None, description="who writes the inputs (default: the teacher)")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="the writer's sampling temperature")
    max_tokens: int = Field(512, ge=16, le=32768, description="the writer's output limit per request")
    seed: int = Field(0, description="chooses the directives and seeds of each request")
    personas: list[str] = Field(default_factory=lambda: list(PERSONAS), min_length=1)
    tones: list[str] = Field(default_factory=lambda: list(TONES), min_length=1)
    lengths: list[str] = Field(default_factory=lambda: list(LENGTHS), min_length=1)
    noise: list[str] = Field(default_factory=lambda: list(NOISE), min_length=1)
    edge_cases: list[str] = Field(default_factory=lambda: list(EDGE_CASES), min_length=1)

    def writer_spec(self, teacher: TeacherSpec) -> TeacherSpec:
        """Who writes, reading prompts in the form the writer is asked with."""
        writer = self.writer or teacher
        return writer.model_copy(update={"prompt_format": self.prompt_format or writer.prompt_format})
