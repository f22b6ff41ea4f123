"""Sequence ops: a sequence is held as its length and its elements' shape (``Value.seq``); where
the elements differ the shape is the per-dim largest and the output is marked a bound.
They move data and compute nothing (``FREE_OPS``)."""

from __future__ import annotations

import math

import numpy as np

from archcalc.dtypes import onnx_dtype
from archcalc.ops.registry import Node, Out, rule

SEQUENCE_OPS = frozenset({"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceAt", "SequenceErase",
                          "SequenceLength", "SplitToSequence", "ConcatFromSequence"})


def _union(n: Node, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], bool]:
    """The element shape that holds both, and whether they differ."""
    if len(a) != len(b):
        raise n.error(f"puts tensors of ranks {len(a)} and {len(b)} in one sequence, whose element shape "
                      "archcalc cannot then give")
    shape = tuple(max(x, y) for x, y in zip(a, b))
    return shape, shape != a or shape != b


def _sequence(element: tuple[int, ...], length: int, dtype: str, bound: bool = False) -> Out:
    return Out([element], dtypes=[dtype], seqs={0: length}, bound=bound)


@rule("SequenceEmpty")
def sequence_empty(n: Node) -> Out:
    """An empty sequence of the ``dtype`` attribute's type (the spec's text: float by default; its
    schema states no default)."""
    dtype = n.attr("dtype", None)
    return _sequence((), 0, onnx_dtype(1 if dtype is None else int(dtype)))


@rule("SequenceConstruct")
def sequence_construct(n: Node) -> Out:
    """A sequence of its inputs."""
    shape, differ = n.shape(0), False
    for i in range(1, n.n_inputs):
        shape, d = _union(n, shape, n.shape(i))
        differ |= d
    return _sequence(shape, n.n_inputs, n.dtype(0), differ)


@rule("SequenceInsert")
def sequence_insert(n: Node) -> Out:
    """One element longer; the first element sets the shape."""
    length = n.seq(0) or 0
    if length == 0:
        return _sequence(n.shape(1), 1, n.dtype(1))
    shape, differ = _union(n, n.shape(0), n.shape(1))
    return _sequence(shape, length + 1, n.dtype(0), differ)


@rule("SequenceErase")
def sequence_erase(n: Node) -> Out:
    """One element shorter."""
    return _sequence(n.shape(0), max((n.seq(0) or 0) - 1, 0), n.dtype(0))


@rule("SequenceAt")
def sequence_at(n: Node) -> Out:
    """The element: the sequence's element shape (a bound where the elements differ)."""
    return Out([n.shape(0)], dtypes=[n.dtype(0)])


@rule("SequenceLength")
def sequence_length(n: Node) -> Out:
    """A scalar int64: the length, known before running."""
    return Out([()], dtypes=["int64"], values=[np.array(n.seq(0) or 0, dtype=np.int64)])


@rule("SplitToSequence")
def split_to_sequence(n: Node) -> Out:
    """Pieces along ``axis``: of 1 (squeezed unless ``keepdims``) with no split, of a scalar split's
    size (the last smaller), or of each listed size."""
    x = n.shape(0)
    a = n.axis(n.attr("axis", 0), len(x))
    if not n.has(1):
        element = x[:a] + x[a + 1:] if not n.attr("keepdims", 1) else (*x[:a], 1, *x[a + 1:])
        return _sequence(element, x[a], n.dtype(0))
    given = np.asarray(n.required_value(1, "split"))
    split = given.reshape(-1)
    if given.ndim == 0:
        size = int(split[0])
        if size <= 0:
            raise n.error(f"splits into pieces of {size}: a split is a positive size")
        count = math.ceil(x[a] / size) if x[a] else 0
        return _sequence((*x[:a], min(size, x[a]), *x[a + 1:]), count, n.dtype(0), x[a] % size != 0)
    sizes = [int(s) for s in split]
    if sum(sizes) != x[a] or min(sizes, default=0) < 0:
        raise n.error(f"split {sizes} does not add up to the axis' {x[a]}")
    largest = max(sizes, default=0)
    return _sequence((*x[:a], largest, *x[a + 1:]), len(sizes), n.dtype(0), len(set(sizes)) > 1)


@rule("ConcatFromSequence")
def concat_from_sequence(n: Node) -> Out:
    """The elements joined along ``axis`` (or stacked on a new one)."""
    element, length = n.shape(0), n.seq(0) or 0
    if n.attr("new_axis", 0):
        a = n.axis(n.required_attr("axis"), len(element) + 1)
        return Out([(*element[:a], length, *element[a:])])
    a = n.axis(n.required_attr("axis"), len(element))
    return Out([(*element[:a], element[a] * length, *element[a + 1:])])
