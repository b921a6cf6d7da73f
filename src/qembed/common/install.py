"""How to install qembed's extras: the one place that names the distribution.

The import package and the console script are ``qembed``; the distribution is ``qembed-server``
because the PyPI name ``qembed`` belongs to an unrelated project (QEmbed, quantum annealing).
``pip install 'qembed-server[EXTRA]'`` works wherever qembed is installed (pip takes the installed
distribution and adds the extra's requirements) and, from a clone, ``pip install '.[EXTRA]'``.
"""

from __future__ import annotations

DISTRIBUTION = "qembed-server"


def pip_install(extra: str) -> str:
    """The command that adds an optional extra (``pip install 'qembed-server[onnx]'``)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
