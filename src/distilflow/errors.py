"""Errors a user can act on. The CLI prints these as one sentence, without a traceback."""

from __future__ import annotations


class DistilflowError(Exception):
    """A problem with the user's input or environment, stated in one clear sentence."""


class SpecError(DistilflowError):
    """The job spec is invalid (unknown key, wrong type, missing file)."""


class DataError(DistilflowError):
    """A data file is unreadable or holds a bad row; the message names the file and line."""


class StageError(DistilflowError):
    """A stage cannot go on (no usable teacher data, too many failed requests, ...)."""


class JobCanceled(DistilflowError):
    """The job was canceled by the user while it ran."""
