"""Ship a job's distilled student: a self-contained Hugging Face folder with a model card (`hf`), one GGUF file
for llama.cpp-style runtimes (`gguf`), or that file with an Ollama Modelfile beside it (`ollama`, ollama.py), and an
OpenAI-compatible server for it (serve.py). Above the stages: it reads
what a completed job left in its workspace (the student, the report) and nothing below imports it."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distilflow.errors import DistilflowError
from distilflow.io import atomic_folder, read_json, write_text_atomic
from distilflow.jobs.store import JobStore
from distilflow.jobspec import JobSpec
from distilflow.workspace import JobPaths, Workspace

log = logging.getLogger(__name__)

ExportFormat = Literal["hf", "gguf", "ollama"]
FORMATS = ("hf", "gguf", "ollama")


@dataclass(frozen=True)
class ExportSource:
    """A job's trained student and what the card needs about it."""

    spec: JobSpec
    paths: JobPaths

    @classmethod
    def of(cls, workspace: Workspace, job: str) -> "ExportSource":
        """The job named `job` (or the job of a spec file's name); one sentence if it has no trained student."""
        if job.endswith((".yaml", ".yml")) and Path(job).is_file():
            from distilflow.jobspec import load_spec

            job = load_spec(Path(job)).name or job
        record = JobStore(workspace.db_path).get(job)
        source = cls(JobSpec.model_validate(record.spec), workspace.job(job))
        if not (source.paths.student_final / "config.json").exists() and not (
                source.paths.student_final / "adapter_config.json").exists():
            raise DistilflowError(f"job {job!r} has no trained student yet ({source.paths.student_final} is missing); "
                                  "run `distilflow run` first")
        return source

    @property
    def name(self) -> str:
        from distilflow.jobs.registry import output_model_names

        return output_model_names(self.spec)["distilled"]

    def default_target(self, fmt: ExportFormat, quantize: str) -> Path:
        folder = self.paths.root / "export"
        # The folder carries the model's name: what `serve` and `vllm serve` call it by default.
        if fmt == "hf":
            return folder / self.name
        if fmt == "ollama":  # a folder of its own: the Modelfile names the GGUF file beside it
            return folder / f"{self.name}-ollama"
        return folder / f"{self.name}-{quantize}.gguf"


@contextmanager
def merged_student(source: ExportSource) -> Iterator[Path]:
    """The student as a plain HF folder: `student/final` itself, or (LoRA saved unmerged) a temporary merge."""
    final = source.paths.student_final
    if not (final / "adapter_config.json").exists():
        yield final
        return
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    log.info("merging the LoRA adapter into its base model")
    with tempfile.TemporaryDirectory(prefix="distilflow-merge-") as folder:
        AutoPeftModelForCausalLM.from_pretrained(final).merge_and_unload().save_pretrained(folder)
        AutoTokenizer.from_pretrained(final).save_pretrained(folder)
        yield Path(folder)


def _export_hf(source: ExportSource, target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distilflow.export.card import model_card, model_license
    from distilflow.models import resolve_model_ref

    report = read_json(source.paths.report_json, default={}) or {}
    card = model_card(source.spec, report, title=source.name, base_license=model_license(resolve_model_ref(source.spec.student.model)))
    log.info("exporting %s to %s (safetensors, tokenizer, chat template, model card)", source.name, target)
    with merged_student(source) as folder, atomic_folder(target) as staging:
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.save_pretrained(staging, safe_serialization=True)  # writes generation_config.json too
        AutoTokenizer.from_pretrained(folder).save_pretrained(staging)  # with the chat template
        write_text_atomic(staging / "README.md", card)
    return target


def export_job(workspace: Workspace, job: str, fmt: ExportFormat = "hf", quantize: str | None = None,
               out: str | Path | None = None) -> Path:
    """Write the job's distilled student as `fmt`; returns the folder (hf), the file (gguf) or the Modelfile (ollama)
    written."""
    from distilflow.export.to_gguf import quant_type

    if fmt not in FORMATS:
        raise DistilflowError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "hf" and quantize is not None:
        raise DistilflowError("--quantize applies to --format gguf and ollama only (the hf folder keeps the trained "
                              "weights)")
    quantize = quantize or "f16"
    if fmt != "hf":
        quant_type(quantize)  # an unavailable type is refused before the student is even opened
    source = ExportSource.of(workspace, job)
    target = Path(out).expanduser().resolve() if out else source.default_target(fmt, quantize)
    if fmt == "hf":
        return _export_hf(source, target)
    if fmt == "ollama":
        return _export_ollama(source, target, quantize)
    if target.suffix != ".gguf":
        target = target / f"{source.name}-{quantize}.gguf"
    return _export_gguf(source, target, quantize)


def _export_gguf(source: ExportSource, target: Path, quantize: str) -> Path:
    from distilflow.export.card import model_license
    from distilflow.export.to_gguf import write_gguf
    from distilflow.jobs.progress import StageProgress
    from distilflow.models import resolve_model_ref

    target.parent.mkdir(parents=True, exist_ok=True)
    license = model_license(resolve_model_ref(source.spec.student.model))
    with merged_student(source) as folder, StageProgress(None, "", "export", None,
                                                          f"writing {target.name}") as progress:
        def advance(done: int, total: int) -> None:
            if progress.total != total:
                progress.set_total(total)
            progress.update(done)

        return write_gguf(folder, target, quantize, name=source.name, license=license, progress=advance)


def _export_ollama(source: ExportSource, folder: Path, quantize: str) -> Path:
    """The GGUF file, then the Modelfile beside it (written last: a Modelfile always names a complete file)."""
    from transformers import AutoTokenizer

    from distilflow.export.ollama import modelfile_target, modelfile_text
    from distilflow.tasks import get_task

    spec = source.spec
    task = get_task(spec.task_type, spec.labels)
    text = modelfile_text(gguf_name=f"{source.name}-{quantize}.gguf", model_name=source.name, task=task,
                          tokenizer=AutoTokenizer.from_pretrained(source.paths.student_final),
                          prompt_format=spec.student.prompt_format, max_tokens=spec.evaluation.max_tokens)
    gguf = _export_gguf(source, folder / f"{source.name}-{quantize}.gguf", quantize)
    write_text_atomic(modelfile_target(gguf.parent), text)
    return modelfile_target(gguf.parent)
