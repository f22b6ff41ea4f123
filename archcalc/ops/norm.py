"""Normalizations. Scale (gamma) counts as weight, shift (beta) as bias, running statistics as buffers.

Cost per element, inference: BatchNorm is one multiply-add with folded scale and shift (2 flops);
the others compute mean and variance on the fly (about 5 flops: subtract, square, accumulate,
scale, shift), following the per-element counts fvcore and ptflops use.
"""

from __future__ import annotations

import math

from archcalc.ops.registry import Node, Out, rule


@rule("BatchNormalization")
def batch_norm(n: Node) -> Out:
    """Out = input's shape; scale and shift are weight and bias, running mean and variance buffers; 2 flops
    per element; saves its input and 2 floats per channel; not in place."""
    x = n.shape(0)
    channels = x[1] if len(x) > 1 else 1
    for i in range(1, min(n.n_inputs, 5)):
        if n.has(i) and n.shape(i) != (channels,):
            raise n.error(f"input {i} '{n.layer.inputs[i]}' has shape {list(n.shape(i))}, "
                          f"expected [{channels}] for input {list(x)}")
    # Training-mode exports carry running_mean / running_var as extra outputs.
    shapes = [x] + [(channels,)] * (n.n_outputs - 1)
    # Not in place: onnxruntime's BatchNormalization kernel writes a buffer of its own (measured on
    # ResNet-18 and GoogLeNet exports), and PyTorch's too. Training keeps the input and the batch
    # mean and inverse std per channel.
    return Out(shapes, flops=2 * math.prod(x), params={1: "weight", 2: "bias", 3: "buffer", 4: "buffer"},
               saves_inputs=(0,), saves_extra_bytes=2 * 4 * channels)


@rule("InstanceNormalization")
def instance_norm(n: Node) -> Out:
    """Out = input's shape; scale and shift per channel; 5 flops per element; saves its input and 2 floats
    per (N, C)."""
    x = n.shape(0)
    return Out([x], flops=5 * n.numel(0), params={1: "weight", 2: "bias"}, saves_inputs=(0,),
               saves_extra_bytes=2 * 4 * math.prod(x[:2]))


@rule("LayerNormalization", "GroupNormalization", "RMSNormalization")
def layer_norm(n: Node) -> Out:
    """Out = input's shape (+ Mean and InvStdDev over the normalized axes); scale and bias; 5 flops per
    element; saves its input and 2 floats per normalized row."""
    x = n.shape(0)
    axis = n.axis(n.attr("axis", -1), len(x)) if n.layer.op_type != "GroupNormalization" else 1
    stat = (*x[:axis], *[1] * (len(x) - axis))
    shapes = [x] + [stat] * (n.n_outputs - 1)  # optional Mean and InvStdDev outputs
    dtypes = [n.dtype(0)] + ["float32"] * (n.n_outputs - 1)
    # Training keeps the input and a mean and inverse std per normalized row (fp32).
    return Out(shapes, dtypes=dtypes, flops=5 * math.prod(x), params={1: "weight", 2: "bias"},
               saves_inputs=(0,), saves_extra_bytes=2 * 4 * math.prod(stat))


@rule("LpNormalization", "MeanVarianceNormalization")
def lp_norm(n: Node) -> Out:
    """Out = input's shape; 3 flops per element (LpNormalization: the power, the sum, the divide) or 5
    (MeanVarianceNormalization, as the other norms); saves its input."""
    flops = 3 if n.layer.op_type == "LpNormalization" else 5
    return Out([n.shape(0)], flops=flops * n.numel(0), saves_inputs=(0,))


@rule("LRN")
def lrn(n: Node) -> Out:
    """Out = input's shape; (size + 3) flops per element; saves its input and output."""
    # Each output squares and sums `size` neighbours across channels, then scales: size + 3.
    return Out([n.shape(0)], flops=(n.attr("size", None) + 3) * n.numel(0), saves_inputs=(0,), saves_outputs=(0,))
