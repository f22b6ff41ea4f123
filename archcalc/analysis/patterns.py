"""The graph idioms the analyses look for, named once: weighted products, normalizations, views and
splits, and attention's core. Tensor parallelism, selective checkpointing, the KV cache and serving
all ask here, so they agree on what a norm or an attention is.

An attention's core is found by its data flow, not by names: a softmax over a product of two
activations (the scores, Q K^T, through scaling, masking and soft-capping), then the product of the
probabilities with the values. ONNX's own ``Attention`` op is the fused form of the same thing.
"""

from __future__ import annotations

import numpy as np

from archcalc.analysis.walk.results import LayerResult
from archcalc.ir import Layer, Role, Shaped

# Products of an activation with a weight matrix (and their fused and quantized forms).
WEIGHTED_PRODUCTS = frozenset(
    {"MatMul", "Gemm", "FusedMatMul", "com.microsoft.FusedMatMul", "MatMulInteger", "com.microsoft.MatMulNBits",
     "QLinearMatMul"}
)
# Normalizations as single ops: their weights are per-feature (replicated by tensor parallelism).
NORMS = frozenset(
    {"LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
     "SkipSimplifiedLayerNormalization", "RMSNormalization", "BatchNormalization", "GroupNormalization",
     "InstanceNormalization", "LpNormalization", "MeanVarianceNormalization"}
)
# Where a normalization begins, fused or written out (a decomposed LayerNorm opens with ReduceMean).
NORM_STARTS = NORMS | {"ReduceMean"}
# Normalizations whose output for a token reads that token's first input alone.
TOKEN_NORMS = frozenset({"RMSNormalization", "LayerNormalization", "SimplifiedLayerNormalization"})
# Ops that view, reorder or copy a tensor: they hold no more distinct values than what they read.
VIEWS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast", "Tile"})
SPLITS = VIEWS | {"Split", "Slice"}
FUSED_ATTENTION = frozenset({"Attention"})  # ONNX's attention op: Q, K, V in, keys on axis 2 (4-D) or 1 (3-D)
CORE_CHAIN = frozenset({"Dropout", "Cast", "Where", "Identity"})  # between a softmax and its product
SCALES = frozenset({"Div", "Mul", "Add", "Where", "Cast", "Sub", "Tanh"})  # scores to softmax (Tanh: a soft cap)


def is_product(layer: Layer) -> bool:
    """A matrix product of one of the kinds that multiply by a weight (by op, or by domain and op)."""
    return layer.op_type in WEIGHTED_PRODUCTS or f"{layer.domain}.{layer.op_type}" in WEIGHTED_PRODUCTS


def attention_core(shaped: Shaped, results: list[LayerResult]) -> tuple[np.ndarray, set[str], set[int]]:
    """Each attention's s x s part: from the product of two activations (the scores) through the
    softmax to the product that reads its probabilities. Returns the layers on the chain after the
    softmax (whose saved extras, dropout masks, go with it), the tensors of the core, and its layers."""
    drop_extra = np.zeros(len(results), dtype=bool)
    tensors: set[str] = set()
    layers: set[int] = set()
    for i, res in enumerate(results):
        if res.layer.op_type != "Softmax" or res.folded:
            continue
        scores = scores_product(shaped, results, res.layer.inputs[0])
        if scores is None:
            continue
        layers |= scores | {i}
        tensors |= {o for j in scores for o in results[j].layer.outputs if o}
        todo = [res.layer.outputs[0]]
        while todo:
            name = todo.pop()
            tensors.add(name)
            for j in shaped.consumers(name):
                if results[j].layer.op_type in CORE_CHAIN and not results[j].folded:
                    drop_extra[j] = True
                    layers.add(j)
                    todo.extend(o for o in results[j].layer.outputs[:1] if o)
    return drop_extra, tensors, layers


def scores_product(shaped: Shaped, results: list[LayerResult], name: str) -> set[int] | None:
    """The layers from a product of two activations (Q K^T) through scaling and masking to ``name``."""
    chain: set[int] = set()
    while True:
        at = shaped.producer(name)
        if at is None:
            return None
        op = results[at].layer.op_type
        chain.add(at)
        if op == "MatMul":
            ins = [shaped.tensors[n] for n in results[at].layer.inputs[:2]]
            return chain if all(t.role in (Role.ACTIVATION, Role.INPUT) for t in ins) else None
        if op not in SCALES:
            return None
        name = next((n for n in results[at].layer.inputs if n and shaped.tensors[n].role is Role.ACTIVATION), "")
        if not name:
            return None


def values_product(shaped: Shaped, results: list[LayerResult], scores: str) -> int | None:
    """The product of the probabilities with the values, downstream of ``scores``."""
    todo, seen = [scores], set()
    while todo:
        name = todo.pop()
        for j in shaped.consumers(name):
            if j in seen:
                continue
            seen.add(j)
            layer = results[j].layer
            if layer.op_type == "MatMul" and layer.inputs[0] == name:
                return j
            if layer.op_type in SCALES or layer.op_type in CORE_CHAIN or layer.op_type == "Softmax":
                todo.extend(o for o in layer.outputs[:1] if o)
    return None
