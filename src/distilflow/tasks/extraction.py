"""Extraction: a text -> one JSON object that follows the job's JSON schema (`schema:` in the spec, inline or a file).

Rows are {"text": ..., "output": {...}}; `output`, the reference, is optional and must follow the schema. The
prompt shows the schema and asks for the JSON object only. A model's answer is the first JSON object in its text
(a ```json fence or a sentence around it is tolerated); it counts only when it is valid against the schema
(validated with `jsonschema`). A teacher answer that is not JSON, or not valid against the schema, is rejected with
the reason (`not_json`, `schema_mismatch`) and what exactly is wrong; the student learns the accepted ones in one
canonical form (compact JSON, keys sorted), so it learns to answer with the object alone.

Scores (metrics/fields.py), each with a bootstrap interval: field-level F1 (the headline), precision and recall, exact
match of the whole object, the JSON-valid rate, and the accuracy of each field of the schema. An invalid answer
states no field: a consumer of the JSON would reject it whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distilflow.errors import SpecError
from distilflow.metrics.fields import field_stats, leaves, schema_fields
from distilflow.metrics.text import MetricStats, mean_stats
from distilflow.tasks.base import Message, RowError, Task, require_text, user_prompt

if TYPE_CHECKING:
    from distilflow.jobspec import JobSpec

PROMPT = ("Extract the information in the text below as one JSON object that follows this JSON schema. Answer with "
          "the JSON object only.\n\nSchema: {schema}\n\nText: {text}")
TEXT_FIELDS = ("text", "document", "message", "input")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```\s*$")


def canonical(obj: Any) -> str:
    """The one text of a JSON value: compact, keys sorted (what the student learns, and what answers agree on)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def first_json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The first JSON object in a model's text and None, or None and why none could be read."""
    stripped = _FENCE.sub("", text.strip())
    start = stripped.find("{")
    if start < 0:
        return None, "no JSON object in the answer (no '{')"
    try:
        value, _ = json.JSONDecoder().raw_decode(stripped[start:])
    except json.JSONDecodeError as error:
        return None, f"not valid JSON: {error.msg} at character {start + error.pos}"
    if not isinstance(value, dict):
        return None, f"the JSON is {type(value).__name__}, not an object"
    return value, None


class ExtractionTask(Task):
    name = "extraction"
    input_fields = TEXT_FIELDS
    primary_metric = "field_f1"
    metric_names = ("field_f1", "field_precision", "field_recall", "exact_match", "json_valid")
    judge_rubric = ("The JSON object holds exactly the facts the text states, each in the right field of the schema, "
                    "and nothing the text does not say.")

    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        if not isinstance(schema, Mapping):
            raise SpecError("task_type extraction needs `schema:` in the job spec: the JSON schema of an answer, "
                            "inline or the path of a .json file")
        import jsonschema

        try:
            validator_class = jsonschema.validators.validator_for(schema)
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as error:
            where = "/".join(str(p) for p in error.path) or "(top level)"
            raise SpecError(f"schema: not a valid JSON schema at {where}: {error.message}") from None
        self.schema = dict(schema)
        self._validator = validator_class(self.schema)
        self.fields = schema_fields(self.schema)
        self._schema_text = canonical(self.schema)

    # ----- what the spec settles ----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: "JobSpec") -> "ExtractionTask":
        schema = spec.json_schema
        return cls(schema if isinstance(schema, Mapping) else None)

    def spec_options(self) -> dict[str, Any]:
        return {"schema": self.schema}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ExtractionTask":
        return cls(options.get("schema"))

    # ----- rows -----------------------------------------------------------------------------------------------
    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        text_key = next((k for k in TEXT_FIELDS if k in row), "text")
        text = require_text(row, text_key)
        reference = None if row.get("output") is None else self._reference(row["output"])
        return user_prompt(PROMPT.format(schema=self._schema_text, text=text.strip())), reference

    def reference_from_text(self, text: str) -> Any:
        return self._reference(text)

    def _reference(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            parsed, problem = first_json_object(value)
            if parsed is None:
                raise RowError(f"the reference output is {problem}")
            value = parsed
        if not isinstance(value, dict):
            raise RowError(f"field 'output' must be a JSON object, not {type(value).__name__}")
        problem = self.schema_problem(value)
        if problem:
            raise RowError(f"field 'output' does not follow the schema: {problem}")
        return value

    def reference_answer(self, reference: Any) -> str:
        return canonical(reference)

    # ----- answers --------------------------------------------------------------------------------------------
    def schema_problem(self, value: Any) -> str | None:
        """What makes `value` invalid against the schema (the most relevant error, with its place), or None."""
        import jsonschema

        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"at ${where}: {error.message}"[:300]

    def parse(self, text: str) -> dict[str, Any] | None:
        """The answer's JSON object when it is valid against the schema, else None."""
        value, _ = first_json_object(text)
        return value if value is not None and self.schema_problem(value) is None else None

    def extract_answer(self, text: str) -> str | None:
        value = self.parse(text)
        return None if value is None else canonical(value)

    def check_teacher_answer(self, text: str, reference: Any, verify: bool) -> str | None:
        if not text.strip():
            return "empty"
        value, _ = first_json_object(text)
        if value is None:
            return "not_json"
        if self.schema_problem(value) is not None:
            return "schema_mismatch"
        if verify and reference is not None and not self.agrees(canonical(value), reference):
            return "disagrees_with_reference"
        return None

    def rejection_detail(self, text: str, reason: str) -> str | None:
        value, problem = first_json_object(text)
        if value is None:
            return problem
        return self.schema_problem(value)

    def training_answer(self, text: str) -> str:
        return self.extract_answer(text) or text

    def agrees(self, answer: str, reference: Any) -> bool:
        value = self.parse(answer)
        return value is not None and leaves(value) == leaves(reference)

    def answer_key(self, text: str) -> str | None:
        value = self.parse(text)
        return None if value is None else canonical(dict(sorted(leaves(value).items())))

    # ----- scoring --------------------------------------------------------------------------------------------
    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        stats = field_stats([self.parse(p) for p in predictions], references, ())["field_f1"]
        return [stats.aggregate(row) for row in stats.rows]

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        parsed = [self.parse(p) for p in predictions]
        return {**field_stats(parsed, references, self.fields),
                "json_valid": mean_stats([float(p is not None) for p in parsed])}
