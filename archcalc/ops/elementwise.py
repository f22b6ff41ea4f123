"""Element-wise ops: activations and broadcasting arithmetic, one row per op.

Each row holds everything archcalc knows of the op: its cost, how to fold known values, whether
onnxruntime may write it over a dying input, what PyTorch's backward keeps, and the role a stored
operand plays. Cost convention: one flop per output element for each floating-point element-wise
op (transcendental functions included, as ptflops and onnx-tool count them); Softmax and LogSoftmax
three (exp, sum, divide); logical and bitwise ops are not floating-point and cost none.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from archcalc.ops.registry import Node, Out, rule


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):  # ONNX integer Div truncates toward zero
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return np.divide(a, b)


@dataclass(frozen=True)
class Elementwise:
    """One element-wise op.

    ``saves``: what backward keeps, per PyTorch's autograd formulas (derivatives.yaml) --
    "input", "output" (the gradient is derived from it: ReLU, sigmoid, exp...), "nothing",
    "operands" (every operand), or "other" (each operand only for another operand's gradient,
    and only when that one is tracked: mul and div; scores * 0.125 keep nothing of the scores).
    ``inplace``: onnxruntime's CPU planner lets the kernel write over a dying input of its size
    (its MayInplace kernels, measured one op at a time between two Muls: Erf, Sqrt, Exp and the
    other math functions get a buffer of their own, as do Add and Mul).
    ``role``: what a stored float operand is: an added one shifts (a bias), a multiplied one
    scales (a weight).
    """

    flops: int  # per output element (binary ops: per operand combined)
    fold: Callable | None = None  # numpy's function, to fold known values
    saves: str = "input"
    inplace: bool = False
    boolean: bool = False  # the result is bool
    role: str | None = None


E = Elementwise
UNARY: dict[str, Elementwise] = {
    "Relu": E(1, lambda x: np.maximum(x, 0), saves="output", inplace=True),
    "LeakyRelu": E(1, inplace=True), "Elu": E(1, inplace=True), "Selu": E(1, inplace=True),
    "Celu": E(1, inplace=True), "ThresholdedRelu": E(1, inplace=True),
    "Sigmoid": E(1, saves="output", inplace=True), "HardSigmoid": E(1, inplace=True),
    "Tanh": E(1, saves="output", inplace=True), "Softplus": E(1, inplace=True), "Softsign": E(1, inplace=True),
    "HardSwish": E(1), "Gelu": E(1), "Erf": E(1), "Mish": E(1), "Swish": E(1),
    "Exp": E(1, np.exp, saves="output"), "Log": E(1, np.log), "Sqrt": E(1, np.sqrt, saves="output"),
    "Reciprocal": E(1, np.reciprocal, saves="output"), "Neg": E(1, np.negative, saves="nothing"),
    "Abs": E(1, np.abs), "Sign": E(1, np.sign, saves="nothing"), "Floor": E(1, np.floor, saves="nothing"),
    "Ceil": E(1, np.ceil, saves="nothing"), "Round": E(1, np.round, saves="nothing"),
    "Sin": E(1, np.sin), "Cos": E(1, np.cos), "Tan": E(1, np.tan), "Asin": E(1), "Acos": E(1), "Atan": E(1),
    "Sinh": E(1), "Cosh": E(1), "Asinh": E(1), "Acosh": E(1), "Atanh": E(1),
    "Clip": E(1, inplace=True), "Shrink": E(1, inplace=True),
    "Softmax": E(3, saves="output", inplace=True), "LogSoftmax": E(3, saves="output", inplace=True),
    "Hardmax": E(1),
    "Not": E(0, np.logical_not, saves="nothing", boolean=True), "BitwiseNot": E(0, np.invert, saves="nothing"),
    "IsNaN": E(0, np.isnan, saves="nothing", boolean=True), "IsInf": E(0, np.isinf, saves="nothing", boolean=True),
}
BINARY: dict[str, Elementwise] = {
    "Add": E(1, np.add, saves="nothing", role="bias"), "Sub": E(1, np.subtract, saves="nothing", role="bias"),
    "Sum": E(1, np.add, saves="nothing", role="bias"),
    "Mul": E(1, np.multiply, saves="other"), "Div": E(1, _trunc_div, saves="other"),
    "Pow": E(1, np.power, saves="operands"), "Mod": E(1, np.mod, saves="nothing"),
    "Max": E(1, np.maximum, saves="operands"), "Min": E(1, np.minimum, saves="operands"),
    "Mean": E(1, saves="operands"), "PRelu": E(1, saves="operands", role="weight"),
    "BitShift": E(0, saves="nothing"),
    "Equal": E(1, np.equal, saves="nothing", boolean=True), "Less": E(1, np.less, saves="nothing", boolean=True),
    "Greater": E(1, np.greater, saves="nothing", boolean=True),
    "LessOrEqual": E(1, np.less_equal, saves="nothing", boolean=True),
    "GreaterOrEqual": E(1, np.greater_equal, saves="nothing", boolean=True),
    "And": E(0, np.logical_and, saves="nothing", boolean=True),
    "Or": E(0, np.logical_or, saves="nothing", boolean=True),
    "Xor": E(0, np.logical_xor, saves="nothing", boolean=True),
    "BitwiseAnd": E(0, np.bitwise_and, saves="nothing"), "BitwiseOr": E(0, np.bitwise_or, saves="nothing"),
    "BitwiseXor": E(0, np.bitwise_xor, saves="nothing"),
}


def _fold(n: Node, shape: tuple[int, ...], fn: Callable | None) -> list[np.ndarray | None] | None:
    """Apply ``fn`` to a unary op's value, or left to right over a variadic op's values."""
    if fn is None:
        return None
    return n.fold(shape, lambda *v: functools.reduce(fn, v) if len(v) > 1 else fn(v[0]))


def _unary(n: Node) -> Out:
    row = UNARY[n.layer.op_type]
    return Out([n.shape(0)], dtypes=["bool" if row.boolean else n.dtype(0)], flops=row.flops * n.numel(0),
               values=_fold(n, n.shape(0), row.fold), inplace=row.inplace,
               saves_outputs=(0,) if row.saves == "output" else (),
               saves_inputs=(0,) if row.saves == "input" else ())


def _binary(n: Node) -> Out:
    op = n.layer.op_type
    row = BINARY[op]
    given = [i for i in range(n.n_inputs) if n.has(i)]
    shape = n.broadcast(*(n.shape(i) for i in given))
    # A scalar operand is a constant (a residual scale, an epsilon), except PRelu's single slope.
    params = {i: row.role for i in given if n.numel(i) > 1 or op == "PRelu"} if row.role else {}
    return Out([shape], dtypes=["bool" if row.boolean else n.dtype(0)],
               flops=row.flops * math.prod(shape) * max(len(given) - 1, 1), values=_fold(n, shape, row.fold),
               params=params, saves_inputs=_saved_operands(n, row, given))


def _saved_operands(n: Node, row: Elementwise, given: list[int]) -> tuple[int, ...]:
    if row.saves == "other":
        return tuple(i for i in given if any(n.tracked(j) for j in given if j != i))
    return tuple(given) if row.saves == "operands" else ()


rule(*UNARY)(_unary)
rule(*BINARY)(_binary)


@rule("Where")
def where(n: Node) -> Out:
    """Out: the broadcast of the three inputs; 1 flop per output element; saves the condition."""
    shape = n.broadcast(n.shape(0), n.shape(1), n.shape(2))
    return Out([shape], dtypes=[n.dtype(1)], flops=math.prod(shape), values=n.fold(shape, np.where),
               saves_inputs=(0,))
