"""Corpus jobs: a whole corpus (JSONL or Parquet) into a resumable Parquet dataset of vectors.

``qembed embed-corpus INPUT --out OUTPUT`` runs ``job.run_local`` on one machine, or
``ray_job.run_ray`` on a Ray cluster (``--ray ADDRESS``): the same input reading, identity
check and part-file commits, so a run started one way resumes the other way. See
``records`` (input), ``output`` (part files, identity, resume) and ``job`` (the loop).
"""

from qembed.corpus.job import CorpusOptions, CorpusReport, run_local
from qembed.corpus.output import CorpusIdentity, CorpusOutput, read_output
from qembed.corpus.records import CorpusInput, Fields

__all__ = [
    "CorpusIdentity",
    "CorpusInput",
    "CorpusOptions",
    "CorpusOutput",
    "CorpusReport",
    "Fields",
    "read_output",
    "run_local",
]
