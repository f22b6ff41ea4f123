"""Sliding-window arithmetic shared by convolutions and pools, for any number of spatial dims.

Along one axis the output is ``(W - F_eff + P_begin + P_end) / S + 1`` (the CS231n notes' formula,
with the effective window ``F_eff = (F - 1) * D + 1`` for dilation D), rounded down, or up in
``ceil_mode``; ``auto_pad`` SAME_* gives ``ceil(W / S)``.
"""

from __future__ import annotations

import math

from archcalc.ops.registry import Node


def window_attrs(n: Node, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Strides, dilations and explicit pads (begins then ends), with ONNX's defaults."""
    k = len(kernel)
    strides = list(n.attr("strides", None) or [1] * k)
    dilations = list(n.attr("dilations", None) or [1] * k)
    pads = list(n.attr("pads", None) or [0] * (2 * k))
    if len(strides) != k or len(dilations) != k or len(pads) != 2 * k:
        raise n.error(f"strides {strides}, dilations {dilations} or pads {pads} do not match "
                      f"the {k}-d kernel {kernel}")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0 or min(kernel) < 1:
        raise n.error(f"kernel {kernel}, strides {strides} and dilations {dilations} must be 1 or more, "
                      f"pads {pads} 0 or more")
    return strides, dilations, pads


def effective_window(f: int, d: int = 1) -> int:
    """A window of F taps dilated by D spans (F - 1) * D + 1 input elements."""
    return (f - 1) * d + 1


def slack(w: int, f: int, d: int, pad_begin: int, pad_end: int) -> int:
    """``W - F_eff + P_begin + P_end``: how far the window slides (negative: it does not fit)."""
    return w - effective_window(f, d) + pad_begin + pad_end


def positions(w: int, f: int, s: int, d: int, pad_begin: int, pad_end: int, ceil_mode: bool = False) -> int:
    """Window positions along one axis whose slack is not negative: ``slack / S + 1`` rounded down,
    or up in ``ceil_mode``, where the last window must still start inside the input or its left
    padding (ONNX, and PyTorch's ceil_mode)."""
    total = slack(w, f, d, pad_begin, pad_end)
    size = (-(-total // s) if ceil_mode else total // s) + 1
    if ceil_mode and (size - 1) * s >= w + pad_begin:
        size -= 1
    return size


def window_output(n: Node, spatial: tuple[int, ...], kernel: list[int], ceil_mode: bool = False) -> list[int]:
    """Output spatial size of a conv or pool over ``spatial`` with window ``kernel``."""
    if len(kernel) != len(spatial) or not kernel:
        raise n.error(f"the {len(kernel)}-d window {kernel} does not fit the input's {len(spatial)} spatial "
                      f"dims {list(spatial)}")
    strides, dilations, pads = window_attrs(n, kernel)
    auto_pad = n.attr("auto_pad", "NOTSET")  # the spec's default, on the hot path
    out = []
    for i, (w, f, s, d) in enumerate(zip(spatial, kernel, strides, dilations)):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(math.ceil(w / s))
            continue
        begin, end = (0, 0) if auto_pad == "VALID" else (pads[i], pads[i + len(kernel)])
        if slack(w, f, d, begin, end) < 0:
            raise n.error(f"window {f} (dilated {effective_window(f, d)}) is larger than the padded input {w} "
                          f"on spatial axis {i}")
        out.append(positions(w, f, s, d, begin, end, ceil_mode))
    return out
