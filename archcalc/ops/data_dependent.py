"""Ops whose output size depends on the data: how many elements are nonzero, which boxes survive
suppression, how many values are distinct.

None is guessed. When the deciding input is known before running (a folded constant) the op is
evaluated and exact; otherwise the output takes the largest size the graph allows -- NonZero at most
every element, NonMaxSuppression at most ``max_output_boxes_per_class`` boxes of every class of every
batch -- and is marked ``bound``: it and everything computed from it are upper bounds, and the
totals say so (see ``archcalc.analysis.walk.infer``).
"""

from __future__ import annotations

import math

import numpy as np

from archcalc.ops.registry import Node, Out, rule


@rule("NonZero")
def non_zero(n: Node) -> Out:
    """Out int64 [rank, count]: count <= the input's elements; exact when the input is known."""
    x = n.shape(0)
    known = n.value(0)
    if known is not None:
        found = np.array(np.nonzero(np.asarray(known).reshape(x)), dtype=np.int64).reshape(len(x), -1)
        return Out([found.shape], dtypes=["int64"], values=[found])
    return Out([(len(x), math.prod(x))], dtypes=["int64"], bound=True)


@rule("NonMaxSuppression")
def non_max_suppression(n: Node) -> Out:
    """Out int64 [selected, 3] (batch, class, box): selected <= batches x classes x
    min(boxes, max_output_boxes_per_class), the limit where the graph gives it as a constant (none
    given: 0, as the spec says); one flop per score read (thresholding and ordering; the IoU tests
    depend on how many boxes survive)."""
    boxes, scores = n.rank(0, 3), n.rank(1, 3)
    batches, classes, count = scores
    if boxes[:2] != (batches, count) or boxes[2] != 4:
        raise n.error(f"boxes {list(boxes)} and scores {list(scores)} do not agree: boxes are "
                      "[batch, boxes, 4] and scores [batch, classes, boxes]")
    limit = n.value(2) if n.has(2) else np.array(0)
    per_class = count if limit is None else min(count, max(int(np.asarray(limit).reshape(-1)[0]), 0))
    return Out([(batches * classes * per_class, 3)], dtypes=["int64"], flops=math.prod(scores), bound=True)


@rule("Unique")
def unique(n: Node) -> Out:
    """Out: the distinct values (<= the input's elements, or the axis' slices), their first indices,
    the inverse indices (one per input element or slice: exact) and the counts; one flop per element
    (the sort that finds them)."""
    x = n.shape(0)
    axis = n.attr("axis", None)
    distinct: tuple[int, ...]
    if axis is None:
        distinct, rows = (math.prod(x),), math.prod(x)
    else:
        a = n.axis(axis, len(x))
        distinct, rows = tuple(x), x[a]
    shapes = [distinct, (rows,), (rows,), (rows,)][: n.n_outputs]
    dtypes = [n.dtype(0), "int64", "int64", "int64"][: n.n_outputs]
    return Out(shapes, dtypes=dtypes, flops=math.prod(x), bound=True)


@rule("Compress")
def compress(n: Node) -> Out:
    """Out: the slices where the condition holds, along ``axis`` (flattened without one): exact when
    the condition is known, else at most the condition's length (and the axis' size)."""
    x = n.shape(0)
    cond = n.rank(1, 1)[0]
    axis = n.attr("axis", None)
    a = None if axis is None else n.axis(axis, len(x))
    room = math.prod(x) if a is None else x[a]
    known = n.value(1)
    kept = min(int(np.count_nonzero(known)), room) if known is not None else min(cond, room)
    out = (kept,) if a is None else tuple(kept if i == a else d for i, d in enumerate(x))
    return Out([out], bound=known is None)
