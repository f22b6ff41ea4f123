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

from archcalc.analysis.memory.model_states import Precision
from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.plan.gpu_memory import Strategy, param_grads
from archcalc.analysis.plan.params import Layout, Params

# Slack, in bytes, for what is rounded per stage: the sharded share of the gradients made so far
# (integer division by the group), which differs by less than a byte from stage to stage.
ROUNDING = 2
EXACT = 1 << 52  # sizes from here on are not all exact in float64: every layer is walked


def peak_layers(s: Strategy, prof: StepProfile, forward: np.ndarray, saved: np.ndarray,
                params: Params, prec: Precision | None = None) -> np.ndarray | None:
    """[layer]: whether the layer can hold its unit's largest moment in some stage under ``s`` (None:
    every layer, where the account holds sizes past float64's exact integers). Also each unit's
    first layer (the reduce-scatter buffer FSDP2 keeps differs there) and the one with its largest
    parameter (the stage's largest, which the optimizer's temporaries read)."""
    if forward.dtype == object or saved.dtype == object or max(abs(forward).max(initial=0),
                                                                abs(saved).max(initial=0)) >= EXACT:
        return None
    start = params.unit_start
    keep = _unit_best(forward, start, params.unit_of, 0)
    keep |= _unit_best(params.largest, start, params.unit_of, 0)
    keep[start] = True
    # The layer's own part of a backward moment: its saved state, its activation gradients and the
    # parameter gradients alive at it -- gpu_memory's own, priced as if the whole graph were one
    # stage: within a unit, another stage changes them by a constant and the rounding.
    whole = Layout(params, np.array([0]), np.array([len(params.grad)]))
    own = saved + prof.grads + param_grads(s, whole, prec)
    backward = np.where(prof.active, own, np.iinfo(np.int64).min // 2)  # no backward: never the largest
    return keep | (_unit_best(backward, start, params.unit_of, ROUNDING) & prof.active)


def _unit_best(values: np.ndarray, start: np.ndarray, unit_of: np.ndarray, slack: int) -> np.ndarray:
    """[layer]: whether its value is within ``slack`` of the largest in its unit."""
    return values >= np.maximum.reduceat(values, start)[unit_of] - slack
