"""int8 MatMuls with per-token-group activation scales: ONNX Runtime's ``MatMulNBits``.

Per-token scales (``onnx_per_token``) still give a token ONE scale across its hidden size,
so the few massive channels of a real LLM (Sun et al. 2024) set it and the thousands of
small channels next to them keep only a few levels each. ``MatMulNBits`` with 8-bit
weights and ``accuracy_level=4`` quantizes each row of the activations in blocks of
``BLOCK`` along the reduction axis (one scale per token per block, symmetric int8) and the
weights in the same blocks, then multiplies in int8 (ONNX Runtime's MLAS kernels, VNNI on
x86). An outlier channel then coarsens only its own block.

Measured on the full-shape outlier fixture (Qwen3-0.6B shape, 28 layers, SmoothQuant 0.5,
``layers.0.`` in float; 133 gate texts; torch emulation of the same arithmetic): worst
cosine to float32 0.9906 with per-token scales, 0.9952 with blocks of 128, 0.9947 with
blocks of 32 (docs/PERFORMANCE.md). Blocks of 128 are also the faster kernel. The weights
are quantized by ONNX Runtime's own ``MatMulNBitsQuantizer`` (round to nearest, symmetric);
MatMuls whose node name contains one of ``exclude`` (module-path substrings) stay float32.
The 8-bit x86 kernel is in ONNX Runtime since 1.22. int8 activations are still lossy on
massive-activation models (onnxruntime issue 29849: argmax flips at near-tie logits on
Qwen3-0.6B with ``accuracy_level`` 4), which is why every build passes through the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

BLOCK = 128
# MatMulNBits' accuracy_level 4: activations quantized to int8 per block, int8 x int8 products.
ACCURACY_LEVEL_INT8 = 4


def quantize_blockwise(src: Path, out: Path, *, exclude: Sequence[str] = (), block: int = BLOCK) -> int:
    """Write ``out`` (+ external data) with every constant-weight MatMul of ``src`` as an
    8-bit ``MatMulNBits``; returns how many were rewritten."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(src))
    skipped = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and any(s in n.name for s in exclude)
    ]
    config = DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=True, accuracy_level=ACCURACY_LEVEL_INT8, bits=8
    )
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=skipped, algo_config=config)
    quantizer.process()
    quantized = quantizer.model.model
    rewritten = sum(1 for n in quantized.graph.node if n.op_type == "MatMulNBits")
    out = Path(out)
    onnx.save(
        quantized,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=out.name + ".data",
    )
    log.info("per-token-group int8 (blocks of %d): %d MatMuls rewritten in %s", block, rewritten, out)
    return rewritten
