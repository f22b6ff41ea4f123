"""Does a model fit a memory budget, and up to what batch?

Memory is affine in the batch for fixed shapes (every activation scales with it, weights do not),
so the largest batch is solved from two evaluations and then checked exactly at the answer and one
past it; where rounding or the load peak bends the line, a binary search settles it.
"""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.analysis.estimate import Estimate, analyse
from archcalc.errors import InputError
from archcalc.frontends.sources import load_graph

MAX_BATCH = 1 << 24


@dataclass
class Verdict:
    """One batch size against the budget. ``terms`` are the memory terms by name, in bytes."""

    batch: int
    total: int
    capacity: int
    terms: dict[str, int]
    steady: int  # the total without load-time transients: the part that grows with the batch

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    @property
    def headroom(self) -> int:
        """Bytes left (negative: the shortfall)."""
        return self.capacity - self.total

    @property
    def largest_term(self) -> str:
        return max(self.terms, key=self.terms.get)


@dataclass
class FitSpec:
    """What is being fitted: the model, how it is run, and the budget."""

    source: object
    capacity: int
    mode: str = "inference"  # or "train"
    optimizer: str = "sgd"
    dtype: str | None = None
    runtime: str = "pytorch-cuda"
    overhead: int | None = None
    dims: dict | None = None
    inputs: dict | None = None

    def estimate(self, batch: int) -> Estimate:
        return analyse(load_graph(self.source), batch, self.dims, self.inputs, self.dtype)

    def verdict(self, batch: int) -> Verdict:
        est = self.estimate(batch)
        if self.mode == "train":
            tm = est.training_memory(self.optimizer)
            rt = est.inference_memory(self.runtime, self.overhead).runtime
            terms = {"weights": tm.weights + tm.master_weights, "gradients": tm.gradients,
                     "optimizer state": tm.optimizer_state, "saved activations": tm.saved_activations,
                     "backward transient": tm.backward_transient, "inputs": tm.inputs, "runtime": rt}
            return Verdict(batch, sum(terms.values()), self.capacity, terms, sum(terms.values()))
        if self.mode != "inference":
            raise InputError(f"--mode {self.mode}: choose inference or train")
        im = est.inference_memory(self.runtime, self.overhead)
        terms = {"weights": im.weights, "inputs": im.inputs, "activation peak": im.activations_held,
                 "runtime": im.runtime}
        if im.load_peak > im.steady:
            terms["load transient"] = im.load_peak - im.steady
        return Verdict(batch, im.total, self.capacity, terms, im.steady)


def largest_batch(spec: FitSpec) -> Verdict | None:
    """The largest batch that fits (its verdict), or None when not even batch 1 fits."""
    one, two = spec.verdict(1), spec.verdict(2)
    if not one.fits:
        return None
    slope = two.steady - one.steady
    if slope <= 0:
        raise InputError("memory does not grow with the batch: the model's batch dim is fixed; "
                         "re-export it with a dynamic batch axis")
    guess = max(1, min(MAX_BATCH, 1 + (spec.capacity - one.steady) // slope))
    at, past = spec.verdict(guess), spec.verdict(guess + 1)
    if at.fits and not past.fits:
        return at
    lo, hi = 1, MAX_BATCH  # not affine here: the invariant is verdict(lo) fits, verdict(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if spec.verdict(mid).fits:
            lo = mid
        else:
            hi = mid
    return spec.verdict(lo)
