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

from archcalc.analysis.estimate import Estimate
from archcalc.analysis.memory.liveness import input_bytes
from archcalc.analysis.memory.step_peak import StepProfile, step_profile, training_owners
from archcalc.analysis.memory.training import Trainable, trainable
from archcalc.analysis.patterns import attention_core
from archcalc.analysis.plan import checkpointing as ck
from archcalc.analysis.plan.tensor_parallel import TensorParallel, all_reduce_bytes, find_pairs, rank_view
from archcalc.analysis.plan.units import Units
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
        return tuple(
            ck.crossing_bytes(side.shaped, side.results, self.float_dtype)  # type: ignore[return-value]
            for side in self.sides
        )

    def boundaries(self, b: int, starts: list[int]) -> list[int]:
        """Bytes of the activations crossing into each position in ``starts``, at micro-batch ``b``."""
        one, two = self._crossing
        return [int(one[s] + (b - 1) * (two[s] - one[s])) for s in starts]

    def runs(self, b: int) -> ck.Runs:
        """The checkpoint planner's account at micro-batch ``b`` (see ``checkpointing.Runs``)."""
        cuts = self._cuts
        n = len(cuts) - 1
        sides = []
        for side, est in zip(self.sides, self.ests):
            p = side.profile
            at = np.searchsorted(cuts, np.arange(len(p.names)), "right") - 1  # each layer's interval
            dropped = np.zeros((n + 1, n + 1))
            np.add.at(dropped, (at, at), p.extra.astype(np.float64))
            for storage, layers in p.savers.items():
                dropped[at[layers[0]], at[layers[-1]]] += p.storages[storage][1]
            # runs i .. j-1 free the storages whose savers all lie in them: first interval >= i, last < j
            freed = np.cumsum(np.cumsum(dropped[::-1], axis=0)[::-1], axis=1)
            full = np.zeros((n + 1, n + 1))
            full[:, 1:] = freed[:, :-1]
            held = [int(p.saved_first[a:e].sum()) for a, e in zip(cuts, cuts[1:])]
            flops = [layer_flops(est, range(a, e)) // self.tp for a, e in zip(cuts, cuts[1:])]
            sides.append((full, held, flops, int(p.saved[-1]) if len(p.saved) else 0))
        (d1, h1, f1, t1), (d2, h2, f2, t2) = sides
        inputs = self.boundaries(b, cuts[:-1])
        return ck.Runs(
            d1 + (b - 1) * (d2 - d1),
            [x + (b - 1) * (y - x) for x, y in zip(h1, h2)],
            inputs,
            self._shared(inputs),
            [b * x for x in f1],
            t1 + (b - 1) * (t2 - t1),
            cuts,
        )

    @cached_property
    def _cuts(self) -> list[int]:
        return ck.cut_points(self.shaped, self.results)

    def _shared(self, inputs: list[int]) -> list[int]:
        """Per cut, the bytes crossing it that the interval before saves (its output, kept once)."""
        cuts, p = self._cuts, self.sides[0].profile
        owner = training_owners(self.shaped, self.results, self.float_dtype)
        out = [0]
        for x, names, a, e in zip(
            inputs[1:], ck.crossing_tensors(self.shaped, self.results, cuts[1:-1]), cuts, cuts[1:]
        ):
            mine = any(owner.get(n, n) in p.storages and a <= p.storages[owner.get(n, n)][0] < e for n in names)
            out.append(x if mine else 0)
        return out

    def mode(
        self, checkpoint: str, segments: ck.Segments | None = None
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
        """(forward at 1 and 2, saved at 1 and 2, recompute FLOPs per sample) under ``checkpoint``
        ("planned": the runs ``segments`` names are checkpointed)."""
        key = (checkpoint, segments)
        if key not in self._modes:
            self._modes[key] = self._mode(checkpoint, segments)
        return self._modes[key]

    def _mode(self, checkpoint: str, segments: ck.Segments | None):
        fw, sv, flops = [], [], 0
        for side, est in zip(self.sides, self.ests):
            p, results = side.profile, side.results
            if checkpoint == "none":
                f, s = p.forward, p.saved
            elif checkpoint in ("full", "planned"):
                seg = unit_segments(self.units) if checkpoint == "full" else segments
                if seg is None:
                    raise InputError("ckpt=planned: the plan chooses its segments (Planner.row); none given")
                owner = training_owners(side.shaped, results, est.float_dtype)
                f, s = ck.recomputed(p, seg, ck.kept_inputs(side.shaped, results, seg, p, owner, est.float_dtype))
                flops = layer_flops(
                    est,
                    [
                        i
                        for k, c in enumerate(seg.checkpointed)
                        if c
                        for i in range(seg.bounds[k], seg.bounds[k + 1])
                    ],
                )
            elif checkpoint == "selective":
                drop, tensors, layers = attention_core(side.shaped, results)
                owner = training_owners(side.shaped, results, est.float_dtype)
                f, s = ck.selective(p, drop, tensors, owner)
                flops = layer_flops(est, sorted(layers))
            else:
                raise InputError(f"--strategy ckpt={checkpoint}: choose one of {', '.join(ck.MODES)}")
            fw.append(f)
            sv.append(s)
        return (fw[0], fw[1]), (sv[0], sv[1]), flops // max(self.tp, 1)


def unit_segments(units: Units) -> ck.Segments:
    """Every repeated unit checkpointed, the layers between them stored."""
    bounds = tuple(u.start for u in units.units) + (units.units[-1].stop,)
    return ck.Segments(bounds, tuple(u.repeated for u in units.units))


def layer_flops(est: Estimate, layers) -> int:
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
