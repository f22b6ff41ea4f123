"""The order a runtime executes a graph in, which decides what is alive together.

"file": the order the layers are written in (PyTorch's exporters write the forward's order).
"onnxruntime": onnxruntime's default sequential order (GraphViewer): a reverse depth-first walk from
the leaf nodes, each node's producers pushed in ascending node index so the one written last is
visited first, nodes emitted as the walk leaves them. A residual block's shortcut branch therefore
runs before its main branch, keeping the shortcut's output alive across the whole block.
"""

from __future__ import annotations

from archcalc.infer import LayerResult
from archcalc.ir import Graph


def onnxruntime_order(graph: Graph, results: list[LayerResult]) -> list[LayerResult]:
    """``results`` in onnxruntime's execution order (folded layers, never run, keep their places first)."""
    live = [i for i, r in enumerate(results) if not r.folded]
    live_set = set(live)
    producer = {}
    for i in live:
        for name in results[i].layer.outputs:
            if name:
                producer[name] = i
    inputs_of = {i: sorted({producer[n] for n in results[i].layer.inputs if n in producer}) for i in live}
    has_reader = {p for i in live for p in inputs_of[i]}
    stack = [(i, False) for i in live if i not in has_reader]
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
    folded = [r for i, r in enumerate(results) if i not in live_set]
    return folded + [results[i] for i in order]


ORDERS = {"file": lambda graph, results: results, "onnxruntime": onnxruntime_order}
