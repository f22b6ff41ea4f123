"""Activation checkpointing on the step's account: what a checkpointed segment keeps, what it recomputes.

A checkpointed segment (PyTorch's ``torch.utils.checkpoint``, non-reentrant) keeps only its inputs
through the forward; at its backward it runs its forward again, so its saved tensors come back for
that segment alone. Full checkpointing does this for every repeated unit (each transformer layer,
as Megatron-LM's "full" recompute); selective (Korthikanti et al. 2022) recomputes only attention's
scores, softmax and its dropout, the s x s tensors, and keeps the rest; a plan picks the segments
under a memory budget with the least recompute.

The planner's segments are runs between the graph's cut points -- places in the execution order
where one activation alone passes from the layers before to the layers after, so a segment's input
is one tensor. Chen et al. 2016 checkpoint every one of sqrt(n) equal segments; the planner instead
chooses, for each run, to store it or to recompute it, minimising recompute under the budget
(a Lagrangian relaxation of the knapsack, solved by dynamic programming over cut points for each cap
on the largest recomputed segment).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.walk.infer import LayerResult
from archcalc.ir import Role, Shaped

# full: every repeated unit; selective: attention's core (Megatron-LM); op: torchtitan's per-op policy;
# everyN: every Nth repeated unit (torchtitan's per-layer option); uniformN: runs of N repeated units,
# each recomputed whole, and blockN: the first N repeated units, each recomputed (Megatron-LM's
# recompute_method uniform|block with recompute_num_layers N); planned: segments chosen under a budget
MODES = ("none", "full", "selective", "op", "planned")
COUNTED = re.compile(r"(every|uniform|block)([1-9]\d*)$")
PER_STAGE = ("uniform", "block")  # Megatron-LM counts these within each pipeline stage


def known_mode(mode: str) -> bool:
    return mode in MODES or COUNTED.match(mode) is not None


@dataclass(frozen=True)
class Segments:
    """Contiguous runs of layers, ``bounds[k]`` .. ``bounds[k + 1] - 1``, and which are checkpointed."""

    bounds: tuple[int, ...]
    checkpointed: tuple[bool, ...]


def _spans(shaped: Shaped, results: list[LayerResult]) -> Iterator[tuple[str, int, int]]:
    """Every activation read after the layer that makes it: (name, producer, last reader). It crosses
    each position after its producer up to its last reader."""
    for i, res in enumerate(results):
        if res.folded:
            continue
        for name in res.layer.outputs:
            t = shaped.tensors.get(name) if name else None
            if t is None or t.role not in (Role.ACTIVATION, Role.OUTPUT):
                continue
            last = max((j for j in shaped.consumers(name) if not results[j].folded), default=i)
            if last > i:
                yield name, i, last


def crossing_bytes(shaped: Shaped, results: list[LayerResult], float_dtype: str | None) -> np.ndarray:
    """For every position, the bytes of the activations made before it and read at or after it."""
    spans = [
        (i + 1, last + 1, shaped.tensors[name].nbytes(float_dtype)) for name, i, last in _spans(shaped, results)
    ]
    # Exact: int64 while the sums fit, Python's integers beyond (see step_peak.step_profile).
    diff = np.zeros(len(results) + 2, dtype=np.int64 if 2 * sum(x for *_, x in spans) < 2**62 else object)
    for start, stop, size in spans:
        diff[start] += size
        diff[stop] -= size
    return np.cumsum(diff)


def crossing_tensors(shaped: Shaped, results: list[LayerResult], positions: list[int]) -> list[list[str]]:
    """For each position, the activations made before it and read at or after it."""
    want = sorted(set(positions))
    out: dict[int, list[str]] = {p: [] for p in want}
    for name, i, last in _spans(shaped, results):
        for p in want[bisect.bisect_right(want, i):bisect.bisect_right(want, last)]:  # i < p <= last
            out[p].append(name)
    return [out[p] for p in positions]


def kept_inputs(
    shaped: Shaped,
    results: list[LayerResult],
    seg: Segments,
    profile: StepProfile,
    owner: dict[str, str],
    float_dtype: str | None,
    also: list[set[str]] | None = None,
) -> list[int]:
    """The bytes each checkpointed run keeps for its recomputation: the activations crossing into it
    and the storages ``also[k]`` names (a selective policy's), less those a stored layer saves anyway
    (the same storage, kept once)."""
    bounds = list(seg.bounds[:-1])
    stored = np.zeros(len(results) + 1, dtype=bool)
    for k, c in enumerate(seg.checkpointed):
        stored[seg.bounds[k] : seg.bounds[k + 1]] = not c
    out = []
    for k, names in enumerate(crossing_tensors(shaped, results, bounds)):
        storages = set()
        if seg.checkpointed[k]:
            storages = {owner.get(n, n) for n in names} | (also[k] if also else set())
        out.append(
            sum(
                shaped.tensors[st].nbytes(float_dtype)
                for st in storages
                if not (st in profile.storages and stored[profile.storages[st][0]])
            )
        )
    return out


# torchtitan's selective op policy (torchtitan/distributed/activation_checkpoint.py, SelectiveAC):
# inside each checkpointed block the outputs of compute-intensive ops are kept
# (torch._functorch.partitioners.get_default_op_list().compute_intensive_ops -- mm, bmm, addmm,
# convolution -- and the SDPA kernels, whose whole output tuple is kept: the output and the
# log-sum-exp), except every second matmul by a weight (mm/linear, counted per block invocation from
# 1: the 2nd, 4th, ... recomputed); the rest is recomputed at the block's backward. A linear layer
# with a bias runs as addmm (aten's linear on a contiguous 2-D or 3-D input), a compute-intensive op
# the alternation does not count: kept always, its output the bias add's.
KEPT_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention")


@dataclass(frozen=True)
class Policy:
    """What a selective policy keeps of each run: output storages, extra bytes (an attention's
    log-sum-exp), and the layers it does not recompute."""

    storages: list[set[str]]
    extra: list[int]
    kept_layers: frozenset[int]


def op_policy(shaped: Shaped, results: list[LayerResult], seg: Segments, owner: dict[str, str]) -> Policy:
    """torchtitan's op policy (``KEPT_OPS``) over ``seg``'s checkpointed runs."""
    storages: list[set[str]] = []
    extra, kept = [], set()
    for k, c in enumerate(seg.checkpointed):
        names, size, matmuls = set(), 0, 0
        for i in range(seg.bounds[k], seg.bounds[k + 1]) if c else ():
            res = results[i]
            if res.folded or res.layer.op_type not in KEPT_OPS or not res.layer.outputs[0]:
                continue
            by_weight = any(shaped.tensors[n].role == Role.WEIGHT for n in res.layer.inputs if n in shaped.tensors)
            out = res.layer.outputs[0]
            biased = _bias_add(shaped, results, out) if res.layer.op_type == "MatMul" and by_weight else None
            if biased is not None:  # addmm: kept, the bias add's output
                out = biased
            elif res.layer.op_type == "Gemm" and len(res.layer.inputs) > 2 and res.layer.inputs[2]:
                pass  # a Gemm with its bias: addmm, kept
            elif res.layer.op_type in ("MatMul", "Gemm") and by_weight:  # mm / linear, not bmm
                matmuls += 1
                if matmuls % 2 == 0:
                    continue
            names.add(owner.get(out, out))
            size += res.out.saves_extra_bytes if res.layer.op_type == "Attention" else 0
            kept.add(i)
        storages.append(names)
        extra.append(size)
    return Policy(storages, extra, frozenset(kept))


def _bias_add(shaped: Shaped, results: list[LayerResult], product: str) -> str | None:
    """The output of the bias add a product's only reader is (a linear layer with a bias), or None."""
    readers = shaped.consumers(product)
    if len(readers) != 1:
        return None
    layer = results[readers[0]].layer
    bias = [n for n in layer.inputs if n != product]
    if layer.op_type == "Add" and len(bias) == 1 and bias[0] in shaped.tensors and \
            shaped.tensors[bias[0]].role == Role.WEIGHT and len(shaped.tensors[bias[0]].shape or ()) == 1:
        return layer.outputs[0]
    return None


def at_rest(saved: np.ndarray) -> np.ndarray:
    """The saved bytes before each layer and after the last (n + 1 entries) when the running sum
    ``saved`` never drops: no run recomputed, each layer adds to what the ones before it keep."""
    return np.concatenate([np.zeros(1, dtype=saved.dtype), saved])


def recomputed(profile: StepProfile, seg: Segments, inputs: list[int]) -> tuple[np.ndarray, ...]:
    """(forward, saved, rest) of the profile with ``seg``'s checkpointed runs keeping only their
    inputs (``inputs[k]``: the bytes run k keeps, see ``kept_inputs``) until their own backward
    recomputes them. A storage a stored layer also saves stays (at its first saver, as before). While
    a run runs (forward, or recomputed for its backward) its input is one of its own tensors, as the
    profile has it: the input it keeps is counted from the next run on. So ``saved`` rises and falls
    within a checkpointed run; ``rest`` (n + 1 entries, as ``at_rest``) is what the layers before
    each position leave kept once their runs are over -- the base a pipeline stage starting there
    stands on, and what a micro-batch in flight holds of a stage."""
    n = len(profile.names)
    run = np.zeros(n, dtype=np.int64)
    for k in range(len(seg.checkpointed)):
        run[seg.bounds[k] : seg.bounds[k + 1]] = k
    ck = np.array(seg.checkpointed, dtype=bool)[run]
    dropped = np.where(ck, profile.saved_first, 0)
    for storage, layers in profile.savers.items():
        if ck[layers[0]] and not ck[list(layers)].all():
            dropped[layers[0]] -= profile.storages[storage][1]  # still kept: a stored layer saves it too
    ck_cum = np.cumsum(dropped)
    starts = np.array(seg.bounds[:-1], dtype=np.int64)[run]
    before = np.where(starts > 0, ck_cum[np.maximum(starts - 1, 0)], 0)
    kept = np.array([x if c else 0 for x, c in zip(inputs, seg.checkpointed)], dtype=np.int64)
    kept_before = np.concatenate([[0], np.cumsum(kept)])[run]  # inputs of checkpointed runs before this one
    rest = at_rest(profile.saved - ck_cum + kept_before + kept[run])
    return profile.forward - ck_cum + kept_before, profile.saved - before + kept_before, rest


def selective(
    profile: StepProfile, drop_extra: np.ndarray, tensors: set[str], owner: dict[str, str]
) -> tuple[np.ndarray, ...]:
    """(forward, saved, rest) with the attention core not kept: its storages and dropout masks
    recomputed (within a layer, so the running sum never drops)."""
    drop = np.where(drop_extra, profile.extra, 0).astype(np.int64)
    for storage in {owner.get(name, name) for name in tensors} & set(profile.storages):
        i, size = profile.storages[storage]
        drop[i] += size
    gone = np.cumsum(drop)
    return profile.forward - gone, profile.saved - gone, at_rest(profile.saved - gone)


def cut_points(shaped: Shaped, results: list[LayerResult]) -> list[int]:
    """Positions where exactly one activation crosses from the layers before to those after."""
    n = len(results)
    count = np.zeros(n + 2, dtype=np.int64)
    for _, i, last in _spans(shaped, results):
        count[i + 1] += 1
        count[last + 1] -= 1
    crossing = np.cumsum(count)
    active = [i for i in range(1, n) if not results[i].folded]
    return [0, *[i for i in active if crossing[i] == 1], n]


def sqrt_segments(cuts: list[int]) -> Segments:
    """Chen et al. 2016: about sqrt(n) runs of about sqrt(n) cut intervals each, all checkpointed."""
    intervals = len(cuts) - 1
    k = max(1, round(math.sqrt(intervals)))
    bounds = tuple(cuts[::k]) if cuts[::k][-1] == cuts[-1] else (*cuts[::k], cuts[-1])
    return Segments(bounds, tuple(True for _ in bounds[:-1]))


@dataclass(frozen=True)
class CheckpointPlan:
    segments: Segments
    saved_bytes: int  # the model the plan is optimised on: kept + the largest recomputed run's tensors
    recompute_flops: int


@dataclass(frozen=True)
class Runs:
    """The account the planner optimises over, per run of cut intervals ``i .. j - 1``:
    ``dropped[i, j]``: saved bytes freed by checkpointing the run (storages every saver of which lies
    in it, and its layers' own saved extras); ``held[i]``: saved bytes first kept in interval ``i``
    (the run's tensors while it is recomputed are those of its intervals); ``inputs[i]``: bytes
    crossing cut ``i``, ``shared[i]`` of which the interval before saves (kept once when it is
    stored); ``flops[i]``: forward FLOPs of interval ``i``; ``total``: all saved bytes."""

    dropped: np.ndarray
    held: list[int]
    inputs: list[int]
    shared: list[int]
    flops: list[int]
    total: int
    cuts: list[int]


def candidates(runs: Runs) -> list[CheckpointPlan]:
    """Checkpoint plans that trade recompute for memory as well as any can on the planner's account
    (each the optimum of recompute + lambda x kept for some lambda, with the recomputed runs' own
    tensors capped), least recompute first; the caller judges each on the whole step and keeps the
    first that fits. A Lagrangian relaxation: the plans between two of these are not offered."""
    h = np.concatenate([[0], np.cumsum(runs.held)]).astype(np.float64)
    f = np.concatenate([[0], np.cumsum(runs.flops)]).astype(np.float64)
    x, d = np.asarray(runs.inputs, dtype=np.float64), np.asarray(runs.shared, dtype=np.float64)
    found: dict[Segments, CheckpointPlan] = {}
    quantiles = np.quantile(np.asarray(runs.held, dtype=np.float64), np.linspace(0, 1, 12))
    for cap in sorted({float(v) for v in quantiles} | {float(h[-1])}):
        for lam in _lambdas(f[-1], max(h[-1], 1.0)):
            chosen = _dp(runs.dropped, h, f, x, d, cap, lam)
            if chosen is not None:
                p = _evaluate(chosen, runs, h, f, x, d)
                found.setdefault(p.segments, p)
    return sorted(found.values(), key=lambda p: (p.recompute_flops, p.saved_bytes))


def _lambdas(total_flops: float, total_saved: float) -> np.ndarray:
    return total_flops / total_saved * np.geomspace(1e-3, 1e3, 25)


def _dp(dropped, h, f, x, d, cap, lam) -> list[tuple[int, int, bool]] | None:
    """Runs (i, j, checkpointed) minimising recompute + lam x kept, recomputed runs' tensors capped at
    ``cap``; two states per cut: the run ending there was stored or checkpointed."""
    m = len(h) - 1
    stored, ckpt = np.full(m + 1, np.inf), np.full(m + 1, np.inf)
    stored[0] = 0.0
    back_s, back_c = [0] * (m + 1), [(0, False)] * (m + 1)
    for j in range(1, m + 1):
        stored[j] = min(stored[j - 1], ckpt[j - 1])
        back_s[j] = 0 if stored[j - 1] <= ckpt[j - 1] else 1
        starts = np.arange(j)
        run = np.where(h[j] - h[starts] <= cap, f[j] - f[starts] - lam * dropped[starts, j], np.inf)
        after_stored = stored[:j] + run + lam * (x[:j] - d[:j])
        after_ckpt = ckpt[:j] + run + lam * x[:j]
        a, b = int(np.argmin(after_stored)), int(np.argmin(after_ckpt))
        ckpt[j], back_c[j] = (
            (after_stored[a], (a, False)) if after_stored[a] <= after_ckpt[b] else (after_ckpt[b], (b, True))
        )
    if not np.isfinite(min(stored[m], ckpt[m])):
        return None
    chosen: list[tuple[int, int, bool]] = []
    j, in_ckpt = m, bool(ckpt[m] < stored[m])
    while j > 0:
        if in_ckpt:
            i, in_ckpt = back_c[j]
            chosen.append((i, j, True))
        else:
            in_ckpt, i = bool(back_s[j]), j - 1
            chosen.append((i, j, False))
        j = i
    return chosen[::-1]


def _evaluate(chosen, runs: Runs, h, f, x, d) -> CheckpointPlan:
    kept, before_stored = float(runs.total), True
    for i, j, c in chosen:
        if c:
            kept += x[i] - (d[i] if before_stored else 0.0) - runs.dropped[i, j]
        before_stored = not c
    largest = max((h[j] - h[i] for i, j, c in chosen if c), default=0.0)
    seg = Segments(tuple([runs.cuts[i] for i, _, _ in chosen] + [runs.cuts[-1]]), tuple(c for _, _, c in chosen))
    return CheckpointPlan(seg, int(kept + largest), int(sum(f[j] - f[i] for i, j, c in chosen if c)))
