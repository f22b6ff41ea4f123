"""Classical models (the ai.onnx.ml domain, as skl2onnx and onnxmltools write scikit-learn
pipelines): linear models, tree ensembles, normalizers, ZipMap.

Their coefficients live in attributes, not initializers, so they are not stored weights. A linear
model costs rows x features x outputs MACs; a tree ensemble, one comparison per level each row
descends, at most the depth of each tree (counted from the node attributes: a bound, exact for
balanced trees).
"""

from __future__ import annotations

import math

from archcalc.ops.registry import Node, Out, rule

ML = "ai.onnx.ml."


def _rows(n: Node) -> tuple[int, int]:
    """(rows, features) of a [N, C] input (a 1-D input is one row)."""
    x = n.rank(0, 1, 2)
    return (1, x[0]) if len(x) == 1 else (x[0], x[1])


def _labels(n: Node, prefix: str) -> tuple[int, str]:
    """How many classes, and the label's dtype (int64 or string), from the class-label attribute."""
    ints = n.attr(f"{prefix}_ints", None) or n.attr(f"{prefix}_int64s", None)
    strings = n.attr(f"{prefix}_strings", None)
    if ints is None and strings is None:
        raise n.error(f"has neither {prefix}_ints nor {prefix}_strings: its classes are unknown")
    return (len(ints), "int64") if ints is not None else (len(strings), "string")


@rule(ML + "LinearClassifier")
def linear_classifier(n: Node) -> Out:
    """label [N], scores [N, classes]; MACs = N x features x coefficient rows."""
    rows, features = _rows(n)
    classes, label = _labels(n, "classlabels")
    coefficient_rows = len(n.required_attr("coefficients")) // max(features, 1)
    return Out([(rows,), (rows, classes)][: n.n_outputs], dtypes=[label, "float32"][: n.n_outputs],
               macs=rows * features * coefficient_rows, flops=rows * classes * 2)


@rule(ML + "LinearRegressor")
def linear_regressor(n: Node) -> Out:
    """Y [N, targets]; MACs = N x features x targets."""
    rows, features = _rows(n)
    targets = int(n.attr("targets", 1))
    return Out([(rows, targets)], dtypes=["float32"], macs=rows * features * targets, flops=rows * targets)


@rule(ML + "Normalizer", ML + "Scaler", ML + "Binarizer")
def elementwise_ml(n: Node) -> Out:
    """Out: the input's shape (float; Binarizer keeps the type); 2 flops per element (Normalizer: the
    norm's sum and the divide; Scaler: offset and scale; Binarizer: 1, the comparison)."""
    x = n.shape(0)
    binarizer = n.layer.op_type == "Binarizer"
    return Out([x], dtypes=[n.dtype(0) if binarizer else "float32"], flops=(1 if binarizer else 2) * math.prod(x))


def _depths(n: Node) -> list[int]:
    """Each tree's depth (branch levels from root to the deepest leaf), from the node attributes."""
    trees = n.required_attr("nodes_treeids")
    ids, modes = n.required_attr("nodes_nodeids"), n.required_attr("nodes_modes")
    true, false = n.required_attr("nodes_truenodeids"), n.required_attr("nodes_falsenodeids")
    children: dict[tuple[int, int], tuple[int, int] | None] = {}
    for t, i, mode, a, b in zip(trees, ids, modes, true, false):
        children[(t, i)] = None if mode == "LEAF" else (a, b)
    depths = []
    for tree in sorted(set(trees)):
        deepest, todo = 0, [(min(i for t, i in children if t == tree), 0)]
        while todo:
            node, depth = todo.pop()
            kids = children.get((tree, node))
            if kids is None or depth > len(children):  # a leaf (or a malformed cycle: stop)
                deepest = max(deepest, depth)
                continue
            todo += [(kids[0], depth + 1), (kids[1], depth + 1)]
        depths.append(deepest)
    return depths


@rule(ML + "TreeEnsembleClassifier", ML + "TreeEnsembleRegressor")
def tree_ensemble(n: Node) -> Out:
    """Classifier: label [N], scores [N, classes]; regressor: [N, targets]; one comparison per level
    descended in each tree (the depth: a bound) plus one addition per tree and output."""
    rows, _ = _rows(n)
    depth = sum(_depths(n))
    trees = len(set(n.required_attr("nodes_treeids")))
    if n.layer.op_type == "TreeEnsembleClassifier":
        classes, label = _labels(n, "classlabels")
        return Out([(rows,), (rows, classes)][: n.n_outputs], dtypes=[label, "float32"][: n.n_outputs],
                   flops=rows * (depth + trees * classes))
    targets = int(n.attr("n_targets", 1))
    return Out([(rows, targets)], dtypes=["float32"], flops=rows * (depth + trees * targets))


@rule(ML + "ZipMap")
def zip_map(n: Node) -> Out:
    """A sequence of one map per row, each class label to its score: held as N elements of [classes]."""
    rows, classes = _rows(n)
    _labels(n, "classlabels")
    return Out([(classes,)], dtypes=["float32"], seqs={0: rows})


@rule(ML + "ArrayFeatureExtractor")
def array_feature_extractor(n: Node) -> Out:
    """The last axis' entries at the given indices: [..., len(indices)] ([1, k] for a 1-D input)."""
    x, picked = n.shape(0), math.prod(n.shape(1))
    return Out([(1, picked) if len(x) == 1 else (*x[:-1], picked)])
