"""distilflow: distil a large teacher LLM into a small, fast student for one task.

Public API: `Client`, `DistillationJob`, `JobSpec`, `load_spec`.
"""

from distilflow.client import Client, DistillationJob
from distilflow.errors import DataError, DistilflowError, SpecError, StageError
from distilflow.jobspec import JobSpec, load_spec

__version__ = "0.1.0"

__all__ = ["Client", "DataError", "DistillationJob", "DistilflowError", "JobSpec", "SpecError", "StageError",
           "load_spec", "__version__"]
