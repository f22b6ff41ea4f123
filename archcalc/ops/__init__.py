"""Per-op rules by family; importing this package registers them all in ``RULES``."""

from archcalc.ops import (  # noqa: F401
    attention,
    contrib,
    conv,
    data_dependent,
    elementwise,
    linear,
    ml,
    moe,
    norm,
    pool,
    quantized,
    recurrent,
    reduce,
    sequence,
    shape,
)
from archcalc.ops.registry import RULES, Node, Out, rule

__all__ = ["RULES", "Node", "Out", "rule"]
