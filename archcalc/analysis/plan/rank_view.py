"""One rank's step account at any micro-batch: the graph analysed at micro-batches 1 and 2, as one
tensor-parallel rank holds it, with each checkpointing mode applied. Whatever grows with the
micro-batch is a ``Line`` through the two analyses (see ``line``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from archcalc.analysis.estimate import Estimate
from archcalc.analysis.memory.liveness import input_bytes
from archcalc.analysis.memory.model_states import Trainable, trainable, training_width
from archcalc.analysis.memory.step_peak import StepProfile, step_profile, training_owners
from archcalc.analysis.patterns import attention_core
from archcalc.analysis.plan import checkpointing as ck
from archcalc.analysis.plan.line import Line
from archcalc.analysis.plan.tensor_parallel import TensorParallel, all_reduce_bytes, find_pairs, rank_view
from archcalc.analysis.plan.units import Units
from archcalc.errors import InputError
from archcalc.ir import LOSS_KEY, Shaped


@dataclass(frozen=True)
class Side:
    """The account at one analysed micro-batch."""

    shaped: Shaped
    results: list  # the layers' results, their own saved state split as their outputs are
    profile: StepProfile
    inputs: int
    tp_bytes: int  # tensor parallelism's all-reduced bytes per micro-batch (0 without it)


@dataclass(frozen=True)
class Account:
    """What one rank's step keeps under a checkpointing mode: the activations alive at each layer's
    forward and the saved state still needed at each layer's backward (``StepProfile.forward`` and
    ``.saved``, after checkpointing), the saved state at rest before each layer and after the last
    (``checkpointing.recomputed``'s ``rest``), and the forward FLOPs per sample that backward
    recomputes."""

    forward: Line
    saved: Line
    rest: Line
    recompute: int


@dataclass
class RankView:
    """One rank's graph (``tp`` ways split, with sequence parallelism or not) at micro-batches 1 and 2."""

    ests: tuple[Estimate, Estimate]
    units: Units
    tp: int
    sp: bool
    device: str
    pairs: TensorParallel
    # Sequence parallelism as DTensor runs it (PyTorch's engines): the column-parallel layers save the
    # input all-gathered whole; Megatron-LM saves the shard and gathers it again in backward.
    gathered: bool = False
    sides: tuple[Side, Side] = field(init=False)
    _modes: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.sides = tuple(self._side(e) for e in self.ests)  # type: ignore[assignment]

    @property
    def float_dtype(self) -> str | None:
        return self.ests[0].float_dtype

    @property
    def width(self) -> int:
        return training_width(self.float_dtype)

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
            view = rank_view(shaped, est.results, self.pairs, self.units, self.tp, self.sp, self.gathered,
                             est.float_dtype)
            if view is None:
                raise InputError(
                    f"{shaped.source}: --strategy tp{self.tp}: the split tensors of {shaped.name} do not "
                    f"divide by {self.tp} (heads, hidden units); choose a degree that divides them"
                )
            shaped, results = view
        roles = est.param_roles
        grad_at = trainable(shaped, roles).grad_at(shaped, training_width(est.float_dtype))
        profile = step_profile(shaped, results, est.float_dtype, grad_at, self.device)
        tp_bytes = (
            all_reduce_bytes(est.graph, est.results, self.pairs, self.tp, est.float_dtype) if self.tp > 1 else 0
        )
        return Side(shaped, results, profile, input_bytes(shaped, est.float_dtype), tp_bytes)

    @cached_property
    def grads(self) -> Line:
        """Activation gradients alive at each layer's backward (``StepProfile.grads``)."""
        return Line.through(self.sides, lambda side: side.profile.grads)

    @cached_property
    def loss(self) -> Line:
        """What the loss adds to the head's forward moment (``StepProfile.loss``)."""
        return Line.through(self.sides, lambda side: side.profile.loss)

    @cached_property
    def inputs(self) -> Line:
        """Bytes of the graph's inputs."""
        return Line.through(self.sides, lambda side: side.inputs)

    @cached_property
    def tp_bytes(self) -> Line:
        """Tensor parallelism's all-reduced bytes per micro-batch."""
        return Line.through(self.sides, lambda side: side.tp_bytes)

    @cached_property
    def outputs(self) -> Line:
        """Bytes of the graph's outputs a pipeline's last stage keeps of each micro-batch: PyTorch's
        schedules keep them (``return_outputs=True``), but not a language model's logits, which the
        engines that pipeline one reduce to the loss at once -- torchtitan steps its schedule with
        ``return_outputs=False`` (torchtitan/trainer.py), Megatron-LM's forward step returns the loss."""
        return Line.through(self.sides, lambda side: self._outputs(side, trained=False))

    @cached_property
    def trained_outputs(self) -> Line:
        """Bytes of the outputs a loss is taken over (a language model's logits)."""
        return Line.through(self.sides, lambda side: self._outputs(side, trained=True))

    def _outputs(self, side: Side, trained: bool) -> int:
        losses = {o for r in side.results if r.layer.meta.get(LOSS_KEY) for o in r.layer.outputs}
        return sum(side.shaped.tensors[o].nbytes(self.float_dtype) for o in side.shaped.outputs
                   if (o in losses) == trained)

    @cached_property
    def _crossing(self) -> Line:
        return Line.through(self.sides, lambda sd: ck.crossing_bytes(sd.shaped, sd.results, self.float_dtype))

    def boundaries(self, b: int, starts: list[int]) -> list[int]:
        """Bytes of the activations crossing into each position in ``starts``, at micro-batch ``b``."""
        crossing = self.crossing(b)
        return [int(crossing[s]) for s in starts]

    def crossing(self, b: int) -> np.ndarray:
        """Bytes of the activations crossing into every position, at micro-batch ``b``."""
        return self._crossing.at(b)

    def runs(self, b: int) -> ck.Runs:
        """The checkpoint planner's account at micro-batch ``b`` (see ``checkpointing.Runs``)."""
        cuts = self._cuts
        tables = [self._runs_table(side, est) for side, est in zip(self.sides, self.ests)]
        freed, held, flops, total = (Line(one, two) for one, two in zip(*tables))
        inputs = self.boundaries(b, cuts[:-1])
        return ck.Runs(freed.at(b), held.at(b), inputs, self._shared(inputs), [b * x for x in flops.one],
                       total.at(b), cuts)

    def _runs_table(self, side: Side, est: Estimate) -> tuple[np.ndarray, list[int], list[int], int]:
        """One analysis' bytes each run of intervals frees when checkpointed, each interval's saved
        bytes and FLOPs, and the saved total."""
        cuts, p = self._cuts, side.profile
        n = len(cuts) - 1
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
        return full, held, flops, int(p.saved[-1]) if len(p.saved) else 0

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

    def account(self, checkpoint: str, segments: ck.Segments | None = None) -> Account:
        """The step's account under ``checkpoint`` ("planned": the runs ``segments`` names are
        checkpointed)."""
        key = (checkpoint, segments)
        if key not in self._modes:
            self._modes[key] = self._account(checkpoint, segments)
        return self._modes[key]

    def _account(self, checkpoint: str, segments: ck.Segments | None) -> Account:
        if not ck.known_mode(checkpoint):
            raise InputError(f"ckpt={checkpoint}: choose one of {', '.join(ck.MODES)}, everyN, uniformN, blockN")
        if checkpoint == "none":
            return Account(Line.through(self.sides, lambda side: side.profile.forward),
                           Line.through(self.sides, lambda side: side.profile.saved),
                           Line.through(self.sides, lambda side: ck.at_rest(side.profile.saved)), 0)
        if checkpoint == "selective":
            kept = [self._selective(side) for side in self.sides]
            layers = sorted(attention_core(self.sides[1].shaped, self.sides[1].results)[2])
        else:
            seg = segments if checkpoint == "planned" else mode_segments(self.units, checkpoint)
            if seg is None:
                raise InputError("ckpt=planned: the plan chooses its segments (Planner.row); none given")
            kept = [self._recomputed(side, seg, checkpoint == "op") for side in self.sides]
            bounds = zip(seg.bounds, seg.bounds[1:])
            policy = self._policy(self.sides[1], seg) if checkpoint == "op" else None
            layers = [i for (a, e), c in zip(bounds, seg.checkpointed) if c for i in range(a, e)
                      if policy is None or i not in policy.kept_layers]
        (f1, s1, r1), (f2, s2, r2) = kept
        # Per sample, from the second analysis (the first's, where the file fixes its batch).
        recompute = layer_flops(self.ests[1], layers) // max(self.tp, 1)
        return Account(Line(f1, f2), Line(s1, s2), Line(r1, r2), recompute)

    def _recomputed(self, side: Side, seg: ck.Segments, op: bool) -> tuple[np.ndarray, ...]:
        """``seg``'s runs recomputed; ``op``: under torchtitan's op policy (``checkpointing.op_policy``)."""
        owner = training_owners(side.shaped, side.results, self.float_dtype)
        policy = self._policy(side, seg) if op else None
        kept = ck.kept_inputs(side.shaped, side.results, seg, side.profile, owner, self.float_dtype,
                              policy.storages if policy else None)
        if policy:
            kept = [x + y for x, y in zip(kept, policy.extra)]
        return ck.recomputed(side.profile, seg, kept)

    def _policy(self, side: Side, seg: ck.Segments) -> ck.Policy:
        return ck.op_policy(side.shaped, side.results, seg,
                            training_owners(side.shaped, side.results, self.float_dtype))

    def _selective(self, side: Side) -> tuple[np.ndarray, ...]:
        drop, tensors, _ = attention_core(side.shaped, side.results)
        owner = training_owners(side.shaped, side.results, self.float_dtype)
        return ck.selective(side.profile, drop, tensors, owner)


def mode_segments(units: Units, checkpoint: str) -> ck.Segments:
    """The segments a checkpointing mode of whole units recomputes: ``full`` and ``op`` every repeated
    unit, ``everyN`` / ``uniformN`` / ``blockN`` as ``unit_segments`` counts them."""
    counted = ck.COUNTED.match(checkpoint)
    return unit_segments(units, *((counted[1], int(counted[2])) if counted else ("every", 1)))


def unit_segments(units: Units, how: str = "every", n: int = 1) -> ck.Segments:
    """Repeated units checkpointed, the layers between them stored. ``every``: each Nth unit (the Nth,
    2Nth, ...: torchtitan counts its blocks from 1 and wraps those whose count divides by N);
    ``uniform``: runs of N consecutive units, each run one checkpoint (Megatron-LM's
    ``_checkpointed_forward`` with recompute_method "uniform"); ``block``: the first N units, each
    its own checkpoint, the rest stored (recompute_method "block")."""
    us = units.units
    count = np.cumsum([u.repeated for u in us])  # each unit's 1-based count among the repeated ones
    if how == "uniform":
        # a run starts at every non-repeated unit and at every Nth repeated one; the rest join the run
        starts = [k for k, (u, c) in enumerate(zip(us, count)) if not u.repeated or (c - 1) % n == 0
                  or (k > 0 and not us[k - 1].repeated)]
        bounds = tuple(us[k].start for k in starts) + (us[-1].stop,)
        return ck.Segments(bounds, tuple(us[k].repeated for k in starts))
    bounds = tuple(u.start for u in us) + (us[-1].stop,)
    chosen = [c % n == 0 if how == "every" else c <= n for c in count]
    return ck.Segments(bounds, tuple(bool(u.repeated and c) for u, c in zip(us, chosen)))


def layer_flops(est: Estimate, layers) -> int:
    """Forward FLOPs per sample of these layers (results positions), from the estimate's costs."""
    want = set(layers)
    return sum(row.flops for row in est.layers_list if row.index in want) // max(est.batch, 1)


def make_view(ests: tuple[Estimate, Estimate], units: Units, tp: int, sp: bool, device: str,
              gathered: bool = False) -> RankView:
    e = ests[0]
    pairs = find_pairs(e.graph, e.results, e.param_roles, units)
    if tp > 1 and not pairs:
        raise InputError(
            f"tensor parallel {tp}: {e.graph.name} has no column/row pair of matrix products "
            "(transformer blocks) to split"
        )
    return RankView(ests, units, tp, sp, device, pairs, gathered)
