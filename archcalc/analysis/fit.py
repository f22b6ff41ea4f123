"""Does a model fit a memory budget, and up to what batch?

Memory is affine in the batch for fixed shapes (every activation scales with it, weights do not),
so the largest batch is solved from two evaluations and then checked exactly at the answer and one
past it; where rounding or the load peak bends the line, a search between a batch that fits and one
that does not settles it (false position, safeguarded by halving). The graph is loaded once and
analysed once at each batch tried (``Estimates``), whatever the GPU or mode asking.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from archcalc.analysis.estimate import Estimate, Estimates
from archcalc.analysis.gpus import GPU
from archcalc.analysis.walk.infer import batch_fixed
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.errors import InputError
from archcalc.ir import Graph
from archcalc.units import MAX_SIZE

MAX_BATCH = MAX_SIZE  # the largest batch archcalc prices, as any size a user gives
MODES = ("inference", "train")


@dataclass(frozen=True)
class Verdict:
    """One batch size against the budget. ``terms`` are the memory terms by name, in bytes;
    ``total`` is the figure judged (for training the step's peak, which ``upper_bound``, every
    term at once, exceeds)."""

    batch: int
    total: int
    capacity: int
    terms: dict[str, int]
    steady: int  # the total without load-time transients: the part that grows with the batch
    upper_bound: int | None = None
    fixed: bool = False  # the file fixes the batch: this is the model as it is, not a searched batch
    status: str = "exact"  # what the estimate's sizes are (Totals.status): a bound makes the total one

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    @property
    def headroom(self) -> int:
        """Bytes left (negative: the shortfall)."""
        return self.capacity - self.total

    @property
    def at_bound(self) -> bool:
        """The batch is the largest archcalc prices, and it fits: more would too."""
        return self.batch == MAX_BATCH and self.fits

    @property
    def largest_term(self) -> str:
        return max(self.terms, key=lambda k: self.terms[k])

    def to_dict(self) -> dict:
        """The verdict as plain data (the JSON contract's ``verdicts`` rows)."""
        return {"batch": self.batch, "fits": self.fits, "total": self.total, "headroom": self.headroom,
                "largest_term": self.largest_term, "terms": self.terms, "upper_bound": self.upper_bound,
                "status": self.status}


@dataclass(frozen=True)
class FitSpec:
    """What is being fitted: the graph, how it is run, and the budget."""

    graph: Graph
    capacity: int
    mode: str = "inference"  # or "train"
    optimizer: str = DEFAULT_OPTIMIZER
    dtype: str | None = None
    runtime: str = "pytorch-cuda"
    overhead: int | None = None
    dims: dict | None = None
    inputs: dict | None = None
    estimates: Estimates | None = field(default=None, repr=False, compare=False)  # shared with other specs

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode}: choose inference or train")
        if self.estimates is None:
            object.__setattr__(self, "estimates", Estimates(self.graph, self.dims, self.inputs, self.dtype))

    def estimate(self, batch: int) -> Estimate:
        assert self.estimates is not None
        return self.estimates.at(batch)

    @property
    def batch_fixed(self) -> bool:
        return batch_fixed(self.graph, self.dims, self.inputs)

    def verdict(self, batch: int) -> Verdict:
        est = self.estimate(batch)
        if self.mode == "train":
            tm = est.training_memory(self.optimizer, runtime=self.runtime, overhead=self.overhead)
            return Verdict(batch, tm.total, self.capacity, tm.terms(), tm.total, tm.terms_sum,
                           status=est.totals.status)
        im = est.inference_memory(self.runtime, self.overhead)
        return Verdict(batch, im.total, self.capacity, im.terms(), im.steady, status=est.totals.status)


def largest_batch(spec: FitSpec) -> Verdict | None:
    """The largest batch that fits (its verdict), or None when not even batch 1 fits. A model whose
    file fixes the batch has no batch to search: its verdict as it is, marked ``fixed``."""
    if spec.batch_fixed:
        one = spec.verdict(1)
        return replace(one, fixed=True) if one.fits else None
    one, two = spec.verdict(1), spec.verdict(2)
    if not one.fits:
        return None
    slope = two.steady - one.steady
    if slope <= 0:
        raise InputError("memory does not grow with the batch: the model's batch dim is fixed; "
                         "re-export it with a dynamic batch axis")
    guess = max(1, min(MAX_BATCH, 1 + (spec.capacity - one.steady) // slope))
    at = spec.verdict(guess)
    if guess == MAX_BATCH and at.fits:
        return at  # fits even at the bound: the answer is "at least MAX_BATCH" (see ``at_bound``)
    past = spec.verdict(guess + 1)
    if at.fits and not past.fits:
        return at
    if at.fits:
        return _climb(spec, past)
    return _settle(spec, two if two.fits else one, at)


def _climb(spec: FitSpec, lo: Verdict) -> Verdict:
    """Past the line's answer and still fitting: steps doubling up from ``lo`` until one does not
    fit (or the bound is reached, which fits: the answer is "at least MAX_BATCH")."""
    step = 1
    while True:
        nxt = spec.verdict(min(lo.batch + step, MAX_BATCH))
        if not nxt.fits:
            return _settle(spec, lo, nxt)
        if nxt.batch == MAX_BATCH:
            return nxt
        lo, step = nxt, step * 2


def _settle(spec: FitSpec, lo: Verdict, hi: Verdict) -> Verdict:
    """The largest fitting batch between ``lo`` (fits) and ``hi`` (does not). Memory is a convex
    polyline in the batch (each moment of the step a line; the total their maximum), so the chord
    between the two ends finds the segment in a step or two: false position, with a halving step
    whenever the same end was kept twice in a row, which bounds the search by bisection's."""
    last, same = None, 0  # the end the last step kept, and how many steps in a row kept it
    while hi.batch - lo.batch > 1:
        rise = hi.total - lo.total
        mid = (lo.batch + hi.batch) // 2
        if same < 2 and rise > 0:
            mid = lo.batch + (spec.capacity - lo.total) * (hi.batch - lo.batch) // rise
        at = spec.verdict(min(max(mid, lo.batch + 1), hi.batch - 1))
        same = same + 1 if at.fits == last else 1
        last = at.fits
        lo, hi = (at, hi) if at.fits else (lo, at)
    return lo


@dataclass(frozen=True)
class FitRow:
    """The largest batch of each mode on one GPU (0: not even batch 1 fits)."""

    gpu: str
    capacity: int
    largest: dict[str, int]


def fit_table(graph: Graph, gpus: list[GPU], optimizer: str = DEFAULT_OPTIMIZER, dims=None, inputs=None,
              estimates: Estimates | None = None) -> list[FitRow]:
    """For each GPU, the largest inference and training batch (PyTorch CUDA's constant)."""
    estimates = estimates or Estimates(graph, dims, inputs)
    if batch_fixed(graph, dims, inputs):
        raise InputError(f"{graph.source}: the batch is fixed in the file (" + ", ".join(
            f"{n} {list(graph.tensors[n].shape or ())}" for n in graph.inputs) + "): no largest batch to find; "
            "re-export with a dynamic batch axis for one")
    rows = []
    for card in gpus:
        largest = {}
        for mode in MODES:
            best = largest_batch(FitSpec(graph, card.capacity, mode, optimizer, dims=dims, inputs=inputs,
                                         estimates=estimates))
            largest[mode] = best.batch if best else 0
        rows.append(FitRow(card.name, card.capacity, largest))
    return rows


def batch_sweep(graph: Graph, batches: list[int], optimizer: str = DEFAULT_OPTIMIZER, dims=None,
                inputs=None, estimates: Estimates | None = None) -> dict[str, list[int]]:
    """The judged total of each mode at each batch: the memory-against-batch curve."""
    estimates = estimates or Estimates(graph, dims, inputs)
    return {mode: [FitSpec(graph, 0, mode, optimizer, dims=dims, inputs=inputs, estimates=estimates)
                   .verdict(b).total for b in batches] for mode in MODES}
