"""Reductions along axes: one flop per input element read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from archcalc.ops.registry import Node, Out, rule

_NUMPY: dict[str, Callable[..., Any]] = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max,
                                          "ReduceMin": np.min, "ReduceProd": np.prod}
# The opset from which each reduction takes its axes as an input rather than an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13}


@rule("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
def reduce(n: Node) -> Out:
    """Out: the reduced axes dropped or kept as 1 (axes from the attribute or, from opset 13/18, the input);
    1 flop per input element; folded when the input is known."""
    x = n.shape(0)
    op = n.layer.op_type
    axes = n.ints(1, "axes", "axes", _AXES_INPUT_FROM.get(op, 18))
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return Out([x], values=[n.value(0)] if n.value(0) is not None else None, alias=True)
        axes = list(range(len(x)))
    axes = sorted({n.axis(a, len(x)) for a in axes})
    keep = bool(n.attr("keepdims", 1))
    out = tuple(1 if i in axes else d for i, d in enumerate(x)) if keep else \
        tuple(d for i, d in enumerate(x) if i not in axes)
    fn = _NUMPY.get(op)
    values = n.fold(out, None if fn is None else (lambda v, *_: fn(v, axis=tuple(axes), keepdims=keep)))
    return Out([out], flops=n.numel(0), values=values)


@rule("ArgMax", "ArgMin")
def arg_reduce(n: Node) -> Out:
    """Out: the axis dropped or kept as 1, int64; 1 flop per input element."""
    x = n.shape(0)
    axis = n.axis(n.attr("axis", 0), len(x))
    keep = bool(n.attr("keepdims", 1))
    out = tuple(1 if i == axis else d for i, d in enumerate(x)) if keep else x[:axis] + x[axis + 1:]
    return Out([out], dtypes=["int64"], flops=n.numel(0))


@rule("TopK")
def top_k(n: Node) -> Out:
    """Out: the axis cut to k (values and int64 indices); 1 flop per input element."""
    x = n.shape(0)
    axis = n.axis(n.attr("axis", -1), len(x))
    if n.opset >= 10 and n.has(1) and n.value(1) is None:  # k computed from data: at most the axis
        return Out([x, x], dtypes=[n.dtype(0), "int64"], flops=n.numel(0), bound=True)
    given = np.asarray(n.required_attr("k") if n.opset < 10 else n.required_value(1, "k")).reshape(-1)
    if given.size != 1 or int(given[0]) < 0 or int(given[0]) > x[axis]:
        raise n.error(f"k {given.tolist()} is not one count from 0 to the axis' {x[axis]}")
    k = int(given[0])
    out = tuple(k if i == axis else d for i, d in enumerate(x))
    return Out([out, out], dtypes=[n.dtype(0), "int64"], flops=n.numel(0))
