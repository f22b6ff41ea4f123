"""Tensor parallelism (Megatron-LM's layout) on an arbitrary graph: the graph as one rank sees it.

Shoeybi et al. 2019 split each transformer block's matrices in pairs: the first column-parallel
(attention's Q, K and V projections, the MLP's first matrix and, gated, its gate), the second
row-parallel (attention's output projection, the MLP's last matrix), so that everything between
them -- heads, scores, the MLP's hidden activations -- is split t ways with no communication inside,
and one all-reduce joins the row-parallel output (forward) and the column-parallel input's gradient
(backward). Found in a graph by walking from each weighted matrix product: one whose output reaches
another weighted product before any normalization is column-parallel, the one reached row-parallel;
what the walk passes is split. The LM head, the embedding and convolutions stay whole.

A language model's head (the layer the front ends mark with the loss it is trained on) is split by
the vocabulary as Megatron-LM (VocabParallelEmbedding, a column-parallel output layer,
vocab_parallel_cross_entropy) and torchtitan (the embedding RowwiseParallel, the output
ColwiseParallel into loss_parallel) split it: the embedding table and the head's matrix by rows of
the vocabulary, the logits and the loss's float32 copies of them by the vocabulary (a vocabulary the
degree does not divide is padded, as Megatron-LM pads it), the embedding's output all-reduced and the
head's input gradient too.

With sequence parallelism (Korthikanti et al. 2022) the activations the blocks keep whole -- the
norms' inputs and outputs, the residual stream, the dropout masks -- are split along the sequence
instead: every activation of a block holding a pair is 1/t. The rank's view is the same graph with
those tensors' shapes divided, so every other analysis (saved tensors, the step's peak) reads it
unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from archcalc.analysis.memory.loss import VOCAB_PARALLEL
from archcalc.analysis.patterns import NORM_STARTS, VIEWS, is_product
from archcalc.analysis.plan.units import Units
from archcalc.analysis.walk.infer import LayerResult
from archcalc.ir import LOSS_KEY, Role, Shaped


@dataclass(frozen=True)
class TensorParallel:
    """The pairs found: ``column`` and ``row`` layer positions, the tensors split between them."""

    column: frozenset[int]
    row: frozenset[int]
    split: frozenset[str]  # activations split by heads or hidden units
    weights: frozenset[str]  # parameters split t ways
    units: frozenset[int]  # the units holding a pair (the transformer blocks)
    # tensors split along a given axis, rounded up (the vocabulary: the head's matrix and logits, the
    # embedding table; the experts' widths), rather than along their last axis that divides
    axes: tuple[tuple[str, int], ...] = ()
    experts: frozenset[int] = frozenset()  # mixture-of-experts layers, each expert split as a pair

    def __bool__(self) -> bool:
        return bool(self.row)


def _weighted_product(res: LayerResult, roles: dict[str, str], shaped: Shaped) -> str | None:
    """The 2-D weight a matrix product multiplies by, if it is one."""
    if not is_product(res.layer):
        return None
    return next(
        (n for n in res.layer.inputs if roles.get(n) == "weight" and len(shaped.tensors[n].shape) == 2), None
    )


def find_pairs(
    shaped: Shaped, results: list[LayerResult], roles: dict[int, dict[str, str]], units: Units
) -> TensorParallel:
    weighted = {
        i for i, r in enumerate(results) if not r.folded and _weighted_product(r, roles.get(i, {}), shaped)
    }
    column, row, split, weights = set(), set(), set(), set()
    fertile, to_output = _reaching(shaped, results, weighted)
    for i in sorted(weighted):
        if not any(o in fertile for o in results[i].layer.outputs):
            continue  # its walk reaches no product (a row-parallel product's, along the residual stream)
        reached, passed = _walk(shaped, results, i, weighted, to_output)
        if reached:
            column.add(i)
            row |= reached
            split |= passed
    for i in column | row:
        weights.add(_weighted_product(results[i], roles[i], shaped))
    for i, res in enumerate(results):  # a column-parallel bias is added inside the split region
        if i not in column | row and any(o in split for o in res.layer.outputs):
            weights |= {n for n, role in roles.get(i, {}).items() if role in ("weight", "bias")}
    vocab = _vocabulary(shaped, results, roles, weighted)
    experts, expert_axes = _experts(results)
    column |= vocab.column
    row |= vocab.row | experts
    of = units.of_layer()
    axes = vocab.axes + expert_axes
    return TensorParallel(
        frozenset(column),
        frozenset(row),
        frozenset(split),
        frozenset(w for w in weights if w) | {n for n, _ in axes},
        frozenset(of[i] for i in column | row),
        axes,
        frozenset(experts),
    )


# A fused mixture of experts (onnxruntime's com.microsoft.MoE): each expert's first matrices (and
# their biases) split by their output rows, its last by its input columns, as Megatron-LM's expert
# tensor parallelism splits them (--expert-tensor-parallel-size defaults to the tensor-parallel
# degree): input position -> the axis split.
EXPERT_AXES = {2: 1, 3: 1, 4: 2, 6: 1, 7: 1}


def _experts(results: list[LayerResult]) -> tuple[set[int], tuple[tuple[str, int], ...]]:
    """The mixture-of-experts layers and their split weights; each output is all-reduced (row-parallel)."""
    layers, axes = set(), []
    for i, res in enumerate(results):
        if res.layer.op_type == "MoE" and res.layer.domain == "com.microsoft" and not res.folded:
            layers.add(i)
            axes += [(res.layer.inputs[k], axis) for k, axis in EXPERT_AXES.items()
                     if k < len(res.layer.inputs) and res.layer.inputs[k]]
    return layers, tuple(axes)


@dataclass(frozen=True)
class _Vocabulary:
    column: set[int]  # the heads
    row: set[int]  # the embeddings
    axes: tuple[tuple[str, int], ...]


def _vocabulary(shaped: Shaped, results: list[LayerResult], roles: dict[int, dict[str, str]],
                weighted: set[int]) -> _Vocabulary:
    """The vocabulary-parallel head and embedding: each head marked with its loss, the tensors from its
    matrix product to the logits, and every embedding (a Gather from a weight) of the same vocabulary."""
    column, row, axes = set(), set(), []
    for i, res in enumerate(results):
        if not res.layer.meta.get(LOSS_KEY) or res.folded:
            continue
        logits = res.layer.outputs[0]
        vocab = shaped.tensors[logits].shape[-1]
        head = max((j for j in weighted if j <= i and _feeds(shaped, results, j, logits)), default=None)
        if head is None:
            continue
        column.add(head)
        matrix = _weighted_product(results[head], roles.get(head, {}), shaped)
        if matrix is not None:
            axes.append((matrix, list(shaped.tensors[matrix].shape).index(vocab)))
        axes += [(o, -1) for j in range(head, i + 1) for o in results[j].layer.outputs
                 if o and shaped.tensors[o].known and shaped.tensors[o].shape[-1:] == (vocab,)]
        for j, r in enumerate(results):
            table = r.layer.inputs[0] if r.layer.op_type == "Gather" and r.layer.inputs else ""
            if roles.get(j, {}).get(table) == "weight" and shaped.tensors[table].shape[:1] == (vocab,):
                row.add(j)
                axes.append((table, 0))
    return _Vocabulary(column, row, tuple(dict(axes).items()))


def _feeds(shaped: Shaped, results: list[LayerResult], j: int, logits: str) -> bool:
    """Whether product ``j``'s output is ``logits`` or reaches it through views (and a bias) alone."""
    name = results[j].layer.outputs[0]
    while name != logits:
        nxt = [k for k in shaped.consumers(name) if results[k].layer.op_type in VIEWS | {"Add"}]  # a bias
        if len(nxt) != 1:
            return False
        name = results[nxt[0]].layer.outputs[0]
    return True


def _onward(res: LayerResult, j: int, weighted: set[int]) -> bool:
    """Whether the walk goes on through layer ``j``: not a weighted product, a norm's start or folded."""
    return j not in weighted and res.layer.op_type not in NORM_STARTS and not res.folded


def _reaching(shaped: Shaped, results: list[LayerResult], weighted: set[int]) -> tuple[set[str], set[str]]:
    """The activations from which ``_walk`` would reach a weighted product or the model's output, and
    those from which it would reach the output. Found once, backwards over the execution order, so
    that no walk follows the residual stream to the end of the model (a row-parallel product's walk
    reaches neither, or the output: finding the pairs was quadratic in the depth)."""
    fertile: set[str] = set()
    to_output: set[str] = set()
    for res in reversed(results):
        for name in res.layer.outputs:
            if not name or shaped.tensors[name].role not in (Role.ACTIVATION, Role.OUTPUT):
                continue
            onward = [results[j].layer.outputs for j in shaped.consumers(name) if _onward(results[j], j, weighted)]
            if name in shaped.outputs or any(o in to_output for outs in onward for o in outs):
                to_output.add(name)
            if name in to_output or any(o in fertile for outs in onward for o in outs) or any(
                    j in weighted for j in shaped.consumers(name)):
                fertile.add(name)
    return fertile, to_output


def _walk(shaped: Shaped, results: list[LayerResult], start: int, weighted: set[int],
          to_output: set[str]) -> tuple[set[int], set[str]]:
    """From a product's outputs forward to the weighted products they reach before a norm."""
    reached: set[int] = set()
    passed: set[str] = set()
    todo = [o for o in results[start].layer.outputs if o]
    while todo:
        name = todo.pop()
        if name in passed or shaped.tensors[name].role not in (Role.ACTIVATION, Role.OUTPUT):
            continue
        if name in to_output:
            return set(), set()  # reaches the model's output (an LM head): not a pair
        passed.add(name)
        for j in shaped.consumers(name):
            if j in weighted:
                reached.add(j)
            elif _onward(results[j], j, weighted):
                todo.extend(o for o in results[j].layer.outputs if o)
    return (reached, passed) if reached else (set(), set())


def along(shape: tuple[int, ...], axis: int, t: int) -> tuple[int, ...]:
    """``shape`` with ``axis`` split ``t`` ways, rounded up (a padded shard)."""
    axis %= len(shape)
    return (*shape[:axis], -(-shape[axis] // t), *shape[axis + 1 :])


def divides(shape: tuple[int, ...], t: int) -> tuple[int, ...] | None:
    """``shape`` with its last axis that ``t`` divides divided (None: no axis splits evenly)."""
    for k in reversed(range(len(shape))):
        if shape[k] % t == 0:
            return (*shape[:k], shape[k] // t, *shape[k + 1 :])
    return None


def rank_view(
    shaped: Shaped, results: list[LayerResult], tp: TensorParallel, units: Units, t: int, sequence_parallel: bool,
    gathered: bool = False, float_dtype: str | None = None,
) -> tuple[Shaped, list[LayerResult]] | None:
    """The graph one of ``t`` ranks holds and its layers, whose own saved state (a norm's statistics)
    is split with their outputs (None when a split tensor does not divide by ``t``). ``gathered``: under
    sequence parallelism the column-parallel layers save their input all-gathered whole
    (``gathered_inputs``), at ``float_dtype``."""
    names = set(tp.split) | set(tp.weights)
    if sequence_parallel:
        of = units.of_layer()
        names |= {
            o
            for i, r in enumerate(results)
            if of[i] in tp.units
            for o in r.layer.outputs
            if o and shaped.tensors[o].role in (Role.ACTIVATION, Role.OUTPUT)
        }
    tensors = dict(shaped.tensors)
    axes = dict(tp.axes)
    for name in names:
        v = tensors[name]
        shape = along(v.shape, axes[name], t) if name in axes else divides(v.shape, t)
        if shape is None:
            return None
        tensors[name] = dataclasses.replace(v, shape=shape)
    layers = [
        _split_experts(shaped, r, t) if i in tp.experts
        else dataclasses.replace(r, out=dataclasses.replace(r.out, saves_extra_bytes=r.out.saves_extra_bytes // t))
        if r.out.saves_extra_bytes and r.layer.outputs and r.layer.outputs[0] in names
        else r
        for i, r in enumerate(results)
    ]
    layers = [_vocab_parallel_loss(r) if r.layer.meta.get(LOSS_KEY) and r.layer.outputs[0] in axes else r
              for r in layers]
    if sequence_parallel and gathered:
        layers = gathered_inputs(shaped, tensors, layers, tp, names, float_dtype)
    return dataclasses.replace(shaped, tensors=tensors), layers


def gathered_inputs(shaped: Shaped, tensors: dict, layers: list[LayerResult], tp: TensorParallel, split: set[str],
                    float_dtype: str | None) -> list[LayerResult]:
    """DTensor's sequence parallelism (torchtitan's plan: PrepareModuleInput from Shard(1) to
    Replicate before the column-parallel q, k, v and w1/w3): each sequence-split input of the
    column-parallel layers is all-gathered once, and the gathered tensor is what their products save
    for backward -- the shard's bytes, then, and the rest of the whole (t - 1 of t parts) as the first
    reader's own saved bytes, kept to its backward (measured: the bench's tp_sp)."""
    out, seen = list(layers), set()
    for i in sorted(tp.column):
        name = out[i].layer.inputs[0] if out[i].layer.inputs else ""
        if name not in split or name in seen:
            continue
        seen.add(name)
        rest = shaped.tensors[name].nbytes(float_dtype) - tensors[name].nbytes(float_dtype)
        out[i] = dataclasses.replace(out[i], out=dataclasses.replace(
            out[i].out, saves_extra_bytes=out[i].out.saves_extra_bytes + rest))
    return out


def _split_experts(shaped: Shaped, res: LayerResult, t: int) -> LayerResult:
    """A mixture of experts on one of ``t`` ranks: each routed copy of a row stays whole (every rank
    computes every token's share of its experts), the experts' intermediates are 1/t (``ops.moe``
    saves rows x k x (hidden + fc1 rows + fc2 columns))."""
    hidden = shaped.tensors[res.layer.inputs[0]].shape[-1]
    fc1, fc2 = shaped.tensors[res.layer.inputs[2]].shape, shaped.tensors[res.layer.inputs[4]].shape
    inner = fc1[1] + fc2[2]
    extra = res.out.saves_extra_bytes * (hidden + -(-inner // t)) // (hidden + inner)
    return dataclasses.replace(res, out=dataclasses.replace(res.out, saves_extra_bytes=extra))


def _vocab_parallel_loss(res: LayerResult) -> LayerResult:
    """A head whose logits are split by the vocabulary is trained on the vocabulary-parallel loss."""
    layer = dataclasses.replace(res.layer, meta={**res.layer.meta, LOSS_KEY: VOCAB_PARALLEL})
    return dataclasses.replace(res, layer=layer)


def all_reduce_bytes(
    shaped: Shaped, results: list[LayerResult], tp: TensorParallel, t: int, float_dtype: str | None
) -> int:
    """Bytes each rank sends per micro-batch, forward and backward: a ring all-reduce of the
    row-parallel outputs (forward) and of the column-parallel inputs' gradients (backward), each
    2 (t - 1) / t of the tensor (with sequence parallelism, an all-gather and a reduce-scatter: the same)."""
    outs = {o for i in tp.row for o in results[i].layer.outputs if o}
    ins = {
        n
        for i in tp.column
        for n in results[i].layer.inputs
        if n and n not in tp.weights and shaped.tensors[n].role in (Role.ACTIVATION, Role.INPUT)
    }
    size = sum(shaped.tensors[n].nbytes(float_dtype) for n in outs | ins)
    return size * 2 * (t - 1) // t
