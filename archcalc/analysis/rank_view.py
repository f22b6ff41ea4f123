"""One rank's step account at any micro-batch: the graph analysed at micro-batches 1 and 2, as one
tensor-parallel rank holds it, with each checkpointing mode applied.

Every activation of a graph with fixed shapes grows linearly with the batch, so the account at
micro-batch b is the line through the two analyses (``at``): a plan over many strategies and
micro-batches analyses the graph twice, not once per point. The line is checked against a direct
analysis at the answer by the tests, as ``fit`` checks its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from archcalc.analysis import checkpointing as ck
from archcalc.analysis.estimate import Estimate
from archcalc.analysis.memory import input_bytes
from archcalc.analysis.partition import Units
from archcalc.analysis.step_peak import StepProfile, step_profile, training_owners
from archcalc.analysis.tensor_parallel import TensorParallel, all_reduce_bytes, find_pairs, rank_view
from archcalc.analysis.training import Trainable, trainable
from archcalc.dtypes import DTYPE_BYTES
from archcalc.errors import InputError
from archcalc.ir import Shaped


@dataclass(frozen=True)
class Side:
    """The account at one analysed micro-batch."""

    shaped: Shaped
    results: list  # the layers' results, their own saved state split as their outputs are
    profile: StepProfile
    inputs: int
    tp_bytes: int  # tensor parallelism's all-reduced bytes per micro-batch (0 without it)


@dataclass
class RankView:
    """One rank's graph (``tp`` ways split, with sequence parallelism or not) at micro-batches 1 and 2."""

    ests: tuple[Estimate, Estimate]
    units: Units
    tp: int
    sp: bool
    device: str
    pairs: TensorParallel
    sides: tuple[Side, Side] = field(init=False)
    _modes: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.sides = tuple(self._side(e) for e in self.ests)  # type: ignore[assignment]

    @property
    def float_dtype(self) -> str | None:
        return self.ests[0].float_dtype

    @property
    def width(self) -> int:
        return int(DTYPE_BYTES[self.float_dtype or "float32"])

    @cached_property
    def trained(self) -> Trainable:
        return trainable(self.sides[0].shaped, self.ests[0].param_roles)

    @property
    def shaped(self) -> Shaped:
        return self.sides[0].shaped

    @property
    def results(self):
        return self.sides[0].results

    def _side(self, est: Estimate) -> Side:
        shaped, results = est.graph, est.results
        if self.tp > 1:
            view = rank_view(shaped, est.results, self.pairs, self.units, self.tp, self.sp)
            if view is None:
                raise InputError(
                    f"tensor parallel {self.tp}: the split tensors of {shaped.name} do not divide "
                    f"by {self.tp} (heads, hidden units); choose a degree that divides them"
                )
            shaped, results = view
        roles = est.param_roles
        grad_at = trainable(shaped, roles).grad_at(shaped, DTYPE_BYTES[est.float_dtype or "float32"])
        profile = step_profile(shaped, results, est.float_dtype, grad_at, self.device)
        tp_bytes = (
            all_reduce_bytes(est.graph, est.results, self.pairs, self.tp, est.float_dtype) if self.tp > 1 else 0
        )
        return Side(shaped, results, profile, input_bytes(shaped, est.float_dtype), tp_bytes)

    def profile(self, b: int) -> StepProfile:
        return self.sides[0].profile if b == 1 else self.sides[1].profile

    def at(self, b: int, arrays: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The line through micro-batch 1's and 2's ``arrays``, at ``b``."""
        one, two = arrays
        return np.asarray(one + (b - 1) * (two - one))

    @cached_property
    def _crossing(self) -> tuple[np.ndarray, np.ndarray]:
        return tuple(ck.crossing_bytes(side.shaped, side.results, self.float_dtype)  # type: ignore[return-value]
                     for side in self.sides)

    def boundaries(self, b: int, starts: list[int]) -> list[int]:
        """Bytes of the activations crossing into each position in ``starts``, at micro-batch ``b``."""
        one, two = self._crossing
        return [int(one[s] + (b - 1) * (two[s] - one[s])) for s in starts]

    def mode(self, checkpoint: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
        """(forward at 1 and 2, saved at 1 and 2, recompute FLOPs per sample) under ``checkpoint``."""
        if checkpoint not in self._modes:
            self._modes[checkpoint] = self._mode(checkpoint)
        return self._modes[checkpoint]

    def _mode(self, checkpoint: str):
        fw, sv, flops = [], [], 0
        for side, est in zip(self.sides, self.ests):
            p, results = side.profile, side.results
            if checkpoint == "none":
                f, s = p.forward, p.saved
            elif checkpoint == "full":
                seg = unit_segments(self.units)
                f, s = ck.recomputed(
                    p, seg, ck.boundary_bytes(side.shaped, results, list(seg.bounds[:-1]), est.float_dtype)
                )
                flops = layer_flops(
                    est, [i for u in self.units.units if u.repeated for i in range(u.start, u.stop)]
                )
            elif checkpoint == "selective":
                drop, tensors, layers = ck.attention_core(side.shaped, results)
                owner = training_owners(side.shaped, results, est.float_dtype)
                f, s = ck.selective(p, drop, tensors, owner)
                flops = layer_flops(est, sorted(layers))
            else:
                raise InputError(f"--checkpoint {checkpoint}: choose one of {', '.join(ck.MODES)}")
            fw.append(f)
            sv.append(s)
        return (fw[0], fw[1]), (sv[0], sv[1]), flops // max(self.tp, 1)


def unit_segments(units: Units) -> ck.Segments:
    """Every repeated unit checkpointed, the layers between them stored."""
    bounds = tuple(u.start for u in units.units) + (units.units[-1].stop,)
    return ck.Segments(bounds, tuple(u.repeated for u in units.units))


def layer_flops(est: Estimate, layers: list[int]) -> int:
    """Forward FLOPs per sample of these layers (results positions), from the estimate's costs."""
    want = set(layers)
    return sum(row.flops for row in est.layers_list if row.index in want) // max(est.batch, 1)


def make_view(ests: tuple[Estimate, Estimate], units: Units, tp: int, sp: bool, device: str) -> RankView:
    e = ests[0]
    pairs = find_pairs(e.graph, e.results, e.param_roles, units)
    if tp > 1 and not pairs:
        raise InputError(
            f"tensor parallel {tp}: {e.graph.name} has no column/row pair of matrix products "
            "(transformer blocks) to split"
        )
    return RankView(ests, units, tp, sp, device, pairs)
