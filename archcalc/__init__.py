"""archcalc: what a network design costs -- shapes, parameters, MACs and memory -- before you run it.

``archcalc.estimate(path_or_modelproto, batch=...)`` is the entry point. The public names below are
imported on first use, so ``import archcalc`` (and the command line's ``--help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "estimate": "archcalc.api", "fit": "archcalc.api", "fit_spec": "archcalc.api", "validate": "archcalc.api",
    "Estimate": "archcalc.analysis.estimate", "Totals": "archcalc.analysis.records",
    "LayerCost": "archcalc.analysis.records", "SharedWeight": "archcalc.analysis.records",
    "InferenceMemory": "archcalc.analysis.memory.liveness", "TrainingMemory": "archcalc.analysis.memory.training",
    "Verdict": "archcalc.analysis.fit", "FitSpec": "archcalc.analysis.fit",
    "Validation": "archcalc.measure.validate",
    "ArchcalcError": "archcalc.errors", "InputError": "archcalc.errors", "ShapeError": "archcalc.errors",
    "DSLError": "archcalc.errors", "UnsupportedOpError": "archcalc.errors", "ValidationError": "archcalc.errors",
}

if TYPE_CHECKING:
    from archcalc.analysis.estimate import Estimate
    from archcalc.analysis.fit import FitSpec, Verdict
    from archcalc.analysis.memory.liveness import InferenceMemory
    from archcalc.analysis.memory.training import TrainingMemory
    from archcalc.analysis.records import LayerCost, SharedWeight, Totals
    from archcalc.api import estimate, fit, fit_spec, validate
    from archcalc.errors import (
        ArchcalcError,
        DSLError,
        InputError,
        ShapeError,
        UnsupportedOpError,
        ValidationError,
    )
    from archcalc.measure.validate import Validation


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'archcalc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = [  # the names of _EXPORTS, spelled out for linters and type checkers
    "__version__", "estimate", "fit", "fit_spec", "validate", "Estimate", "Totals", "LayerCost", "SharedWeight",
    "InferenceMemory", "TrainingMemory", "Verdict", "FitSpec", "Validation", "ArchcalcError", "InputError",
    "ShapeError", "DSLError", "UnsupportedOpError", "ValidationError",
]
