"""int8 MatMuls with per-token activation scales, written into an ONNX graph.

ONNX Runtime's dynamic quantization (``quantize_dynamic``) gives a whole batch ONE
activation scale (``DynamicQuantizeLinear``): a single token with a massive activation
(real LLM checkpoints have them on delimiter tokens, Sun et al. 2024) coarsens every other
token in the batch, and no smoothing of channels can fix a token-wise outlier. This pass
rewrites each constant-weight ``MatMul`` itself:

    s   = max(|x|, axis=-1) / 127                    one scale per token (row)
    xu8 = QuantizeLinear(x, s, zero point 128)       symmetric values, stored as uint8
    y   = MatMulIntegerToFloat(xu8, W8, 128, w_scale) * s

with ``W8`` int8 per output column (symmetric) and ``w_scale`` its scales. A token's vector
then never depends on its batch-mates, as in the torch (``torch_w8a8``) and OpenVINO
recipes. The activations are stored as uint8 with the constant zero point 128 (a scalar
zero point is what MatMulInteger allows) because uint8 x int8 is the product ONNX Runtime
runs on VNNI; int8 x int8 falls back to a reference kernel tens of times slower. Fused
operators (QuantizeLinear per axis, MatMulIntegerToFloat with the column scales) keep the
extra passes over the activations to about four per MatMul. MatMuls
named in ``exclude`` (module-path substrings) stay float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
EPS = 1e-12


def quantize_per_token(src: Path, out: Path, *, exclude: Sequence[str] = ()) -> int:
    """Write ``out`` (+ external data) with every constant-B MatMul of ``src`` in int8;
    returns how many were rewritten."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        consts.append(numpy_helper.from_array(value, name))
        return name

    axes = const("q8/axes_last", np.array([-1], dtype=np.int64))
    eps = const("q8/eps", np.array(EPS, dtype=np.float32))
    inv127 = const("q8/inv127", np.array(1.0 / 127.0, dtype=np.float32))
    one = const("q8/one", np.array(1.0, dtype=np.float32))
    zero_point = const("q8/zero_point", np.array(128, dtype=np.uint8))
    zero_point_fill = helper.make_tensor("q8/zp_fill", TensorProto.UINT8, [1], [128])
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    dead: set[str] = set()
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or len(weight.dims) != 2 or any(s in node.name for s in exclude):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)  # [K, N]
        k, n = w.shape
        w_scale = np.maximum(np.abs(w).max(0), EPS) / 127.0
        w8 = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        p = (node.name or node.output[0]) + "/q8"
        wq = const(f"{p}/W", w8)
        ws = const(f"{p}/w_scale", w_scale.astype(np.float32))
        rows_shape = const(f"{p}/rows_shape", np.array([-1, k], dtype=np.int64))
        tail = const(f"{p}/tail", np.array([n], dtype=np.int64))
        x, y = node.input[0], node.output[0]
        nodes += [
            # [..., K] -> [M, K]: per-axis quantization wants one scale per row of a 2-D input
            helper.make_node("Reshape", [x, rows_shape], [f"{p}/x2"], name=f"{p}/Rows"),
            helper.make_node("Abs", [f"{p}/x2"], [f"{p}/abs"], name=f"{p}/Abs"),
            helper.make_node(
                "ReduceMax", [f"{p}/abs", axes], [f"{p}/amax"], name=f"{p}/ReduceMax", keepdims=0
            ),
            helper.make_node("Max", [f"{p}/amax", eps], [f"{p}/amax_eps"], name=f"{p}/Max"),
            helper.make_node("Mul", [f"{p}/amax_eps", inv127], [f"{p}/scale"], name=f"{p}/Scale"),  # [M]
            helper.make_node("Shape", [f"{p}/scale"], [f"{p}/m"], name=f"{p}/M"),
            helper.make_node(
                "ConstantOfShape", [f"{p}/m"], [f"{p}/zp"], name=f"{p}/ZeroPoints", value=zero_point_fill
            ),
            # one fused pass: x / s, round, + 128, saturate to uint8
            helper.make_node(
                "QuantizeLinear",
                [f"{p}/x2", f"{p}/scale", f"{p}/zp"],
                [f"{p}/xu8"],
                name=f"{p}/Quantize",
                axis=0,
            ),
            # (x8 - 128) @ W8 * w_scale in one kernel (a_scale 1: the row scale follows)
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}/xu8", wq, one, ws, zero_point],
                [f"{p}/y_col"],
                name=f"{p}/MatMulIntegerToFloat",
                domain="com.microsoft",
            ),
            helper.make_node("Unsqueeze", [f"{p}/scale", axes], [f"{p}/scale_col"], name=f"{p}/ScaleCol"),
            helper.make_node("Mul", [f"{p}/y_col", f"{p}/scale_col"], [f"{p}/y2"], name=f"{p}/MulRow"),
            helper.make_node("Shape", [x], [f"{p}/x_shape"], name=f"{p}/XShape", end=-1),
            helper.make_node("Concat", [f"{p}/x_shape", tail], [f"{p}/y_shape"], name=f"{p}/YShape", axis=0),
            helper.make_node("Reshape", [f"{p}/y2", f"{p}/y_shape"], [y], name=f"{p}/Unrows"),
        ]
        dead.add(weight.name)
        rewritten += 1
    still_used = {i for n in nodes for i in n.input}
    keep = [t for t in graph.initializer if t.name not in dead or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep + consts)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    out = Path(out)
    onnx.save(
        model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=out.name + ".data"
    )
    log.info("per-token int8: %d MatMuls rewritten in %s", rewritten, out)
    return rewritten
