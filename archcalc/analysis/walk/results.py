"""What the walk over a graph records of each layer it applies (see ``archcalc.analysis.walk.infer``)."""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.ir import Layer
from archcalc.ops import Out


@dataclass
class LayerResult:
    """A layer with what its rule said; ``folded`` layers are shape arithmetic, not run.

    ``status``: "exact"; "bound" (its outputs' shapes, and so its costs, are upper bounds: they
    depend on data); "unknown" (no shape can be given before running: ``reason`` says why, and
    its outputs, costs and whatever reads them are left out of every total, which say so); or
    "not taken" (a branch of an If that does not run: not costed, its stored weights still counted).
    ``repeat``: how many times the layer runs (a Loop's or Scan's body: once per iteration).
    """

    layer: Layer
    out: Out
    has_rule: bool
    folded: bool
    status: str = "exact"
    reason: str = ""
    repeat: int = 1
