"""Matrix products: Gemm, MatMul, Einsum. These are where most MACs come from."""

from __future__ import annotations

import math
import re

import numpy as np

from archcalc.ops.registry import Node, Out, rule


@rule("Gemm")
def gemm(n: Node) -> Out:
    """Out (M, N) of A (M x K, or transposed) and B (K x N); B the weight, C the bias; MACs = M x N x K, + M
    x N flops for C; saves A and B."""
    a, b = n.rank(0, 2), n.rank(1, 2)
    m, k = (a[1], a[0]) if n.attr("transA", 0) else a
    kb, cols = (b[1], b[0]) if n.attr("transB", 0) else b
    if k != kb:
        raise n.error(f"A {list(a)} and B {list(b)} (transA={n.attr('transA', 0)}, "
                      f"transB={n.attr('transB', 0)}) disagree on the inner dim: {k} vs {kb}")
    return Out([(m, cols)], macs=m * cols * k, flops=m * cols if n.has(2) else 0,
               params={1: "weight", 2: "bias"}, saves_inputs=(0, 1))


@rule("MatMul")
def matmul(n: Node) -> Out:
    """numpy's matmul: batch dims broadcast, 1-D operands gain and lose a unit dim; MACs = batch x M x N x
    K; a stored operand is a weight; saves both operands."""
    a, b = n.rank(0, at_least=1), n.rank(1, at_least=1)
    # numpy's matmul semantics: a 1-D operand gains a unit dim that the result then drops.
    a2, b2 = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise n.error(f"inputs {list(a)} and {list(b)} disagree on the inner dim: {a2[-1]} vs {b2[-2]}")
    batch = n.broadcast(a2[:-2], b2[:-2])
    out = (*batch, *([a2[-2]] if len(a) > 1 else []), *([b2[-1]] if len(b) > 1 else []))
    macs = math.prod(batch) * a2[-2] * b2[-1] * a2[-1]
    return Out([out], macs=macs, values=n.fold(out, np.matmul), saves_inputs=(0, 1))


_EINSUM = re.compile(r"^([a-zA-Z.,]*)->([a-zA-Z.]*)$")


@rule("Einsum")
def einsum(n: Node) -> Out:
    """Out from the equation's output letters; MACs = the product of every index's size when anything is
    contracted (or several operands), else 0 (a transpose or diagonal); saves every operand."""
    eq = (n.attr("equation", None) or "").replace(" ", "")
    if "->" not in eq:  # implicit output: the letters seen once, in alphabetical order
        letters = eq.replace(",", "")
        eq += "->" + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if "." in eq or not _EINSUM.match(eq):
        raise n.error(f"equation '{eq}' uses ellipses or an unknown form, which archcalc does not size")
    lhs, rhs = eq.split("->")
    sizes: dict[str, int] = {}
    for term, i in zip(lhs.split(","), range(n.n_inputs)):
        for c, d in zip(term, n.shape(i)):
            if sizes.setdefault(c, d) != d and 1 not in (d, sizes[c]):
                raise n.error(f"index '{c}' is {sizes[c]} in one operand and {d} in another")
            sizes[c] = max(sizes[c], d)
    out = tuple(sizes[c] for c in rhs)
    # One multiply-add per point of the full index space, when anything is summed over.
    contracted = set(sizes) - set(rhs)
    macs = math.prod(sizes.values()) if contracted or n.n_inputs > 1 else 0
    return Out([out], macs=macs, saves_inputs=tuple(range(n.n_inputs)))
