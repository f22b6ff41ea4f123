"""Quantized ops: QuantizeLinear / DequantizeLinear, the integer products (QLinearConv,
QLinearMatMul, ConvInteger, MatMulInteger) and onnxruntime's quantized contrib ops (QGemm,
DynamicQuantizeMatMul, MatMulNBits).

The products are sized and costed by the float op's rule they quantize (``as_op``): an integer MAC
is a MAC. A quantized weight (int8, uint8, int4 -- or an int32 bias) is a parameter at its true
bytes; scales and zero points are quantization parameters ("quant"), stored, shown apart.
Quantizing or dequantizing costs one flop per element (a scale and a shift, rounded).
"""

from __future__ import annotations

import math
from dataclasses import replace

from archcalc.dtypes import onnx_dtype
from archcalc.errors import DataDependentShape
from archcalc.ir import FUSED_DEQUANT_KEY, Layer
from archcalc.ops.registry import RULES, Node, Out, rule


def as_op(n: Node, op: str, positions: list[int | None]) -> Out:
    """The rule of ``op`` applied to this node's inputs at ``positions`` (None: left out), its
    parameter positions mapped back to this node's."""
    names = [n.layer.inputs[p] if p is not None and n.has(p) else "" for p in positions]
    proxy = Node(Layer(n.layer.name, op, names, n.layer.outputs[:1], n.layer.attrs), n.graph)
    out = RULES[op](proxy)
    mapped = dict(enumerate(positions))
    params = {p: role for j, role in out.params.items() if (p := mapped.get(j)) is not None}
    saves = tuple(p for j in out.saves_inputs if (p := mapped.get(j)) is not None)
    return replace(out, params=params, saves_inputs=saves, values=None)  # type: ignore[arg-type]


def _quant(*positions: int) -> dict[int, str]:
    return dict.fromkeys(positions, "quant")


def _quantized_dtype(n: Node, zero_point: int, default: str = "uint8") -> str:
    """An integer output's type: its zero point's, else the ``output_dtype`` attribute, else uint8."""
    if n.has(zero_point):
        return n.dtype(zero_point)
    given = n.attr("output_dtype", 0)
    if given:
        return onnx_dtype(int(given))
    return default


@rule("QuantizeLinear")
def quantize_linear(n: Node) -> Out:
    """Out: the input's shape, of the zero point's integer type (uint8 without one)."""
    return Out([n.shape(0)], dtypes=[_quantized_dtype(n, 2)], flops=n.numel(0), params=_quant(1, 2))


@rule("DequantizeLinear")
def dequantize_linear(n: Node) -> Out:
    """Out: the input's shape, of the scale's float type; a stored input is a quantized weight (an
    int32 one a bias), read at its true bytes. Fused into its reader (ir.FUSED_DEQUANT_KEY, as a
    quantized config builds it): the stored tensors themselves, inputs 3 on the format's extras."""
    if n.layer.meta.get(FUSED_DEQUANT_KEY):
        return Out([n.shape(0)], dtypes=[n.dtype(1)], params={0: "weight", **_quant(*range(1, n.n_inputs))},
                   stored=True)
    return Out([n.shape(0)], dtypes=[n.dtype(1)], flops=n.numel(0), params={0: "weight", **_quant(1, 2)})


@rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(n: Node) -> Out:
    """Out: uint8 of the input's shape, a float scale and a uint8 zero point (scalars); 2 flops per
    element (the range, then the quantization)."""
    return Out([n.shape(0), (), ()][: n.n_outputs], dtypes=["uint8", "float32", "uint8"][: n.n_outputs],
               flops=2 * n.numel(0))


@rule("QLinearConv")
def qlinear_conv(n: Node) -> Out:
    """Conv of x (0) and w (3), bias (8, int32); of y's zero point's type."""
    out = as_op(n, "Conv", [0, 3, 8])
    return replace(out, dtypes=[_quantized_dtype(n, 7)], params={**out.params, **_quant(1, 2, 4, 5, 6, 7)})


@rule("QLinearMatMul")
def qlinear_matmul(n: Node) -> Out:
    """MatMul of a (0) and b (3); of y's zero point's type."""
    out = as_op(n, "MatMul", [0, 3])
    return replace(out, dtypes=[_quantized_dtype(n, 7)], params=_quant(1, 2, 4, 5, 6, 7))


@rule("ConvInteger")
def conv_integer(n: Node) -> Out:
    """Conv of x and w, accumulated in int32."""
    out = as_op(n, "Conv", [0, 1])
    return replace(out, dtypes=["int32"], params={**out.params, **_quant(2, 3)})


@rule("MatMulInteger")
def matmul_integer(n: Node) -> Out:
    """MatMul of A and B, accumulated in int32."""
    out = as_op(n, "MatMul", [0, 1])
    return replace(out, dtypes=["int32"], params=_quant(2, 3))


@rule("com.microsoft.DynamicQuantizeMatMul")
def dynamic_quantize_matmul(n: Node) -> Out:
    """MatMul of A (quantized as it runs) and B (int8), bias (4); float out."""
    out = as_op(n, "MatMul", [0, 1])
    params = {**_quant(2, 3), **({4: "bias"} if n.has(4) else {})}
    flops = 2 * n.numel(0) + (math.prod(out.shapes[0]) if n.has(4) else 0)
    return replace(out, dtypes=["float32"], params=params, flops=out.flops + flops)


@rule("com.microsoft.QGemm")
def qgemm(n: Node) -> Out:
    """Gemm of A (0) and B (3), C (6); integer out with y's zero point (8), else float."""
    out = as_op(n, "Gemm", [0, 3, 6])
    dtype = n.dtype(8) if n.has(8) else "float32" if not n.has(7) else "uint8"
    return replace(out, dtypes=[dtype], params={**out.params, **_quant(1, 2, 4, 5, 7, 8)})


@rule("com.microsoft.MatMulNBits")
def matmul_nbits(n: Node) -> Out:
    """A [..., K] x the K x N weight packed ``bits`` to a value in B (uint8 blocks): [..., N];
    MACs = rows x K x N; B's bytes are its true size (N x K x bits / 8, plus block padding)."""
    a = n.rank(0, at_least=1)
    k, cols = int(n.required_attr("K")), int(n.required_attr("N"))
    if a[-1] != k:
        raise n.error(f"input {list(a)} does not end in K={k}")
    rows = math.prod(a[:-1])
    params = {1: "weight", **_quant(2, 3), **({5: "bias"} if n.has(5) else {})}
    return Out([(*a[:-1], cols)], macs=rows * k * cols, flops=rows * cols if n.has(5) else 0, params=params,
               saves_inputs=(0,))


# onnxruntime's QOperator format (quantize_static(..., quant_format=QOperator)): element-wise and
# pooling ops on quantized tensors, each sized as its float op; every scale and zero point is "quant".

@rule("com.microsoft.QLinearAdd", "com.microsoft.QLinearMul")
def qlinear_binary(n: Node) -> Out:
    """A (0) and B (3) broadcast, of C's zero point's type (7)."""
    out = as_op(n, n.layer.op_type.removeprefix("QLinear"), [0, 3])
    return replace(out, dtypes=[_quantized_dtype(n, 7)], params=_quant(1, 2, 4, 5, 6, 7))


@rule("com.microsoft.QLinearSigmoid", "com.microsoft.QLinearLeakyRelu", "com.microsoft.QLinearSoftmax")
def qlinear_unary(n: Node) -> Out:
    """X (0), of Y's zero point's type (4)."""
    out = as_op(n, n.layer.op_type.removeprefix("QLinear"), [0])
    return replace(out, dtypes=[_quantized_dtype(n, 4)], params=_quant(1, 2, 3, 4), inplace=False)


@rule("com.microsoft.QLinearGlobalAveragePool", "com.microsoft.QLinearAveragePool")
def qlinear_pool(n: Node) -> Out:
    """X (0) pooled (NCHW; channels_last: NHWC, pooled over the middle axes), of Y's zero point's type (4)."""
    if n.attr("channels_last", 0):
        raise n.error("pools a channels-last tensor, a layout archcalc does not size yet", DataDependentShape)
    out = as_op(n, n.layer.op_type.removeprefix("QLinear"), [0])
    return replace(out, dtypes=[_quantized_dtype(n, 4)], params=_quant(1, 2, 3, 4))


@rule("com.microsoft.QLinearConcat")
def qlinear_concat(n: Node) -> Out:
    """Y's scale and zero point, then (X, scale, zero point) per input: the Xs joined along ``axis``."""
    out = as_op(n, "Concat", list(range(2, n.n_inputs, 3)))
    quant = [i for i in range(n.n_inputs) if i < 2 or (i - 2) % 3]
    return replace(out, dtypes=[_quantized_dtype(n, 1)], params=_quant(*quant))
