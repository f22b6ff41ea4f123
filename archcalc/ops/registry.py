"""The op-rule registry: one function per op type gives shape, parameters, cost and folded value.

A rule receives a :class:`Node` (its layer, with the input tensors' concrete shapes, dtypes and known
values, and attributes with the schema's defaults filled in) and returns an :class:`Out`.
Counting convention (stated once, in ``archcalc.conventions``): ``macs`` are multiply-accumulates
of matrix and convolution products; ``flops`` are every other floating-point operation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archcalc.errors import DataDependentShape, ShapeError
from archcalc.ir import Layer, Role, Shape, Shaped

# "weight" | "bias" | "buffer" | "quant" (a quantized tensor's scale or zero point: stored, not
# trained, shown apart from the parameters)
ParamRole = str

# Values are folded (computed at load time, as shape arithmetic) only up to this many elements;
# anything larger is computed at run time and counted as an activation.
FOLD_LIMIT = 1 << 16


@dataclass
class Out:
    """What a rule says of one node."""

    shapes: list[tuple[int, ...]]
    dtypes: list[str] | None = None  # None: every output has input 0's dtype
    values: list[np.ndarray | None] | None = None  # known outputs, for shape arithmetic
    macs: int = 0
    flops: int = 0
    params: dict[int, ParamRole] = field(default_factory=dict)  # roles of parameter inputs
    alias: bool = False  # output 0 is a view of input 0 (no storage of its own)
    # The outputs stand for stored tensors read as they are used (a dequantization fused into its
    # reader's kernel, ir.FUSED_DEQUANT_KEY): load-time constants, never run, never an activation.
    stored: bool = False
    inplace: bool = False  # output 0 may reuse an input buffer of its size that dies here
    workspace: int = 0  # elements of transient scratch while the op runs (a conv's im2col matrix)
    # Intermediate outputs, each output 0's size, alive while the op runs: set by a schedule for a
    # runtime that runs the op as a function of several nodes (see archcalc.analysis.memory.schedule).
    function_temporaries: int = 0
    # What the op keeps for its backward pass (training): inputs and outputs by position, and
    # extra bytes of its own (pool indices, dropout masks, normalization statistics).
    saves_inputs: tuple[int, ...] = ()
    saves_outputs: tuple[int, ...] = ()
    saves_extra_bytes: int = 0
    # Keeps a keep-mask the size of input 0 (dropout); its width depends on the device's kernel
    # (see archcalc.step_peak.saved_extra_bytes).
    saves_mask: bool = False
    # The output shapes are upper bounds: how many elements come out depends on the data (NonZero,
    # NonMaxSuppression, a TopK whose k is computed at run time).
    bound: bool = False
    # Inputs whose values the rule read to size the outputs (a Resize's scales, a Reshape's target):
    # shape arithmetic, never parameters. Filled in by Node as the rule reads them.
    shape_inputs: frozenset[int] = frozenset()
    # Outputs that are sequences: their lengths by position (each element is that output's shape).
    seqs: dict[int, int] = field(default_factory=dict)


Rule = Callable[["Node"], Out]
RULES: dict[str, Rule] = {}

# The ops whose rules truly cost nothing, each with the reason: they view, move, index or create
# data, or compute no floating-point value (FLOPs count floating-point arithmetic only). Every other
# rule costs something on some input: tests/test_conformance.py probes each with onnx's own test
# cases, so an op whose cost is quietly zero (CumSum was) fails there.
_MOVES = "moves or copies data, computes nothing"
FREE_OPS: dict[str, str] = {
    **dict.fromkeys(["Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"], "a view of its input"),
    **dict.fromkeys(["Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand",
                     "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Dropout", "Cast", "CastLike"], _MOVES),
    "Trilu": "copies its input with a triangle zeroed",
    "ReverseSequence": "copies its input with each row's first steps reversed",
    "ai.onnx.ml.ZipMap": "pairs each score with its class label", "ai.onnx.ml.ArrayFeatureExtractor": _MOVES,
    "EyeLike": "creates a tensor from a few numbers",
    "Scatter": "writes updates over a copy (the deprecated op has no reduction)",
    **dict.fromkeys(["Shape", "Size"], "reads the shape, not the data"),
    "NonZero": "compares with zero and writes indices: no floating-point arithmetic",
    "Compress": "copies the slices a condition selects",
    **dict.fromkeys(["SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceAt", "SequenceErase",
                     "SequenceLength", "SplitToSequence", "ConcatFromSequence"], "builds or reads a sequence"),
    **dict.fromkeys(["ConstantOfShape", "Range", "OneHot"], "creates a tensor from a few numbers"),
    **dict.fromkeys(["Not", "And", "Or", "Xor", "BitwiseNot", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitShift",
                     "IsNaN", "IsInf"], "logical or bitwise: no floating-point arithmetic"),
}


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the rule of ``op_types``; a second rule for the same op is a bug."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            if op in RULES:
                raise RuntimeError(f"two rules for {op}: {RULES[op].__name__} and {fn.__name__}")
            RULES[op] = fn
        return fn

    return register


class Node:
    """A rule's view of one layer: concrete input shapes, known values, attributes with defaults."""

    def __init__(self, layer: Layer, graph: Shaped):
        self.layer = layer
        self.graph = graph
        self.opset = graph.opset
        self._inputs = [graph.tensors[n] if n else None for n in layer.inputs]
        self.read_values: set[int] = set()  # inputs whose values the rule read (see Out.shape_inputs)

    # --- inputs -------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self._inputs)

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return i < len(self._inputs) and self._inputs[i] is not None

    def _given(self, i: int):
        """Input ``i``, which the op needs: a node that leaves it out is malformed."""
        if not self.has(i):
            raise self.error(f"needs input {i}, which the node does not give")
        return self._inputs[i]

    def shape(self, i: int) -> tuple[int, ...]:
        return self._given(i).shape

    def dtype(self, i: int) -> str:
        return self._given(i).dtype

    def rank(self, i: int, *allowed: int, at_least: int | None = None) -> tuple[int, ...]:
        """Input ``i``'s shape, checked to have one of the ``allowed`` ranks (or ``at_least`` dims)."""
        shape = self.shape(i)
        if (allowed and len(shape) not in allowed) or (at_least is not None and len(shape) < at_least):
            want = " or ".join(map(str, allowed)) if allowed else f"at least {at_least}"
            raise self.error(f"input {i} '{self.layer.inputs[i]}' has rank {len(shape)} {list(shape)}; "
                             f"the op takes rank {want}")
        return shape

    def numel(self, i: int) -> int:
        return math.prod(self.shape(i))

    def seq(self, i: int) -> int | None:
        """The length of input ``i`` when it is a sequence, else None."""
        return self._given(i).seq

    def tracked(self, i: int) -> bool:
        """Whether autograd would track input ``i``: a value computed at run time or a trained
        parameter; not the batch, a buffer, a shape constant or a one-element stored operand (a
        scale or an epsilon, which an exporter writes as a constant)."""
        t = self._inputs[i] if self.has(i) else None
        if t is None:
            return False
        if t.role in (Role.ACTIVATION, Role.OUTPUT):
            return True
        return t.role == Role.WEIGHT and t.shape is not None and math.prod(t.shape) > 1

    def value(self, i: int) -> np.ndarray | None:
        self.read_values.add(i)
        return self._inputs[i].value if self.has(i) else None  # type: ignore[union-attr]

    def checked_value(self, i: int) -> np.ndarray | None:
        """Input ``i``'s value when known, read only to check it: unlike ``value``, the output's shape
        is not made to depend on it."""
        return self._inputs[i].value if self.has(i) else None  # type: ignore[union-attr]

    def values(self) -> list[np.ndarray | None] | None:
        """Every given input's value, or None when any is unknown (the node cannot fold)."""
        vals = [t.value if t is not None else None for t in self._inputs]
        return None if any(v is None for v, t in zip(vals, self._inputs) if t is not None) else vals

    def fold(self, shape: tuple[int, ...], fn: Callable | None) -> list[np.ndarray | None] | None:
        """``[fn(*values)]`` when every input is known and the result is small, else None."""
        vals = self.values()
        if fn is None or vals is None or math.prod(shape) > FOLD_LIMIT:
            return None
        with np.errstate(all="ignore"):  # a log of 0 is the model's arithmetic (T5's buckets), as the runtime's
            return [np.asarray(fn(*vals))]

    def required_value(self, i: int, what: str) -> np.ndarray:
        """The value of input ``i``, which this op's output shape depends on."""
        if not self.has(i):
            raise self.error(f"needs its {what} (input {i}), which the node does not give")
        v = self.value(i)
        if v is None:
            raise self.error(f"its {what} (input '{self.layer.inputs[i]}') is computed at run time "
                             "from data, so the output shape cannot be known before running", DataDependentShape)
        return v

    def required_attr(self, name: str) -> Any:
        """Attribute ``name``, which the op cannot do without (the spec gives it no default)."""
        if name not in self.layer.attrs:
            raise self.error(f"has no '{name}' attribute, which {self.layer.op_type} requires")
        return self.layer.attrs[name]

    def ints(self, i: int, attr: str, what: str, opset_moved: int) -> list[int] | None:
        """An int list that was attribute ``attr`` before ``opset_moved`` and an input after."""
        if self.opset < opset_moved or attr in self.layer.attrs:
            v = self.attr(attr, None)
            return None if v is None else [int(x) for x in v]
        if not self.has(i):
            return None
        return [int(x) for x in np.atleast_1d(self.required_value(i, what))]

    # --- attributes and outputs ---------------------------------------------------------------
    def attr(self, name: str, default: Any) -> Any:
        """Attribute ``name``, or ``default`` when the node leaves it out.

        Each rule states the spec's default where it reads the attribute (None where the spec has
        none, or where it depends on the input's rank); tests/test_defaults.py checks every one
        against onnx's schemas. Reading them from the schemas at run time would cost ~10 ms of
        schema-registry start-up on every first estimate.
        """
        return self.layer.attrs.get(name, default)

    @property
    def n_outputs(self) -> int:
        return len(self.layer.outputs)

    def error(self, message: str, kind: type[ShapeError] = ShapeError) -> ShapeError:
        """A ShapeError about this node, carrying its name, op and input shapes as fields."""
        shapes = {n: t.shape for n, t in zip(self.layer.inputs, self._inputs) if t is not None}
        return kind(f"{self.graph.source}: node '{self.layer.name}' ({self.layer.op_type}): {message}",
                    file=self.graph.source, node=self.layer.name, op_type=self.layer.op_type, shapes=shapes)

    def axis(self, axis: int | None, rank: int) -> int:
        """A possibly negative axis, normalised and checked against ``rank``."""
        if not isinstance(axis, int | np.integer):
            raise self.error(f"has no usable axis ({axis!r})")
        if not -rank <= axis < rank:
            raise self.error(f"axis {axis} is out of range for rank {rank}")
        return axis % rank

    def broadcast(self, *shapes: Shape) -> tuple[int, ...]:
        """numpy's broadcasting of ``shapes``, or a ShapeError naming the inputs."""
        rank = max(len(s) for s in shapes)
        out = []
        for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
            sizes = {d for d in dims if d != 1}
            if len(sizes) > 1:
                names = ", ".join(f"'{n}' {list(s)}" for n, s in zip(self.layer.inputs, shapes))
                raise self.error(f"inputs do not broadcast: {names}")
            out.append(sizes.pop() if sizes else 1)
        return tuple(out)
