"""If, Loop and Scan: their bodies are walked as graphs of their own, in the enclosing graph's
tensors (a body reads outer values by name), and their layers placed where they run.

- If: a condition known before running picks its branch, exactly. Otherwise both branches are
  walked; the costlier one is taken as the one that runs (its layers costed, the other's marked
  "not taken": its weights still counted), outputs where the branches agree are exact and where
  they differ the per-dim largest, marked as bounds.
- Loop: the body runs once per iteration; its layers are costed times the trip count (a constant
  ``M``; an upper bound when a condition can end the loop early). Loop-carried state that keeps its
  shape is exact; state that grows by the same amount each iteration (a sequence appended to) is
  extrapolated; anything else is unknown. Scan outputs are stacked: [trips, ...].
- Scan: the trip count is the scanned axis' length; the body sees one slice per iteration.
Each node becomes an entry layer (the body's inputs), the body's layers, and an exit layer (the
node's outputs), so liveness and the per-layer table see the body where it runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from archcalc.analysis.walk.results import LayerResult
from archcalc.errors import DataDependentShape, ShapeError
from archcalc.ir import Graph, Layer, Role, Shaped, Value
from archcalc.ops import Node, Out

Walk = Callable[[Graph, Shaped, list[LayerResult], bool], None]
Declare = Callable[[Graph, Shaped], None]
# Where the products' rules put a bias (see archcalc.ops): for the bodies no rule runs on.
BIAS_AT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def expand(node: Node, results: list[LayerResult], strict: bool, walk: Walk, declare: Declare) -> None:
    """Walk the body (or bodies) of ``node`` into ``results``. When a body cannot be walked its
    stored weights are still counted (the file holds them) before the node is reported unknown."""
    op = node.layer.op_type
    try:
        if op == "If":
            _if(node, results, strict, walk, declare)
        elif op == "Loop":
            _loop(node, results, strict, walk, declare)
        elif op == "Scan" and node.opset >= 9:
            _scan(node, results, strict, walk, declare)
        else:
            raise node.error(f"archcalc cannot yet walk the subgraphs of {op}", DataDependentShape)
    except DataDependentShape:
        results += [stored_only(node, body, declare) for body in node.layer.subgraphs.values()]
        raise


def stored_only(node: Node, body: Graph, declare: Declare) -> LayerResult:
    """A body that does not run: a record that reads its stored tensors, so their weights count."""
    stored: list[str] = []
    biases: set[str] = set()

    def gather(graph: Graph) -> None:  # its layers' stored inputs, its own or the enclosing graphs'
        declare(graph, node.graph)
        for ly in graph.layers:
            stored.extend(n for n in ly.inputs if n in node.graph.tensors and n not in graph.inputs)
            if ly.op_type in BIAS_AT and len(ly.inputs) > BIAS_AT[ly.op_type]:
                biases.add(ly.inputs[BIAS_AT[ly.op_type]])
            for sub in ly.subgraphs.values():
                gather(sub)

    gather(body)
    stored = [n for n in dict.fromkeys(stored) if node.graph.tensors[n].role in (Role.WEIGHT, Role.BUFFER)]
    layer = Layer(f"{node.layer.name}/{body.name or 'body'} (not run)", node.layer.op_type, stored, [])
    # No rule runs on a body that is not walked, so the one-element biases (a one-filter conv's) that
    # rules would name are named here; larger stored tensors are weights by their dtype.
    params = {j: "bias" for j, n in enumerate(stored) if n in biases}
    return LayerResult(layer, Out([], params=params), True, True, "not taken")


def _body(node: Node, name: str) -> Graph:
    body = node.layer.subgraphs.get(name)
    if body is None:
        raise node.error(f"has no '{name}' graph, which {node.layer.op_type} requires")
    return body


def _cost(results: list[LayerResult]) -> tuple[int, int]:
    return (sum(r.out.macs * r.repeat for r in results if not r.folded),
            sum(r.out.flops * r.repeat for r in results if not r.folded))


def _walk_body(body: Graph, node: Node, strict: bool, walk: Walk, declare: Declare) -> list[LayerResult]:
    declare(body, node.graph)
    mine: list[LayerResult] = []
    walk(body, node.graph, mine, strict)
    return mine


def _if(node: Node, results, strict, walk, declare) -> None:
    if not node.layer.inputs or not node.layer.inputs[0]:
        raise node.error("has no condition input, which If requires")
    cond = node.graph.tensors[node.layer.inputs[0]]
    branches = {key: _body(node, key) for key in ("then_branch", "else_branch")}
    if cond.value is not None and not cond.bound:
        key = "then_branch" if _scalar(node, cond.value, "condition") else "else_branch"
        taken = branches[key]
        other = branches["else_branch" if key == "then_branch" else "then_branch"]
        results.append(stored_only(node, other, declare))  # never runs, but the file holds its weights
        results += _walk_body(taken, node, strict, walk, declare)
        _exit(node, results, [node.graph.tensors[o] for o in taken.outputs], bound=False)
        return
    walked, failed = {}, {}
    for key, b in branches.items():
        try:
            walked[key] = _walk_body(b, node, strict, walk, declare)
        except ShapeError as exc:  # a branch that cannot run on these shapes is not the one that runs
            failed[key] = exc
    if len(failed) == 2:
        raise failed["else_branch"]
    if failed:
        (key, _), = failed.items()
        runs = "else_branch" if key == "then_branch" else "then_branch"
        results.append(stored_only(node, branches[key], declare))
        results += walked[runs]
        _exit(node, results, [node.graph.tensors[o] for o in branches[runs].outputs], bound=False)
        return
    heavier = max(walked, key=lambda k: _cost(walked[k]))
    lighter = "else_branch" if heavier == "then_branch" else "then_branch"
    for r in walked[lighter]:
        r.folded, r.status = True, "not taken"
    results += walked[lighter] + walked[heavier]
    outs = [_union(node.graph.tensors[a], node.graph.tensors[b])
            for a, b in zip(branches[heavier].outputs, branches[lighter].outputs)]
    differ = _cost(walked[heavier]) != _cost(walked[lighter]) or any(v.bound for v in outs)
    _exit(node, results, outs, bound=differ)


def _scalar(node: Node, value, what: str):
    """The one value a control-flow input holds (an If's condition, a Loop's trip count or condition)."""
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise node.error(f"its {what} holds {flat.size} values; {node.layer.op_type}'s is one")
    return flat[0]


def _union(a: Value, b: Value) -> Value:
    """What an output is when either branch may run: the shape both give, else the largest."""
    if not (a.known and b.known) or len(a.shape) != len(b.shape) or (a.seq is None) != (b.seq is None):
        return Value(a.name, (), "unknown", Role.ACTIVATION, known=False)
    shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))
    seq = None if a.seq is None else max(a.seq, b.seq or 0)
    differ = shape != a.shape or shape != b.shape or a.seq != b.seq
    return Value(a.name, shape, a.dtype, Role.ACTIVATION, bound=a.bound or b.bound or differ, seq=seq)


def _exit(node: Node, results: list[LayerResult], values: list[Value], bound: bool,
          stacked: int | None = None, carried: int | None = None) -> None:
    """The node's outputs, written from its body's: an exit layer reads the body's outputs."""
    layer = node.layer
    shapes, dtypes, seqs = [], [], {}
    unknown = False
    for j, (name, v) in enumerate(zip(layer.outputs, values)):
        unknown |= not v.known
        shape = v.shape if stacked is None or carried is None or j < carried else (stacked, *v.shape)
        shapes.append(shape)
        dtypes.append(v.dtype)
        if v.seq is not None:
            seqs[j] = v.seq
        if name:
            role = Role.OUTPUT if name in node.graph.outputs else Role.ACTIVATION
            node.graph.tensors[name] = Value(name, shape, v.dtype, role, bound=bound or v.bound,
                                             known=v.known, seq=v.seq)
    exit_layer = Layer(layer.name, layer.op_type, [*layer.inputs[:1], *[v.name for v in values]], layer.outputs,
                       layer.attrs, layer.domain)
    status = "unknown" if unknown else "bound" if bound or any(v.bound for v in values) else "exact"
    reason = "its body gives an output whose shape is unknown" if unknown else ""
    results.append(LayerResult(exit_layer, Out(shapes, dtypes=dtypes, seqs=seqs), True, False, status, reason))


def _set_inputs(node: Node, body: Graph, values: list[Value]) -> None:
    """The body's inputs, as one iteration sees them."""
    for name, v in zip(body.inputs, values):
        node.graph.tensors[name] = Value(name, v.shape, v.dtype, Role.ACTIVATION, bound=v.bound, seq=v.seq,
                                         known=v.known)


def _counters() -> list[Value]:
    """A Loop body's first two inputs: the iteration number and the condition (scalars)."""
    return [Value("", (), "int64", Role.ACTIVATION), Value("", (), "bool", Role.ACTIVATION)]


def _enter(node: Node, results: list[LayerResult], body: Graph, values: list[Value]) -> None:
    """The entry layer: it writes the body's inputs (``values``) from the node's inputs."""
    entry = Layer(f"{node.layer.name}/enter", node.layer.op_type, node.layer.inputs, list(body.inputs))
    results.append(LayerResult(entry, Out([v.shape for v in values], dtypes=[v.dtype for v in values]),
                               True, False, "bound" if any(v.bound for v in values) else "exact"))


def trip_symbols(graph: Graph) -> set[str]:
    """The names ``--dim`` may give a Loop's trip count by: ``LOOP.trips``, for every Loop, nested too."""
    names = set()
    for layer in graph.layers:
        if layer.op_type == "Loop" and not layer.domain:
            names.add(f"{layer.name}.trips")
        for body in layer.subgraphs.values():
            names |= trip_symbols(body)
    return names


def _trips(node: Node) -> tuple[int, bool]:
    """A Loop's trip count and whether it is an upper bound (a condition may end it early): the
    constant M, or the value given with ``--dim LOOP.trips=N``."""
    layer = node.layer
    m = node.value(0) if node.has(0) else None
    symbol = f"{layer.name}.trips"
    if m is None and symbol not in node.graph.symbols:
        raise node.error(f"its trip count is not a constant (no M, or M computed from data), so how often "
                         f"its body runs cannot be known before running: give it with --dim {symbol}=N",
                         DataDependentShape)
    trips = max(int(_scalar(node, m, "trip count")), 0) if m is not None else node.graph.symbols[symbol]
    cond = node.value(1) if node.has(1) else np.array(True)
    body = _body(node, "body")
    ends_early = cond is None or not bool(_scalar(node, cond, "condition")) or _condition_varies(node, body)
    return trips, ends_early or node.graph.tensors[layer.inputs[0]].bound


def _condition_varies(node: Node, body: Graph) -> bool:
    """Whether the body's condition output may turn false (anything but its input passed through
    or a true constant)."""
    out = body.outputs[0]
    if out == body.inputs[1]:
        return False
    t = node.graph.tensors.get(out)
    value = np.asarray(t.value).reshape(-1) if t is not None and t.value is not None else np.empty(0)
    return not (value.size == 1 and bool(value[0]))


def _state(values: list[Value]) -> list[tuple]:
    return [(v.shape, v.seq, v.known) for v in values]


def _loop(node: Node, results, strict, walk, declare) -> None:
    body = _body(node, "body")
    trips, bound = _trips(node)
    carried = [node.graph.tensors[n] for n in node.layer.inputs[2:]]
    first = [*_counters(), *carried]
    mine, state1 = _iterate(node, body, first, strict, walk, declare)
    final = carried
    if trips and _state(state1) != _state(carried):
        final = _extrapolate(node, body, carried, state1, trips, strict, walk, declare)
        # The probing walks overwrote the body's tensors: walk the first iteration again, so the
        # tensors are the ones its costed layers saw.
        mine, _ = _iterate(node, body, first, strict, walk, declare)
    elif trips:
        final = state1
    for r in mine:
        r.repeat = trips
    _enter(node, results, body, first)
    results += mine
    n_carried = len(carried)
    scans = [node.graph.tensors[o] for o in body.outputs[1 + n_carried:]]
    _exit(node, results, [*final, *scans], bound=bound, stacked=trips, carried=n_carried)


def _iterate(node, body, inputs, strict, walk, declare) -> tuple[list[LayerResult], list[Value]]:
    """One walk of the body with ``inputs``: its results and the carried state it returns."""
    _set_inputs(node, body, inputs)
    mine = _walk_body(body, node, strict, walk, declare)
    n = len(inputs) - 2
    return mine, [node.graph.tensors[o] for o in body.outputs[1:1 + n]]


def _extrapolate(node, body, start: list[Value], after: list[Value], trips: int, strict, walk,
                 declare) -> list[Value]:
    """The carried state after ``trips`` iterations, one walk after ``after``: settled, or grown by the
    same step each time."""
    _, again = _iterate(node, body, [*_counters(), *after], strict, walk, declare)
    out = []
    for a, b, c in zip(start, after, again):
        if b.known and _state([b]) == _state([c]):  # settled after the first iteration: its shape from then on
            out.append(Value(a.name, b.shape, b.dtype, Role.ACTIVATION, bound=b.bound or c.bound, seq=b.seq))
            continue
        step = _step(b, c)
        first = _step(a, b)
        empty = a.seq == 0 and not a.shape  # an empty sequence takes its elements' shape on the first insert
        if step is None or first is None or (first[1] != step[1] if empty else first != step):
            raise node.error(f"its loop-carried '{a.name}' changes shape from one iteration to the next in a "
                             "way that is not a constant step, so its final shape cannot be known before running",
                             DataDependentShape)
        dims, seq = step
        shape = tuple(x + d * (trips - 1) for x, d in zip(b.shape, dims))
        length = None if b.seq is None else b.seq + seq * (trips - 1)
        out.append(Value(a.name, shape, b.dtype, Role.ACTIVATION, bound=b.bound, seq=length))
    return out


def _step(a: Value, b: Value) -> tuple[tuple[int, ...], int] | None:
    """How ``b`` differs from ``a``: per dim and in sequence length (None: not comparable)."""
    if not (a.known and b.known) or (a.seq is None) != (b.seq is None):
        return None
    if a.seq == 0 and not a.shape:  # an empty sequence: its elements' shape comes with the first insert
        return (), (b.seq or 0)
    if len(a.shape) != len(b.shape):
        return None
    return tuple(y - x for x, y in zip(a.shape, b.shape)), (b.seq or 0) - (a.seq or 0)


def _scan(node: Node, results, strict, walk, declare) -> None:
    body = _body(node, "body")
    n_scan = int(node.required_attr("num_scan_inputs"))
    states = [node.graph.tensors[n] for n in node.layer.inputs[: len(node.layer.inputs) - n_scan]]
    scanned = [node.graph.tensors[n] for n in node.layer.inputs[len(states):]]
    axes = list(node.attr("scan_input_axes", [0] * n_scan))
    slices, trips = [], None
    for v, axis in zip(scanned, axes):
        a = node.axis(axis, len(v.shape))
        trips = v.shape[a] if trips is None else trips
        slices.append(Value(v.name, v.shape[:a] + v.shape[a + 1:], v.dtype, Role.ACTIVATION, bound=v.bound))
    trips = trips or 0
    _set_inputs(node, body, [*states, *slices])
    _enter(node, results, body, [*states, *slices])
    mine = _walk_body(body, node, strict, walk, declare)
    for r in mine:
        r.repeat = trips
    results += mine
    outs = [node.graph.tensors[o] for o in body.outputs]
    out_axes = list(node.attr("scan_output_axes", [0] * (len(outs) - len(states))))
    if any(a not in (0, -len(v.shape) - 1) for a, v in zip(out_axes, outs[len(states):])):
        raise node.error("stacks a scan output along an axis other than the first, which archcalc does not "
                         "size yet", DataDependentShape)
    _exit(node, results, outs, bound=False, stacked=trips, carried=len(states))
