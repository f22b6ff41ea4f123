"""Element-wise ops: activations and broadcasting arithmetic, registered from tables.

Cost convention: one flop per output element for each element-wise op (transcendental functions
included, as ptflops and onnx-tool count them); Softmax and LogSoftmax three (exp, sum, divide).
Casts and copies move data and cost no flops.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from archcalc.ops.registry import Node, Out, rule


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):  # ONNX integer Div truncates toward zero
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return np.divide(a, b)


# op -> (flops per output element, numpy function for folding known values or None)
UNARY: dict[str, tuple[int, Callable | None]] = {
    "Relu": (1, lambda x: np.maximum(x, 0)), "LeakyRelu": (1, None), "Elu": (1, None),
    "Selu": (1, None), "Celu": (1, None), "ThresholdedRelu": (1, None), "Sigmoid": (1, None),
    "HardSigmoid": (1, None), "HardSwish": (1, None), "Tanh": (1, None), "Gelu": (1, None),
    "Erf": (1, None), "Softplus": (1, None), "Softsign": (1, None), "Mish": (1, None),
    "Exp": (1, np.exp), "Log": (1, np.log), "Sqrt": (1, np.sqrt), "Reciprocal": (1, np.reciprocal),
    "Neg": (1, np.negative), "Abs": (1, np.abs), "Sign": (1, np.sign), "Floor": (1, np.floor),
    "Ceil": (1, np.ceil), "Round": (1, np.round), "Sin": (1, np.sin), "Cos": (1, np.cos),
    "Tan": (1, np.tan), "Asin": (1, None), "Acos": (1, None), "Atan": (1, None),
    "Sinh": (1, None), "Cosh": (1, None), "Asinh": (1, None), "Acosh": (1, None), "Atanh": (1, None),
    "Clip": (1, None), "Softmax": (3, None), "LogSoftmax": (3, None), "Hardmax": (1, None),
    "Not": (0, np.logical_not), "BitwiseNot": (0, np.invert), "IsNaN": (0, np.isnan),
    "IsInf": (0, np.isinf), "Shrink": (1, None),
}
BOOL_RESULT = {"Not", "IsNaN", "IsInf", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
               "And", "Or", "Xor"}

BINARY: dict[str, tuple[int, Callable | None]] = {
    "Add": (1, np.add), "Sub": (1, np.subtract), "Mul": (1, np.multiply), "Div": (1, _trunc_div),
    "Pow": (1, np.power), "Mod": (1, np.mod), "Max": (1, np.maximum), "Min": (1, np.minimum),
    "Sum": (1, np.add), "Mean": (1, None), "PRelu": (1, None), "BitShift": (1, None),
    "Equal": (1, np.equal), "Less": (1, np.less), "Greater": (1, np.greater),
    "LessOrEqual": (1, np.less_equal), "GreaterOrEqual": (1, np.greater_equal),
    "And": (1, np.logical_and), "Or": (1, np.logical_or), "Xor": (1, np.logical_xor),
    "BitwiseAnd": (1, np.bitwise_and), "BitwiseOr": (1, np.bitwise_or), "BitwiseXor": (1, np.bitwise_xor),
}
# What backward keeps (training): these derive the gradient from their output, as PyTorch's
# autograd formulas do; those need nothing; every other unary op keeps its input.
SAVES_OUTPUT = {"Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Exp", "Sqrt", "Reciprocal"}
SAVES_NOTHING = {"Neg", "Not", "Sign", "Floor", "Ceil", "Round", "IsNaN", "IsInf", "BitwiseNot"}
# The ops that may write their output over a dying input (onnxruntime's MayInplace kernels):
# measured with onnxruntime 1.31's CPU planner, one op at a time between two Muls. Erf, Sqrt,
# Exp and the other math functions get a buffer of their own, as do Add and Mul (measured on a
# residual block).
INPLACE = {"Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "Softplus", "Softsign",
           "Tanh", "ThresholdedRelu", "Clip", "Shrink", "Softmax", "LogSoftmax"}
BINARY_SAVES_BOTH = {"Pow", "Max", "Min", "PRelu", "Mean"}
# Mul and Div keep an operand only for the other's gradient: PyTorch's mul and div backward
# (derivatives.yaml) need `other` for self's gradient and `self` for other's, and autograd saves
# each only when that gradient is needed, so attention's scores * 0.125 keep nothing of the scores
# (measured with saved_tensors_hooks on a BERT layer).
SAVES_FOR_OTHER = {"Mul", "Div"}

# Which role a float initializer takes as an operand: an added one shifts (a bias), a multiplied
# one scales (a weight). PRelu's slope is a weight even when it is one number.
OPERAND_ROLE = {"Add": "bias", "Sub": "bias", "Sum": "bias", "PRelu": "weight"}


def _out_dtype(n: Node) -> list[str]:
    return ["bool" if n.layer.op_type in BOOL_RESULT else n.dtype(0)]


def _fold(n: Node, shape: tuple[int, ...], fn: Callable | None) -> list[np.ndarray | None] | None:
    """Apply ``fn`` to a unary op's value, or left to right over a variadic op's values."""
    if fn is None:
        return None
    return n.fold(shape, lambda *v: functools.reduce(fn, v) if len(v) > 1 else fn(v[0]))


def _unary(n: Node) -> Out:
    op = n.layer.op_type
    flops, fn = UNARY[op]
    saves_out = op in SAVES_OUTPUT
    return Out([n.shape(0)], dtypes=_out_dtype(n), flops=flops * n.numel(0), values=_fold(n, n.shape(0), fn),
               inplace=op in INPLACE, saves_outputs=(0,) if saves_out else (),
               saves_inputs=() if saves_out or op in SAVES_NOTHING else (0,))


def _binary(n: Node) -> Out:
    op = n.layer.op_type
    flops, fn = BINARY[op]
    shape = n.broadcast(*(n.shape(i) for i in range(n.n_inputs) if n.has(i)))
    role = OPERAND_ROLE.get(op)
    # A scalar operand is a constant (a residual scale, an epsilon), except PRelu's single slope.
    params = {i: role for i in range(n.n_inputs) if n.has(i) and (n.numel(i) > 1 or op == "PRelu")} \
        if role else {}
    return Out([shape], dtypes=_out_dtype(n), flops=flops * math.prod(shape) * max(n.n_inputs - 1, 1),
               values=_fold(n, shape, fn), params=params,
               saves_inputs=_saved_operands(n, op))


def _saved_operands(n: Node, op: str) -> tuple[int, ...]:
    if op in SAVES_FOR_OTHER:
        return tuple(i for i in range(n.n_inputs) if any(n.tracked(j) for j in range(n.n_inputs) if j != i))
    return tuple(range(n.n_inputs)) if op in BINARY_SAVES_BOTH else ()


rule(*UNARY)(_unary)
rule(*BINARY)(_binary)


@rule("Where")
def where(n: Node) -> Out:
    shape = n.broadcast(n.shape(0), n.shape(1), n.shape(2))
    return Out([shape], dtypes=[n.dtype(1)], flops=math.prod(shape), values=n.fold(shape, np.where),
               saves_inputs=(0,))
