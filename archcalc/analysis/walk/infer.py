"""One walk over the graph: bind the inputs' symbolic dims, then apply each layer's rule in order.

Every tensor leaves with a concrete shape and dtype. Values known before running (constants and
the shape arithmetic computed from them) are folded as the walk goes, so data-dependent shapes
(Reshape targets, Expand shapes, masks) resolve. An op with no rule takes its shapes from onnx's
own shape inference and is marked as having no cost rule.
"""

from __future__ import annotations

import math
import os

import numpy as np

from archcalc.analysis.walk import control_flow
from archcalc.analysis.walk.results import LayerResult
from archcalc.dtypes import FLOAT_DTYPES
from archcalc.errors import (
    ArchcalcError,
    DataDependentShape,
    InputError,
    RuleCrash,
    UnboundDimError,
    UnsupportedOpError,
)
from archcalc.ir import Graph, Layer, Role, Shaped, Value
from archcalc.ops import RULES, Node, Out
from archcalc.ops.registry import FOLD_LIMIT
from archcalc.ops.sequence import SEQUENCE_OPS
from archcalc.units import MAX_SIZE


def _parse_dims(name: str, given: str | tuple[int, ...]) -> tuple[int, ...]:
    if given in ((), "scalar"):  # a scalar input (an If's condition, a Loop's trip count)
        return ()
    try:
        dims = tuple(int(d) for d in given.lower().replace(",", "x").split("x")) if isinstance(given, str) \
            else tuple(int(d) for d in given)
    except ValueError:
        dims = ()
    if not dims or any(not 0 <= d <= MAX_SIZE for d in dims):  # an empty tensor (a 0 dim) is a real one
        raise InputError(f"--input {name}={given if isinstance(given, str) else 'x'.join(map(str, given))}: "
                         f"not a shape: write whole numbers from 0 to 2^40, as 1x3x224x224 (or 'scalar')")
    return dims


def _check_sizes(batch: int | None, dims: dict[str, int]) -> None:
    """Every number a user gives is a size: a whole number from 1 to 2^40."""
    if batch is not None and not (isinstance(batch, int) and 1 <= batch <= MAX_SIZE):
        raise InputError(f"--batch {batch}: a batch is a whole number from 1 to 2^40")
    for name, value in dims.items():
        if not (isinstance(value, int) and 1 <= value <= MAX_SIZE):
            raise InputError(f"--dim {name}={value}: a dim is a whole number from 1 to 2^40")


def batch_like(dim: str, position: int) -> bool:
    """Whether ``--batch`` binds a symbolic dim: the first dim of an input, or one whose name says
    batch wherever it stands (a recurrent state's [layers, batch, hidden])."""
    return position == 0 or "batch" in dim.lower()


def batch_fixed(graph: Graph, dims: dict[str, int] | None = None,
                shapes: dict[str, str | tuple[int, ...]] | None = None) -> bool:
    """Whether ``--batch`` has nothing to bind: no input left to it has a batch-like symbolic dim."""
    dims, shapes = dims or {}, shapes or {}
    return not any(isinstance(d, str) and d not in dims and batch_like(d, i)
                   for name in graph.inputs if name not in shapes
                   for i, d in enumerate(graph.tensors[name].shape or ()))


def bind_inputs(graph: Graph, batch: int | None = None, dims: dict[str, int] | None = None,
                shapes: dict[str, str | tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """A concrete shape for every graph input (the graph is not changed).

    ``shapes`` sets whole inputs; ``dims`` binds named symbolic dims; ``batch`` binds each symbolic
    first dim and each dim named like a batch (1 when not given). Every dim left without a value is
    named in one error, with one command line that binds them all.
    """
    dims, shapes = dict(dims or {}), dict(shapes or {})
    _check_sizes(batch, dims)
    for name in shapes:
        if name not in graph.inputs:
            raise InputError(f"{graph.source}: --input names '{name}', but the inputs are "
                             f"{', '.join(graph.inputs)}")
    unbound = _unbound(graph, dims, shapes)
    if unbound:
        raise unbound
    bound_shapes = {name: _parse_dims(name, shapes[name]) if name in shapes else
                    _bound(graph.tensors[name].shape, dims, batch) for name in graph.inputs}
    _check_used(graph, batch, dims, shapes, bound_shapes)
    return bound_shapes


def _bound(shape, dims: dict[str, int], batch: int | None) -> tuple[int, ...]:
    """A declared shape with its symbolic dims given values (each has one: see ``_unbound``)."""
    return tuple(d if isinstance(d, int) else dims.get(d, 1 if batch is None else batch) for d in shape)


def _free_dims(shape, dims: dict[str, int]) -> list[tuple[int, str]]:
    """The (position, name) of each symbolic dim of ``shape`` that neither ``dims`` nor --batch binds."""
    return [(i, d) for i, d in enumerate(shape) if isinstance(d, str) and d not in dims and not batch_like(d, i)]


def _unbound(graph: Graph, dims: dict[str, int], shapes: dict) -> UnboundDimError | None:
    """Every input dim nothing binds, in one error whose fix binds them all: ``--dim NAME=N`` for
    each named dim (once, however many inputs share it), ``--input NAME=1x3xNxN`` for an input with
    a dim the file leaves unnamed or with no shape at all."""
    places: list[str] = []
    whole: list[str] = []
    named: dict[str, None] = {}  # an ordered set: each named dim once, where it is first met
    for name in (n for n in graph.inputs if n not in shapes):
        shape = graph.tensors[name].shape
        if shape is None:
            places.append(f"input '{name}' has no shape in the file")
            whole.append(f"--input {name}=DIMS (e.g. 1x3x224x224)")
            continue
        free = [(i, d) for i, d in _free_dims(shape, dims) if d not in named]
        if any("[" in d for _, d in free):  # the reader names an unnamed dim input[i]: --dim cannot bind it
            whole.append(f"--input {name}=" + "x".join(str(d) if isinstance(d, int) else "N" for d in shape))
        else:
            named.update((d, None) for _, d in free)
        if free:
            which = " and ".join(f"dim {i} ('{d}')" for i, d in free)
            places.append(f"input '{name}' {which} {'has' if len(free) == 1 else 'have'} no value")
    if not places:
        return None
    fixes = [f"--dim {d}=N" for d in named] + whole
    each = " (each N a size)" if any(f.startswith("--input") and "=DIMS" not in f for f in whole) else ""
    return UnboundDimError(f"{graph.source}: {'; '.join(places)}: pass {' '.join(fixes)}{each}")


def _check_used(graph: Graph, batch: int | None, dims: dict[str, int], shapes: dict, bound_shapes: dict) -> None:
    """Each --dim names a dim of some input (or a loop's trip count), and a --batch other than 1 binds one."""
    used = {d for name in graph.inputs if name not in shapes for d in (graph.tensors[name].shape or ())
            if isinstance(d, str)}
    unused = set(dims) - used - control_flow.trip_symbols(graph)
    if unused:
        raise InputError(f"{graph.source}: --dim {sorted(unused)[0]}: no input has a dim of that name")
    if batch is None or batch == 1 or not batch_fixed(graph, dims, shapes):
        return
    if set(graph.inputs) <= set(shapes):
        raise InputError(f"{graph.source}: --batch {batch} has nothing to bind: every input's shape is set "
                         "with --input; put the batch in those shapes")
    fixed = "; ".join(f"{n} {list(bound_shapes[n])}" for n in graph.inputs)
    raise InputError(f"{graph.source}: --batch {batch}: no input has a symbolic first dim ({fixed}); "
                     "re-export with a dynamic batch axis, or set shapes with --input")


def _check_inputs(node: Node) -> None:
    for name in node.layer.inputs:
        t = node.graph.tensors.get(name) if name else None
        if name and t is None:
            raise node.error(f"input '{name}' has no shape (it is read before it is written)")


# Ops without a rule whose known inputs onnx's reference evaluator may fold: bounded numeric work.
# Strings are never folded (a model's own regular expression could run for ever), nor is control
# flow, whose trip counts are the model's to choose.
FOLD_WITHOUT_RULE = frozenset({"Sign", "Shape", "Size", "Max", "Min", "Less", "Greater"})


def _foldable(node: Node, out: Out) -> bool:
    """Whether a node whose inputs are all known may be evaluated now: an op archcalc knows (or a
    listed one), in the default domain, on and to few elements, and no strings."""
    layer = node.layer
    if layer.domain or (layer.op_type not in RULES and layer.op_type not in FOLD_WITHOUT_RULE):
        return False
    given = [i for i in range(node.n_inputs) if node.has(i)]
    if any(node.dtype(i) == "string" for i in given) or "string" in (out.dtypes or []):
        return False
    return all(node.numel(i) <= FOLD_LIMIT for i in given) and all(math.prod(s) <= FOLD_LIMIT for s in out.shapes)


def _apply(node: Node) -> tuple[Out, bool]:
    """The layer's Out and whether a rule (rather than onnx's inference) gave it."""
    from archcalc.ops import fallback as onnx_fallback

    layer = node.layer
    # onnxruntime registers SimplifiedLayerNormalization in the default domain (a contrib op there).
    contrib = layer.domain or ("com.microsoft" if layer.op_type == "SimplifiedLayerNormalization" else "")
    rule = RULES.get(f"{contrib}.{layer.op_type}" if contrib else layer.op_type)
    sequence = next((i for i in range(node.n_inputs) if node.has(i) and node.seq(i) is not None), None)
    if sequence is not None and node.layer.op_type not in SEQUENCE_OPS | {"Identity"}:
        raise node.error(f"reads the sequence '{node.layer.inputs[sequence]}', which archcalc sizes only for "
                         "the sequence ops", DataDependentShape)
    try:
        out = rule(node) if rule else onnx_fallback.infer_node(node)
    except ArchcalcError:
        raise
    except Exception as exc:
        # A rule should size a node or refuse it with a ShapeError; one that crashes is a bug --
        # unless the node's attributes are not of the types its op's schema gives (a corrupt file).
        # Users get one line either way (naming the node); tests see a true crash itself.
        mismatch = onnx_fallback.attribute_mismatch(node)
        if mismatch:
            raise node.error(f"{mismatch}: the file is corrupt or was written by a broken exporter; "
                             "re-export it") from None
        if os.environ.get("ARCHCALC_STRICT"):
            raise
        raise node.error(f"archcalc's {node.layer.op_type} rule crashed on it ({type(exc).__name__}: {exc}): "
                         "a bug in archcalc; please report it with this file", RuleCrash) from None
    if out.values is None and node.values() is not None and _foldable(node, out):
        out.values = onnx_fallback.evaluate_node(node)
    out.shape_inputs = out.shape_inputs | frozenset(node.read_values)
    return out, rule is not None


def _viewed_weight(node: Node, out: Out) -> Value | None:
    """The stored weight a view op looks at: exporters route merged initializers through Identity."""
    if not out.alias or not node.has(0):
        return None
    src = node.graph.tensors[node.layer.inputs[0]]
    return src if src.role in (Role.WEIGHT, Role.BUFFER) and src.dtype in FLOAT_DTYPES else None


def _declared_values(graph: Graph, inputs: dict[str, tuple[int, ...]]) -> dict[str, Value]:
    """The bound inputs, and every declared tensor whose shape is already concrete (initializers,
    constants) as a Value of this binding."""
    values = {name: Value(name, shape, graph.tensors[name].dtype, Role.INPUT) for name, shape in inputs.items()}
    for t in graph.tensors.values():
        if t.name not in values and t.shape is not None and all(isinstance(d, int) for d in t.shape):
            values[t.name] = Value(t.name, t.shape, t.dtype, t.role, t.value)  # type: ignore[arg-type]
    return values


def infer(graph: Graph, inputs: dict[str, tuple[int, ...]], strict: bool = False,
          symbols: dict[str, int] | None = None) -> tuple[Shaped, list[LayerResult]]:
    """Shape every tensor of ``graph`` under the bound ``inputs`` (see ``bind_inputs``): the shaped
    record, and each layer's result. A node that cannot be sized before running (an op with no rule
    and no onnx inference, a shape computed from data) makes its outputs unknown, and everything
    that reads them; ``strict`` makes it an error instead. ``symbols``: values given for what the
    graph computes at run time (a Loop's trip count, ``LOOP.trips``)."""
    shaped = Shaped(graph, _declared_values(graph, inputs), symbols=dict(symbols or {}))
    results: list[LayerResult] = []
    walk(graph, shaped, results, strict)
    shaped.executed = [r.layer for r in results]
    return shaped, results


def walk(graph: Graph, shaped: Shaped, results: list[LayerResult], strict: bool) -> None:
    """Apply each of ``graph``'s layers in order, writing into ``shaped``; control flow's bodies are
    walked where they run (``archcalc.analysis.walk.control_flow``)."""
    tensors = shaped.tensors
    outputs = set(shaped.graph.outputs)
    for layer in graph.layers:
        node = Node(layer, shaped)
        _check_inputs(node)
        unknown = next((n for n in layer.inputs if n and not tensors[n].known), None)
        if unknown is not None:
            results += [control_flow.stored_only(node, body, declare) for body in layer.subgraphs.values()]
            results.append(_unknown(layer, tensors, f"reads '{unknown}', whose shape is unknown", outputs))
            continue
        try:
            if layer.subgraphs and not layer.domain:
                control_flow.expand(node, results, strict, walk, declare)
                continue
            out, has_rule = _apply(node)
        except (DataDependentShape, UnsupportedOpError) as exc:
            if strict:
                raise
            results.append(_unknown(layer, tensors, _reason(exc, shaped.source), outputs))
            continue
        results.append(_record(node, out, has_rule, tensors, outputs))


def declare(body: Graph, shaped: Shaped) -> None:
    """A control-flow body's own stored tensors (initializers, constants) as Values."""
    for t in body.tensors.values():
        if t.role is not Role.INPUT and t.shape is not None and all(isinstance(d, int) for d in t.shape):
            shaped.tensors[t.name] = Value(t.name, t.shape, t.dtype, t.role, t.value)  # type: ignore[arg-type]


def _reason(exc: ArchcalcError, source: str) -> str:
    """An error's message without the file it names (the estimate says that once)."""
    text = exc.message
    return text[len(source) + 2:] if source and text.startswith(source + ": ") else text


def _unknown(layer: Layer, tensors: dict[str, Value], reason: str, outputs: set[str]) -> LayerResult:
    for name in layer.outputs:
        if name:
            role = Role.OUTPUT if name in outputs else Role.ACTIVATION
            tensors[name] = Value(name, (), "unknown", role, known=False)
    return LayerResult(layer, Out([]), False, False, status="unknown", reason=reason)


def _record(node: Node, out: Out, has_rule: bool, tensors: dict[str, Value], outputs: set[str]) -> LayerResult:
    """Write the layer's outputs as Values of this binding; its result."""
    layer = node.layer
    if len(out.shapes) < len(layer.outputs):
        raise node.error(f"gives {len(out.shapes)} outputs where the node has {len(layer.outputs)}")
    weight = _viewed_weight(node, out)
    dtypes = out.dtypes or [node.dtype(0)] * len(out.shapes)
    values = out.values or [None] * len(out.shapes)
    folded = out.stored or (bool(layer.outputs) and all(v is not None for v in values[: len(layer.outputs)]))
    bound = out.bound or any(tensors[n].bound for n in layer.inputs if n)
    for name, shape, dtype, value in zip(layer.outputs, out.shapes, dtypes, values):
        if not name:
            continue
        if any(d < 0 for d in shape):  # never priced: a negative size is an error, not a number
            raise node.error(f"gives output '{name}' the negative shape {list(shape)}")
        role = Role.CONSTANT if folded else Role.OUTPUT if name in outputs else Role.ACTIVATION
        if value is not None and tuple(value.shape) != tuple(shape):
            value = np.broadcast_to(value, shape) if value.size == 1 else None
        tensors[name] = Value(name, tuple(int(d) for d in shape), dtype, role, value if folded else None,
                              bound=bound, seq=out.seqs.get(layer.outputs.index(name)))
    if weight is not None and layer.outputs[0]:  # a view of a weight is that weight, not an activation
        view = tensors[layer.outputs[0]]
        view.role, view.alias_of = weight.role, weight.alias_of or weight.name
    return LayerResult(layer, out, has_rule, folded or weight is not None, status="bound" if bound else "exact")
