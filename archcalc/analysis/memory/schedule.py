"""The order a runtime executes a graph in, which decides what is alive together.

"file": the order the layers are written in (PyTorch's exporters write the forward's order).
"onnxruntime": onnxruntime's default sequential order (GraphViewer): a reverse depth-first walk from
the leaf nodes, each node's producers pushed in ascending node index so the one written last is
visited first, nodes emitted as the walk leaves them. A residual block's shortcut branch therefore
runs before its main branch, keeping the shortcut's output alive across the whole block.
"""

from __future__ import annotations

import dataclasses

from archcalc.analysis.walk.infer import LayerResult
from archcalc.ir import Shaped

# Ops onnxruntime runs as a function of several nodes, and how many intermediate outputs (each the
# op's output size) that leaves alive while it runs: HardSwish is HardSigmoid then Mul (seen in its
# profiler, which names those two nodes instead).
FUNCTION_TEMPORARIES = {"HardSwish": 1}


def _as_run(res: LayerResult) -> LayerResult:
    """A layer as onnxruntime runs it with optimizations off: folded shape arithmetic runs too, and a
    function op leaves its intermediates."""
    temps = FUNCTION_TEMPORARIES.get(res.layer.op_type, 0)
    if not res.folded and not temps:
        return res
    return dataclasses.replace(res, folded=False, out=dataclasses.replace(res.out, function_temporaries=temps))


def onnxruntime_order(graph: Shaped, results: list[LayerResult]) -> list[LayerResult]:
    """``results`` in onnxruntime's execution order. Layers archcalc folded (shape arithmetic) are
    nodes there too: the walk goes through them, and with optimizations off onnxruntime runs them,
    so a Shape node keeps the activation it reads alive until it runs. They come back unfolded."""
    every = range(len(results))
    producer = {}
    for i in every:
        for name in results[i].layer.outputs:
            if name:
                producer[name] = i
    inputs_of = {i: sorted({producer[n] for n in results[i].layer.inputs if n in producer}) for i in every}
    has_reader = {p for i in every for p in inputs_of[i]}
    stack = [(i, False) for i in every if i not in has_reader]
    order, visited = [], set()
    while stack:
        i, leaving = stack.pop()
        if leaving:
            order.append(i)
            continue
        if i in visited:
            continue
        visited.add(i)
        stack.append((i, True))
        stack.extend((p, False) for p in inputs_of[i] if p not in visited)
    return [_as_run(results[i]) for i in order]


ORDERS = {"file": lambda graph, results: results, "onnxruntime": onnxruntime_order}
