"""What the walk over a graph records of each layer it applies (see ``archcalc.analysis.walk.infer``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from archcalc.ir import Layer, Shaped
from archcalc.ops import Out

T = TypeVar("T")


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


def derived(shaped: Shaped, results: list[LayerResult], key: Hashable, make: Callable[[], T]) -> T:
    """What an analysis derives from a walk -- each tensor's last reader, training's buffer owners --
    made once and kept on the shaped graph beside the results list it was made from: the same key for
    another list of the same graph (onnxruntime's schedule reorders the walk) is made afresh. What is
    kept is shared: callers read it and never change it."""
    made = shaped.derived.setdefault(key, [])
    for source, value in made:
        if source is results:
            return value
    value = make()
    made.append((results, value))
    return value


def last_readers(shaped: Shaped, results: list[LayerResult]) -> dict[str, int]:
    """Each tensor's last reader among the layers that ran (folded shape arithmetic reads nothing)."""

    def make() -> dict[str, int]:
        last: dict[str, int] = {}
        for i in ran(shaped, results):
            for name in results[i].layer.inputs:
                last[name] = i
        return last

    return derived(shaped, results, "last readers", make)


def ran(shaped: Shaped, results: list[LayerResult]) -> list[int]:
    """The positions of the layers that run, in order: every one but folded shape arithmetic."""
    return derived(shaped, results, "ran", lambda: [i for i, res in enumerate(results) if not res.folded])
