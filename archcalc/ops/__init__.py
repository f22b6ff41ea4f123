"""Per-op rules by family; importing this package registers them all in ``RULES``."""

from archcalc.ops import conv, elementwise, linear, norm, pool, reduce, shape  # noqa: F401
from archcalc.ops.registry import RULES, Node, Out, rule

__all__ = ["RULES", "Node", "Out", "rule"]
