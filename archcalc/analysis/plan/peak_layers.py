"""The layers that can hold a stage's peak, whatever stage their unit is cut into.

``gpu_memory.walk`` prices every layer of a stage twice, at its forward and at its backward. Within
one unit of one stage, every term of a forward moment but the layer's own live activations is the
same at each of its layers (the stage's persistent state and in-flight micro-batches, the unit's
gathered parameters); so is every term of a backward moment but its saved state, its activation
gradients and the parameter gradients made so far. So a unit's largest moment is at one of a few of
its layers, the same for every stage it can fall in: those are the only ones a judge of many
candidate stages (``pipeline.rebalance``) needs to walk -- a few a unit instead of a transformer
block's dozens, and the same peaks.
"""

from __future__ import annotations

import numpy as np

from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.plan.params import GRAD, ROOT, Params

# Slack, in bytes, for what is rounded per stage: the sharded share of the gradients made so far
# (integer division by the group), priced here in floating point.
ROUNDING = 2.0
EXACT = 1 << 52  # sizes from here on are not all exact in float64: every layer is walked


def peak_layers(zero: int, micro_batches: int, group: int, prof: StepProfile, forward: np.ndarray,
                saved: np.ndarray, params: Params) -> np.ndarray | None:
    """[layer]: whether the layer can hold its unit's largest moment in some stage, under ZeRO stage
    ``zero`` with ``micro_batches`` a step over ``group`` ranks (None: every layer, where the
    account holds sizes past float64's exact integers). Also each unit's first layer (the
    reduce-scatter buffer FSDP2 keeps differs there) and the one with its largest parameter (the
    stage's largest, which the optimizer's temporaries read)."""
    if forward.dtype == object or saved.dtype == object or max(abs(forward).max(initial=0),
                                                                abs(saved).max(initial=0)) >= EXACT:
        return None
    start = params.unit_start
    keep = _unit_best(forward.astype(np.float64), start, params.unit_of, 0.0)
    keep |= _unit_best(params.largest.astype(np.float64), start, params.unit_of, 0.0)
    keep[start] = True
    # The layer's own part of a backward moment: its saved state, its activation gradients and,
    # within its stage, the parameter gradients made at it and after it (gpu_memory._param_grads).
    prefix = params.sums[GRAD][:-1].astype(np.float64)
    made = -prefix if micro_batches == 1 else np.zeros_like(prefix)
    own = saved.astype(np.float64) + prof.grads.astype(np.float64)
    if zero >= 2:
        root, mine = params.sums[ROOT][:-1].astype(np.float64), params.unit_made.astype(np.float64)
        own += -root + mine + (made + root - mine) / group
    else:
        own += made
    backward = np.where(prof.active, own, -np.inf)
    return keep | (_unit_best(backward, start, params.unit_of, ROUNDING) & prof.active)


def _unit_best(values: np.ndarray, start: np.ndarray, unit_of: np.ndarray, slack: float) -> np.ndarray:
    """[layer]: whether its value is within ``slack`` of the largest in its unit."""
    return values >= np.maximum.reduceat(values, start)[unit_of] - slack
