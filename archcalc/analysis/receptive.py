"""Receptive field and effective stride of every tensor, along the first spatial axis.

Through a window of size k (dilated: (k - 1) * d + 1) and stride s, a field r with jump j becomes
r + (k_eff - 1) * j with jump j * s. Element-wise layers keep both; a global pool, or a flatten that
feeds a fully connected layer, sees its whole input. Where branches join, the largest field and
jump over the paths are kept. The CS231n notes: three stacked 3x3 convs see 7x7.
"""

from __future__ import annotations

from archcalc.analysis.walk.infer import LayerResult
from archcalc.ir import Shaped
from archcalc.ops.window import effective_window

WINDOWED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
GLOBAL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Gemm", "MatMul", "ReduceMean"}


def _window(graph: Shaped, res: LayerResult) -> tuple[int, int]:
    """(effective window, stride) along the first spatial axis."""
    layer = res.layer
    kernel = layer.attrs.get("kernel_shape") or graph.tensors[layer.inputs[1]].shape[2:]
    dil = (layer.attrs.get("dilations") or [1])[0]
    stride = (layer.attrs.get("strides") or [1])[0]
    return (effective_window(kernel[0], dil), stride) if kernel else (1, 1)


def receptive_fields(graph: Shaped, results: list[LayerResult]) -> dict[str, tuple[int, int]]:
    """Tensor name -> (receptive field, effective stride) in input pixels, for image-like graphs."""
    field = {name: (1, 1) for name in graph.inputs}
    for res in results:
        if res.folded or res.status == "unknown":  # nothing known of an unknown layer's window
            continue
        seen = [field[n] for n in res.layer.inputs if n in field]
        if not seen:
            continue
        r, j = max(f for f, _ in seen), max(s for _, s in seen)
        op = res.layer.op_type
        if op in WINDOWED:
            k, s = _window(graph, res)
            r, j = r + (k - 1) * j, j * s
        elif op in GLOBAL:
            src = graph.tensors[res.layer.inputs[0]].shape
            extent = src[2] if src is not None and len(src) > 2 else 1
            r = r + (extent - 1) * j
        for name in res.layer.outputs:
            if name:
                field[name] = (r, j)
    return field
