"""For ops without a rule: onnx's own shape inference (and reference evaluator, for folding).

Each call builds a one-node model whose inputs carry the concrete shapes found so far and, where
known, their values, so onnx's data propagation sees what archcalc sees. onnx is imported here, by
the functions that use it, and only then: a model whose ops all have rules never pays for it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from archcalc.dtypes import onnx_dtype
from archcalc.errors import UnsupportedOpError
from archcalc.ir import Tensor
from archcalc.ops.registry import Node, Out

if TYPE_CHECKING:
    import onnx


def _enum(dtype: str) -> int:
    from onnx import TensorProto

    name = {"float32": "FLOAT", "float64": "DOUBLE"}.get(dtype, dtype.upper())
    return TensorProto.DataType.Value(name)


def _attribute(name: str, value) -> onnx.AttributeProto:
    from onnx import helper, numpy_helper

    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, Tensor):
        raise UnsupportedOpError(f"attribute '{name}' holds a large tensor")
    return helper.make_attribute(name, value)


def _one_node_model(node: Node) -> onnx.ModelProto:
    import onnx
    from onnx import helper, numpy_helper

    layer = node.layer
    proto = helper.make_node(layer.op_type, layer.inputs, layer.outputs, domain=layer.domain or None)
    proto.attribute.extend(_attribute(k, v) for k, v in layer.attrs.items())
    inputs, inits = [], []
    for name in dict.fromkeys(n for n in layer.inputs if n):
        t = node.graph.tensors[name]
        inputs.append(helper.make_tensor_value_info(name, _enum(t.dtype), t.shape))
        if t.value is not None:
            inits.append(numpy_helper.from_array(np.asarray(t.value), name))
    graph = helper.make_graph([proto], "node", inputs, [helper.make_value_info(o, onnx.TypeProto())
                                                        for o in layer.outputs if o], inits)
    opsets = [helper.make_opsetid("", node.opset)]
    if layer.domain:
        opsets.append(helper.make_opsetid(layer.domain, 1))
    return helper.make_model(graph, opset_imports=opsets)


def infer_node(node: Node) -> Out:
    """Output shapes and dtypes from ``onnx.shape_inference``; no cost (reported as no rule)."""
    import onnx.shape_inference

    layer = node.layer
    what = f"{layer.domain + '.' if layer.domain else ''}{layer.op_type}"
    try:
        model = onnx.shape_inference.infer_shapes(_one_node_model(node), strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises several types, all meaning "cannot infer"
        raise UnsupportedOpError(
            f"{node.graph.source}: node '{layer.name}' ({what}): archcalc has no rule for {what} and "
            f"onnx's shape inference fails on it ({str(exc).splitlines()[0][:160]})") from None
    found = {vi.name: vi.type.tensor_type for vi in [*model.graph.value_info, *model.graph.output]}
    shapes: list[tuple[int, ...]] = []
    dtypes: list[str] = []
    for name in layer.outputs:
        tt = found.get(name)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt else None
        if name and (tt is None or dims is None or None in dims or not tt.HasField("shape")):
            raise UnsupportedOpError(
                f"{node.graph.source}: node '{layer.name}' ({what}): archcalc has no rule for {what} "
                f"and onnx's shape inference leaves output '{name}' without a concrete shape")
        shapes.append(tuple(d for d in dims or () if d is not None))
        dtypes.append(onnx_dtype(tt.elem_type) if tt else "float32")
    return Out(shapes, dtypes=dtypes)


def evaluate_node(node: Node) -> list[np.ndarray | None] | None:
    """Fold a node whose inputs are all known with onnx's reference evaluator, or None."""
    from onnx.reference import ReferenceEvaluator

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _one_node_model(node)
            del model.graph.initializer[:]
            feeds = {n: np.asarray(node.graph.tensors[n].value) for n in node.layer.inputs if n}
            return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]
    except Exception:  # folding is an optimisation: when it fails the tensor is computed at run time
        return None


def _python_types(kind: int) -> tuple[type, ...] | None:
    """What archcalc holds for an attribute of ONNX type ``kind`` (see the importer's _attr_value)."""
    import onnx

    A = onnx.AttributeProto
    held: dict[int, tuple[type, ...]] = {
        A.INT: (int,), A.FLOAT: (float, int), A.STRING: (str,), A.INTS: (list,), A.FLOATS: (list,),
        A.STRINGS: (list,), A.GRAPH: (onnx.GraphProto,), A.GRAPHS: (list,), A.TENSOR: (np.ndarray, Tensor)}
    return held.get(kind)


def attribute_mismatch(node: Node) -> str | None:
    """Why the node's attributes do not fit its op's schema (a type onnx's spec does not give that
    attribute), or None. Asked only after a rule failed, so the schema registry's start-up (a third
    of a second) is never paid on a well-formed model."""
    import onnx.defs

    layer = node.layer
    try:
        schema = onnx.defs.get_schema(layer.op_type, node.opset, layer.domain or "")
    except Exception:  # no schema: nothing to compare with
        return None
    for name, value in layer.attrs.items():
        spec = schema.attributes.get(name)
        # onnx.defs' AttrType has the numbers of AttributeProto's types (its stubs say neither .name nor .value)
        code = int(spec.type) if spec is not None else 0  # type: ignore[call-overload]
        want = _python_types(code)
        if want and not isinstance(value, want):
            kind = onnx.AttributeProto.AttributeType.Name(code)
            return f"its attribute '{name}' holds a {type(value).__name__}, but {layer.op_type} takes {kind}"
    return None
