"""Convolutions: Conv and ConvTranspose, any number of spatial dims, groups and dilation."""

from __future__ import annotations

import math

from archcalc.ops.registry import Node, Out, rule
from archcalc.ops.window import window_attrs, window_output


def _kernel(n: Node) -> list[int]:
    return list(n.attr("kernel_shape", None) or n.shape(1)[2:])


@rule("Conv")
def conv(n: Node) -> Out:
    """Out (N, K, *windows) by the window arithmetic; weight K x C/g x kernel (+ bias K); MACs = out
    elements x C/g x prod(kernel), + 1 flop per output for the bias; saves its input; workspace: the im2col
    matrix."""
    x, w = n.rank(0, at_least=3), n.rank(1, at_least=3)
    group = n.attr("group", 1)
    if group < 1 or w[0] % group:
        raise n.error(f"group {group} does not divide the {w[0]} filters of weight {list(w)}")
    if len(x) != len(w) or x[1] != w[1] * group:
        raise n.error(f"input {list(x)} has {x[1]} channels but weight {list(w)} with group {group} "
                      f"expects {w[1] * group}")
    spatial = window_output(n, x[2:], _kernel(n))
    out = (x[0], w[0], *spatial)
    # Each output element is a dot product over (C_in / group) * prod(kernel) inputs.
    macs = math.prod(out) * w[1] * math.prod(w[2:])
    return Out([out], macs=macs, flops=math.prod(out) if n.has(2) else 0,
               params={1: "weight", 2: "bias"}, workspace=_im2col(n, w, spatial), saves_inputs=(0,))


def _im2col(n: Node, w: tuple[int, ...], spatial: list[int]) -> int:
    """Elements of one image's, one group's im2col matrix: (C_in/group * prod(kernel)) x prod(out).

    The CS231n notes' AlexNet conv1: 363 x 3,025. A 1x1, stride-1, unpadded conv needs none.
    """
    strides, _, pads = window_attrs(n, list(w[2:]))
    if math.prod(w[2:]) == 1 and set(strides) == {1} and not any(pads):
        return 0
    return w[1] * math.prod(w[2:]) * math.prod(spatial)


@rule("ConvTranspose")
def conv_transpose(n: Node) -> Out:
    """Out (N, C_out, s(x - 1) + output_padding + F_eff - pads); MACs = input elements x C_out/g x
    prod(kernel); saves its input."""
    n.rank(0, at_least=3), n.rank(1, at_least=3)
    x, w = n.shape(0), n.shape(1)
    group = n.attr("group", 1)
    if len(x) != len(w) or x[1] != w[0]:
        raise n.error(f"input {list(x)} has {x[1]} channels but weight {list(w)} expects {w[0]}")
    kernel = _kernel(n)
    strides, dilations, pads = window_attrs(n, kernel)
    k = len(kernel)
    out_pad = list(n.attr("output_padding", None) or [0] * k)
    given = n.attr("output_shape", None)
    if given:
        spatial = list(given)[-k:]
    elif n.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        spatial = [xi * s for xi, s in zip(x[2:], strides)]
    else:
        spatial = [s * (xi - 1) + op + (f - 1) * d + 1 - pads[i] - pads[i + k]
                   for i, (xi, s, op, f, d) in enumerate(zip(x[2:], strides, out_pad, kernel, dilations))]
    out = (x[0], w[1] * group, *spatial)
    # Each input element is scattered into (C_out / group) * prod(kernel) outputs.
    macs = math.prod(x) * w[1] * math.prod(w[2:])
    return Out([out], macs=macs, flops=math.prod(out) if n.has(2) else 0,
               params={1: "weight", 2: "bias"}, saves_inputs=(0,))
