"""Data movement and shape arithmetic: no flops, and values folded when inputs are known.

Exporters compute Reshape targets and masks with chains of Shape -> Gather -> Unsqueeze -> Concat;
folding those values here is what gives every tensor of an exported transformer a concrete shape.
Ops marked ``alias`` are views: their output shares the input's storage.
"""

from __future__ import annotations

import math

import numpy as np

from archcalc.dtypes import DTYPE_BYTES, onnx_dtype
from archcalc.ops.registry import Node, Out, rule


def _shaped(n: Node, shape: tuple[int, ...], fn=None, alias: bool = False, dtype: str | None = None) -> Out:
    """An output of ``shape`` whose value, when every input is known, is ``fn(*values)``."""
    shape = tuple(int(d) for d in shape)
    return Out([shape], dtypes=[dtype or n.dtype(0)], values=n.fold(shape, fn), alias=alias)


@rule("Identity")
def identity(n: Node) -> Out:
    """A view of its input (a sequence stays one)."""
    out = _shaped(n, n.shape(0), lambda x, *_: x, alias=True)
    if n.seq(0) is not None:
        out.seqs = {0: n.seq(0)}  # type: ignore[dict-item]
    return out


@rule("Dropout")
def dropout(n: Node) -> Out:
    """Out = input's shape, a buffer of its own (+ the bool mask); free at inference; training keeps a
    keep-mask (bool on CUDA, the input's dtype on the CPU)."""
    # A buffer of its own, not a view: training multiplies by the mask, and onnxruntime 1.31 copies
    # even at inference (measured: a dying input is neither shared nor overwritten).
    out = _shaped(n, n.shape(0), lambda x, *_: x)
    out.saves_mask = True  # training keeps a keep-mask per element: bool on CUDA, the input's dtype on CPU
    if n.n_outputs > 1:  # the mask output
        out.shapes.append(n.shape(0))
        # Opset 10 made the mask bool (T1); before, it had the input's type.
        out.dtypes.append("bool" if n.opset >= 10 else n.dtype(0))  # type: ignore[union-attr]
    return out


@rule("Shape")
def shape(n: Node) -> Out:
    """The input's dims (start..end) as int64; folded."""
    dims = np.array(n.shape(0), dtype=np.int64)
    start, end = n.attr("start", 0), n.attr("end", None)
    dims = dims[start:end]
    return Out([dims.shape], dtypes=["int64"], values=[dims])


@rule("Size")
def size(n: Node) -> Out:
    """The input's element count as an int64 scalar; folded."""
    return Out([()], dtypes=["int64"], values=[np.array(n.numel(0), dtype=np.int64)])


@rule("Cast", "CastLike")
def cast(n: Node) -> Out:
    """Out = input's shape in the target dtype; written over a dying input of the same element size."""
    dtype = n.dtype(1) if n.layer.op_type == "CastLike" else onnx_dtype(n.attr("to", None))
    np_type = None if dtype in ("bfloat16", "string") or dtype.startswith("float8") else dtype
    out = _shaped(n, n.shape(0), (lambda x, *_: x.astype(np_type)) if np_type else None, dtype=dtype)
    # onnxruntime writes a cast over its dying input when the element size stays (measured).
    out.inplace = DTYPE_BYTES[n.dtype(0)] == DTYPE_BYTES[dtype] and "string" not in (n.dtype(0), dtype)
    return out


@rule("Reshape")
def reshape(n: Node) -> Out:
    """A view with the target shape (0 copies a dim unless allowzero, -1 is inferred)."""
    x = n.shape(0)
    target = [int(d) for d in (n.attr("shape", None) if n.opset < 5 else n.required_value(1, "target shape"))]
    if not n.attr("allowzero", 0):
        if any(d == 0 and i >= len(x) for i, d in enumerate(target)):
            raise n.error(f"target shape {target} copies a dim (0) the input {list(x)} does not have")
        target = [x[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise n.error(f"target shape {target} has more than one -1")
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or math.prod(x) % known:
            raise n.error(f"cannot reshape {list(x)} into {target}")
        target[target.index(-1)] = math.prod(x) // known
    if math.prod(target) != math.prod(x):
        raise n.error(f"cannot reshape {list(x)} ({math.prod(x)} elements) into {target}")
    return _shaped(n, tuple(target), lambda v, *_: v.reshape(target), alias=True)


@rule("Flatten")
def flatten(n: Node) -> Out:
    """A 2-D view: (prod(dims before axis), prod(dims from axis)); axis in [-r, r]."""
    x = n.shape(0)
    axis = n.attr("axis", 1)
    if not -len(x) <= axis <= len(x):
        raise n.error(f"axis {axis} is out of range for rank {len(x)} (Flatten takes -{len(x)}..{len(x)})")
    axis = axis + len(x) if axis < 0 else axis  # the spec's range is [-r, r]: -1 keeps the last dim apart
    out = (math.prod(x[:axis]), math.prod(x[axis:]))
    return _shaped(n, out, lambda v: v.reshape(out), alias=True)


@rule("Squeeze")
def squeeze(n: Node) -> Out:
    """A view without the given (or every) unit dims."""
    x = n.shape(0)
    axes = n.ints(1, "axes", "axes", 13)
    axes = [i for i, d in enumerate(x) if d == 1] if axes is None else [n.axis(a, len(x)) for a in axes]
    if any(x[a] != 1 for a in axes):
        raise n.error(f"cannot squeeze axes {axes} of {list(x)}: not all are 1")
    out = tuple(d for i, d in enumerate(x) if i not in axes)
    return _shaped(n, out, lambda v, *_: v.reshape(out), alias=True)


@rule("Unsqueeze")
def unsqueeze(n: Node) -> Out:
    """A view with unit dims inserted at the given axes."""
    x = n.shape(0)
    axes = n.ints(1, "axes", "axes", 13) or []
    rank = len(x) + len(axes)
    axes = sorted(n.axis(a, rank) for a in axes)
    out, rest = [], iter(x)
    for i in range(rank):
        out.append(1 if i in axes else next(rest))
    return _shaped(n, tuple(out), lambda v, *_: v.reshape(out), alias=True)


@rule("Transpose")
def transpose(n: Node) -> Out:
    """Out: the dims permuted (reversed by default)."""
    x = n.shape(0)
    perm = n.attr("perm", None) or list(reversed(range(len(x))))
    return _shaped(n, tuple(x[p] for p in perm), lambda v: np.transpose(v, perm))


@rule("Concat")
def concat(n: Node) -> Out:
    """Out: the inputs joined along the axis."""
    shapes = [n.shape(i) for i in range(n.n_inputs) if n.has(i)]
    axis = n.axis(n.attr("axis", None), len(shapes[0]))
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
            raise n.error(f"inputs {[list(s) for s in shapes]} differ outside axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return _shaped(n, tuple(out), lambda *v: np.concatenate([x for x in v if x is not None], axis))


@rule("Split")
def split(n: Node) -> Out:
    """Outputs: the axis cut into the given sizes, or equal parts."""
    x = n.shape(0)
    axis = n.axis(n.attr("axis", 0), len(x))
    parts = n.ints(1, "split", "split sizes", 13)
    if parts is None:
        count = n.attr("num_outputs", None) or n.n_outputs
        step = -(-x[axis] // count)  # ONNX: equal parts, the last one smaller if it must be
        parts = [min(step, x[axis] - i * step) for i in range(count)]
    if sum(parts) != x[axis]:
        raise n.error(f"split sizes {parts} do not add up to dim {axis} of {list(x)}")
    shapes = [tuple(p if i == axis else d for i, d in enumerate(x)) for p in parts]
    vals = n.values()
    values: list[np.ndarray | None] | None = list(np.split(vals[0], np.cumsum(parts)[:-1], axis)) \
        if vals and vals[0] is not None else None
    return Out(shapes, dtypes=[n.dtype(0)] * len(shapes), values=values)


@rule("Slice")
def slice_(n: Node) -> Out:
    """Out: each axis clamped and stepped as Python slices do."""
    x = n.shape(0)
    if n.opset >= 10 and any(n.has(i) and n.value(i) is None for i in (1, 2)):
        return _slice_bound(n, x)
    starts = n.ints(1, "starts", "starts", 10)
    ends = n.ints(2, "ends", "ends", 10)
    if starts is None or ends is None:
        raise n.error("has no starts or ends: Slice needs both")
    axes = n.ints(3, "axes", "axes", 10) or list(range(len(starts)))
    steps = n.ints(4, "steps", "steps", 10) or [1] * len(starts)
    if 0 in steps or not len(starts) == len(ends) == len(axes) == len(steps):
        raise n.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} should be as long as each "
                      "other, and no step 0")
    index: list[slice] = [slice(None)] * len(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[n.axis(a, len(x))] = slice(s, e, st)  # Python clamps exactly as ONNX specifies
    out = tuple(len(range(d)[sl]) for d, sl in zip(x, index))
    return _shaped(n, out, lambda v, *_: v[tuple(index)])


def _slice_bound(n: Node, x: tuple[int, ...]) -> Out:
    """Starts or ends computed from data: each sliced axis is at most its size over the step."""
    axes = [n.axis(int(a), len(x)) for a in n.ints(3, "axes", "axes", 10) or range(len(x))]
    steps = n.ints(4, "steps", "steps", 10) or [1] * len(axes)
    if 0 in steps or len(steps) != len(axes):
        raise n.error(f"axes {axes} and steps {steps} should be as long as each other, and no step 0")
    out = list(x)
    for a, st in zip(axes, steps):
        out[a] = -(-x[a] // abs(st))
    return Out([tuple(out)], bound=True)


@rule("Gather")
def gather(n: Node) -> Out:
    """Out: data's shape with the axis replaced by the indices' shape; a stored table is a weight (an
    embedding)."""
    data, idx = n.shape(0), n.shape(1)
    axis = n.axis(n.attr("axis", 0), len(data))
    out = (*data[:axis], *idx, *data[axis + 1:])
    _indices_inside(n, axis, data[axis])
    # Gather from a float table is an embedding lookup: the table is a parameter.
    res = _shaped(n, out, lambda d, i: np.take(d, i, axis=axis))
    res.params = {0: "weight"}
    return res


def _indices_inside(n: Node, axis: int, size: int) -> None:
    """Indices known before running (constants, or folded from the inputs' dims: the positions 0 ..
    sequence - 1 a learned position table is read at) must lie in [-size, size), as the spec and every
    runtime require; past the table is a model that cannot run, not one to price."""
    idx = n.checked_value(1)
    if idx is None or not idx.size:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < -size or hi >= size:
        raise n.error(f"reads index {hi if hi >= size else lo} of '{n.layer.inputs[0]}', whose axis {axis} has "
                      f"{size} entries (indices {lo}..{hi}): a table of positions shorter than the sequence? "
                      f"keep the indices inside it (--dim sequence=N or --context N, N at most {size})")


@rule("GatherElements")
def gather_elements(n: Node) -> Out:
    """Out: the indices' shape."""
    axis = n.axis(n.attr("axis", 0), len(n.shape(0)))
    return _shaped(n, n.shape(1), lambda d, i: np.take_along_axis(d, np.where(i < 0, i + d.shape[axis], i), axis))


@rule("GatherND")
def gather_nd(n: Node) -> Out:
    """Out: indices' shape without its last dim, then data's remaining dims."""
    data, idx, b = n.shape(0), n.shape(1), n.attr("batch_dims", 0)
    fold = (lambda d, i: d[tuple(np.moveaxis(i, -1, 0))]) if b == 0 else None
    return _shaped(n, (*idx[:-1], *data[b + idx[-1]:]), fold)


@rule("ScatterND", "ScatterElements", "Scatter")
def scatter(n: Node) -> Out:
    """Out = data's shape; with a reduction, 1 flop per update element."""
    out = _shaped(n, n.shape(0))
    # A reduction combines each update with the element it lands on: one op per update element.
    if n.attr("reduction", "none") != "none":
        out.flops = n.numel(2)
    return out


@rule("Expand")
def expand(n: Node) -> Out:
    """Out: the input broadcast to the target shape."""
    target = tuple(int(d) for d in n.required_value(1, "target shape"))
    out = n.broadcast(n.shape(0), target)
    return _shaped(n, out, lambda v, _: np.broadcast_to(v, out).copy())


@rule("Tile")
def tile(n: Node) -> Out:
    """Out: each dim times its repeat count."""
    reps = [int(r) for r in n.required_value(1, "repeats")]
    return _shaped(n, tuple(d * r for d, r in zip(n.shape(0), reps)), lambda v, r: np.tile(v, reps))


@rule("ConstantOfShape")
def constant_of_shape(n: Node) -> Out:
    """Out: the given shape, filled with the value's dtype."""
    out = tuple(int(d) for d in n.required_value(0, "shape"))
    fill = n.attr("value", None)
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill)
    values = n.fold(out, lambda _: np.full(out, fill.reshape(-1)[0], dtype=fill.dtype))
    return Out([out], dtypes=[str(fill.dtype)], values=values)


@rule("Range")
def range_(n: Node) -> Out:
    """Out: ceil((limit - start) / delta) elements (at least 0)."""
    start, limit, delta = (n.required_value(i, "bounds").reshape(()) for i in range(3))
    count = max(int(math.ceil((limit - start) / delta)), 0)
    return _shaped(n, (count,), lambda a, b, c: np.arange(a, b, c, dtype=np.asarray(a).dtype))


@rule("Pad")
def pad(n: Node) -> Out:
    """Out: each axis grown by its begin and end pads."""
    x = n.shape(0)
    pads = n.ints(1, "paddings" if n.opset < 2 else "pads", "pads", 11) or [0] * 2 * len(x)
    axes = n.ints(3, "axes", "axes", 18) if n.opset >= 18 else None
    axes = [n.axis(a, len(x)) for a in axes] if axes else list(range(len(x)))
    if len(pads) != 2 * len(axes):
        raise n.error(f"pads {pads} should hold a begin and an end for each of the {len(axes)} axes")
    out = list(x)
    for j, a in enumerate(axes):
        out[a] += pads[j] + pads[j + len(axes)]
    return _shaped(n, tuple(out))


@rule("Resize", "Upsample")
def resize(n: Node) -> Out:
    """Out: each axis set by sizes (keep_aspect_ratio_policy applied) or floor(dim x scale); linear and
    cubic modes 2 flops per output element per axis, nearest none."""
    x = n.shape(0)
    sizes_at, scales_at = (3, 2) if n.opset >= 11 and n.layer.op_type == "Resize" else (None, 1)
    axes = n.attr("axes", None) or list(range(len(x)))
    out = list(x)
    if sizes_at is not None and n.has(sizes_at) and n.numel(sizes_at) > 0:
        sizes = [int(s) for s in n.required_value(sizes_at, "sizes")]
        policy = n.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":  # one scale for every axis: the smallest (not_larger) or largest ratio
            pick = min if policy == "not_larger" else max
            scale = pick(s / x[a] for a, s in zip(axes, sizes))
            sizes = [int(math.floor(scale * x[a] + 0.5)) for a in axes]  # the spec rounds half up
        for a, s in zip(axes, sizes):
            out[a] = s
    elif n.opset < 9 and n.layer.op_type == "Upsample":
        for a, s in zip(axes, n.attr("scales", None)):
            out[a] = int(math.floor(x[a] * s))
    else:
        for a, s in zip(axes, n.required_value(scales_at, "scales")):
            out[a] = int(math.floor(x[a] * float(s)))
    # Interpolation: a few multiply-adds per output element (linear: 2 per axis), counted as flops.
    # roi, scales and sizes say where to sample: shape arithmetic, never weights, read or not.
    return Out([tuple(out)], flops=math.prod(out) * (2 * len(x) if n.attr("mode", "nearest") != "nearest" else 0),
               shape_inputs=frozenset(range(1, n.n_inputs)))


@rule("DepthToSpace", "SpaceToDepth")
def depth_space(n: Node) -> Out:
    """Out: channels traded for blocksize x blocksize spatial positions, or back."""
    b, c, h, w = n.shape(0)
    s = n.attr("blocksize", None)
    down = n.layer.op_type == "DepthToSpace"
    return _shaped(n, (b, c // (s * s), h * s, w * s) if down else (b, c * s * s, h // s, w // s))


@rule("Trilu")
def trilu(n: Node) -> Out:
    """Out = input's shape."""
    return _shaped(n, n.shape(0))


@rule("CumProd")
def cumprod(n: Node) -> Out:
    """Out = input's shape; 1 flop per element (not folded: no shape arithmetic uses it)."""
    return Out([n.shape(0)], flops=n.numel(0))


@rule("ReverseSequence")
def reverse_sequence(n: Node) -> Out:
    """Out = input's shape: each batch row's first sequence_lens steps reversed."""
    return _shaped(n, n.shape(0))


@rule("EyeLike")
def eye_like(n: Node) -> Out:
    """Out = input's shape, of the ``dtype`` attribute's type (the input's without one)."""
    given = n.attr("dtype", None)
    return _shaped(n, n.shape(0), dtype=onnx_dtype(int(given)) if given is not None else n.dtype(0))


@rule("CumSum")
def cumsum(n: Node) -> Out:
    """Out = input's shape; 1 flop per element."""
    def fold(x, axis):
        a = int(np.asarray(axis).reshape(()))
        y = np.flip(x, a) if n.attr("reverse", 0) else x
        out = np.cumsum(y, axis=a, dtype=x.dtype)
        if n.attr("exclusive", 0):
            out = out - y
        return np.flip(out, a) if n.attr("reverse", 0) else out

    out = _shaped(n, n.shape(0), fold)
    out.flops = n.numel(0)  # one addition per element along the axis
    return out


@rule("OneHot")
def one_hot(n: Node) -> Out:
    """Out: the indices' shape with depth inserted at the axis, in the values' dtype."""
    idx = n.shape(0)
    depth = int(n.required_value(1, "depth").reshape(()))
    axis = n.axis(n.attr("axis", -1), len(idx) + 1)
    return Out([(*idx[:axis], depth, *idx[axis:])], dtypes=[n.dtype(2)])
