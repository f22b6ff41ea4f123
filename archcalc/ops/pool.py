"""Pools: windowed (MaxPool, AveragePool, LpPool) and global. No parameters.

Cost: each output reads its whole window, one comparison or addition per element read.
"""

from __future__ import annotations

import math

from archcalc.ops.registry import Node, Out, rule
from archcalc.ops.window import window_output


@rule("MaxPool", "AveragePool", "LpPool")
def pool(n: Node) -> Out:
    """Out (N, C, *windows) by the window arithmetic (ceil_mode too); flops = output elements x
    prod(kernel); saves its input (MaxPool also int64 indices)."""
    x = n.rank(0, at_least=3)
    kernel = list(n.required_attr("kernel_shape"))
    spatial = window_output(n, x[2:], kernel, ceil_mode=bool(n.attr("ceil_mode", 0)))
    out = (*x[:2], *spatial)
    shapes = [out] * n.n_outputs  # MaxPool's optional second output: int64 indices
    dtypes = [n.dtype(0), "int64"][: n.n_outputs]
    # Backward of a max pool needs its input and the argmax of each window (int64 indices). An
    # average pool keeps its input too: PyTorch's avg_pool2d_backward and _adaptive_avg_pool2d_backward
    # take `self` (derivatives.yaml; AdaptiveAvgPool2d to a size other than 1x1 exports as AveragePool).
    # The global pools below are PyTorch's mean, whose backward keeps only the shape.
    is_max = n.layer.op_type == "MaxPool"
    return Out(shapes, dtypes=dtypes, flops=math.prod(out) * math.prod(kernel), saves_inputs=(0,),
               saves_extra_bytes=8 * math.prod(out) if is_max else 0)


@rule("RoiAlign")
def roi_align(n: Node) -> Out:
    """Out (rois, C, output_height, output_width); each output pools sampling_ratio^2 bilinear samples
    of 4 reads, 4 flops each. With sampling_ratio 0 the samples per axis are ceil(roi / output), a
    size read from the boxes: costed at its bound, a roi the whole feature map (and marked bound)."""
    x, rois = n.rank(0, 4), n.rank(1, 2)
    h, w = int(n.attr("output_height", 1)), int(n.attr("output_width", 1))
    ratio = int(n.attr("sampling_ratio", 0))
    samples = ratio * ratio if ratio else math.ceil(x[2] / h) * math.ceil(x[3] / w)
    out = (rois[0], x[1], h, w)
    return Out([out], flops=math.prod(out) * samples * 4 * 4, saves_inputs=(0,), bound=not ratio)


@rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def global_pool(n: Node) -> Out:
    """Out (N, C, 1, ...); 1 flop per input element; saves nothing (a mean's backward needs only the shape)."""
    x = n.rank(0, at_least=2)
    return Out([(*x[:2], *[1] * (len(x) - 2))], flops=math.prod(x))
