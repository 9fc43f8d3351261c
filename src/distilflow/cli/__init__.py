"""The command line. Thin: it parses arguments and calls the same functions as the Python API.

Errors are one sentence on stderr and exit status 1 (no traceback unless --debug). common.py holds the apps and
the options; stages.py, models.py and jobs.py the commands.
"""

from __future__ import annotations

# Importing a command module registers its commands on `app`, in this order in --help: stages first.
from distilflow.cli import stages  # noqa: F401, I001
from distilflow.cli import models  # noqa: F401
from distilflow.cli import jobs  # noqa: F401
from distilflow.cli.common import app


def main() -> None:
    app()

