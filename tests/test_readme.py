"""The README's job spec reference names every key the spec accepts."""

import re
from pathlib import Path

from pydantic import BaseModel

from distilflow.jobspec import JobSpec, LoraSpec

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def keys(model: type[BaseModel]) -> set[str]:
    found = set(model.model_fields)
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found |= keys(candidate)
    return found


def test_every_spec_key_is_documented():
    reference = README.split("## Job spec reference", 1)[1].split("\n## ", 1)[0]
    missing = sorted(k for k in keys(JobSpec) | keys(LoraSpec) if not re.search(rf"\b{k}\b", reference))
    assert not missing, f"README's job spec reference lacks: {missing}"
