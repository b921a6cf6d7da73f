"""The errors qembed raises on purpose.

Each carries a machine-readable ``code`` and, for input mistakes, the ``param`` at fault,
so that the HTTP layer can turn any of them into an OpenAI-style error body without
knowing where it came from. The engine never imports HTTP; the server maps classes to
status codes in one place (``qembed.server.errors``).
"""

from __future__ import annotations


class QembedError(Exception):
    """Base class: something qembed explains in its message."""

    code: str = "qembed_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ModelError(QembedError):
    """The model cannot be had or used (missing files, no network, unsupported layout)."""

    code = "model_error"


class ModelNotAvailable(ModelError):
    code = "model_not_available"


class IncompleteModelFolder(ModelError):
    code = "incomplete_model_folder"

    def __init__(self, message: str, *, folder: str, missing: list[str]) -> None:
        super().__init__(message)
        self.folder = folder
        self.missing = missing


class UnsupportedModel(ModelError):
    code = "unsupported_model"


class Int8QualityError(ModelError):
    """An int8 build measured below the quality gate (``--int8-min-cosine``): never served."""

    code = "int8_quality_gate"


class InputError(QembedError, ValueError):
    """The caller asked for something that cannot be done; the message says what to change."""

    code = "invalid_input"


class InputTooLong(InputError):
    code = "context_length_exceeded"


class ModelOutputError(QembedError):
    """The model produced non-finite values: a server-side fault, never a silent NaN vector."""

    code = "non_finite_output"
