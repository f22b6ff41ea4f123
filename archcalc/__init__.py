"""archcalc: what a network design costs -- shapes, parameters, MACs and memory -- before you run it.

``archcalc.estimate(path_or_modelproto, batch=...)`` is the entry point; see ``archcalc.estimate``.
"""

from __future__ import annotations

__version__ = "0.1.0"


def estimate(source, batch=None, dims=None, inputs=None, dtype=None):
    """Estimate a model; see :func:`archcalc.analysis.estimate` (imported lazily to start fast)."""
    from archcalc.analysis.estimate import estimate as _estimate

    return _estimate(source, batch=batch, dims=dims, inputs=inputs, dtype=dtype)


__all__ = ["estimate", "__version__"]
