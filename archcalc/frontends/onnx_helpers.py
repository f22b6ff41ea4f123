"""What archcalc uses of ``onnx.helper`` and ``onnx.numpy_helper``, on the messages of
``archcalc.onnx_proto``, so that reading a file or building a config's model never imports onnx.

Each function does what its namesake in onnx does, for the cases archcalc meets (tests check them
equal, message for message); bfloat16 values are read widened to float32, exactly (a bf16 config's
model is all bfloat16 constants, and onnx's own helper would bring ``ml_dtypes`` and 0.9 s of imports
with it); the other element types numpy cannot hold (the 8-, 6- and 4-bit floats, 4- and 2-bit
integers) are handed to onnx's own helper.
"""

from __future__ import annotations

import numbers
import struct
import sys
from typing import Any

import numpy as np

from archcalc.onnx_proto import (
    IR_VERSION,
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    OperatorSetIdProto,
    TensorProto,
    ValueInfoProto,
)

T = TensorProto
# The element types numpy holds, with where TensorProto stores each when not in raw_data
# (onnx/onnx.proto's comments on each typed field; onnx/_mapping.py).
NUMPY_TYPES: dict[int, tuple[str, str, str]] = {  # type -> (numpy dtype, field, the field's numpy dtype)
    T.FLOAT: ("float32", "float_data", "float32"), T.DOUBLE: ("float64", "double_data", "float64"),
    T.FLOAT16: ("float16", "int32_data", "int32"), T.INT64: ("int64", "int64_data", "int64"),
    T.INT32: ("int32", "int32_data", "int32"), T.INT16: ("int16", "int32_data", "int32"),
    T.INT8: ("int8", "int32_data", "int32"), T.UINT8: ("uint8", "int32_data", "int32"),
    T.UINT16: ("uint16", "int32_data", "int32"), T.UINT32: ("uint32", "uint64_data", "uint64"),
    T.UINT64: ("uint64", "uint64_data", "uint64"), T.BOOL: ("bool", "int32_data", "int32"),
    T.COMPLEX64: ("complex64", "float_data", "float32"), T.COMPLEX128: ("complex128", "double_data", "float64"),
    T.STRING: ("object", "string_data", "object"),
}


def storage_field(data_type: int) -> str:
    """The typed field that holds a tensor's values when not in raw_data (onnx's
    ``helper.tensor_dtype_to_field``): every type numpy lacks is stored in int32_data."""
    known = NUMPY_TYPES.get(data_type)
    return known[1] if known else "int32_data"


def to_array(tensor: TensorProto) -> np.ndarray:
    """A stored tensor's values, as ``onnx.numpy_helper.to_array`` gives them (never external data:
    the importer reads none)."""
    if tensor.data_type == T.BFLOAT16 and not tensor.HasField("segment") and sys.byteorder == "little":
        return _bfloat16_values(tensor)
    known = NUMPY_TYPES.get(tensor.data_type)
    if known is None or tensor.HasField("segment") or sys.byteorder == "big":
        from onnx import numpy_helper  # types numpy lacks (ml_dtypes), segments, byte swapping

        return numpy_helper.to_array(tensor)
    dtype, field, stored = known
    dims = tuple(tensor.dims)
    if tensor.data_type == T.STRING:
        return np.asarray([s.decode("utf-8") for s in tensor.string_data]).astype(object).reshape(dims)
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(dims)
    data = getattr(tensor, field)
    if tensor.data_type in (T.FLOAT16, T.INT16, T.UINT16):
        return np.array(data, dtype=np.int32).view(np.uint32).astype(np.uint16).reshape(dims).view(dtype)
    if tensor.data_type == T.BOOL:
        return np.array(data, dtype=np.int32).view(np.uint32).astype(np.uint8).view(dtype).reshape(dims)
    if tensor.data_type in (T.COMPLEX64, T.COMPLEX128):
        return np.array(data, dtype=stored).view(dtype=dtype).reshape(dims)
    return np.asarray(data, dtype=stored).astype(dtype).reshape(dims)


def _bfloat16_values(tensor: TensorProto) -> np.ndarray:
    """A bfloat16 tensor's values as float32: its 16 bits are a float32's top half (raw_data holds
    them little-endian, int32_data one a number)."""
    raw = tensor.HasField("raw_data")
    bits = np.frombuffer(tensor.raw_data, dtype="<u2") if raw else np.array(tensor.int32_data, dtype=np.int64)
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(tuple(tensor.dims))


_SINGLE = {AttributeProto.FLOAT: "f", AttributeProto.INT: "i", AttributeProto.STRING: "s",
           AttributeProto.TENSOR: "t", AttributeProto.SPARSE_TENSOR: "sparse_tensor", AttributeProto.GRAPH: "g",
           AttributeProto.TYPE_PROTO: "tp"}
_REPEATED = {AttributeProto.FLOATS: "floats", AttributeProto.INTS: "ints", AttributeProto.STRINGS: "strings",
             AttributeProto.TENSORS: "tensors", AttributeProto.SPARSE_TENSORS: "sparse_tensors",
             AttributeProto.GRAPHS: "graphs", AttributeProto.TYPE_PROTOS: "type_protos"}


def attribute_value(attr: AttributeProto) -> Any:
    """An attribute's value as ``onnx.helper.get_attribute_value`` gives it."""
    if attr.ref_attr_name:
        raise ValueError(f"Cannot get value of reference attribute: {attr}")
    if attr.type in _SINGLE:
        return getattr(attr, _SINGLE[attr.type])
    if attr.type in _REPEATED:
        return list(getattr(attr, _REPEATED[attr.type]))
    if attr.type == AttributeProto.UNDEFINED:
        return None
    raise ValueError(f"Unsupported ONNX attribute: {attr}")


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def make_attribute(key: str, value: Any) -> AttributeProto:
    """``onnx.helper.make_attribute``: the type from the value (numbers, text, a tensor, lists of them)."""
    attr = AttributeProto(name=key)
    if isinstance(value, numbers.Integral):
        attr.i, attr.type = int(value), AttributeProto.INT
    elif isinstance(value, numbers.Real):
        attr.f, attr.type = float(value), AttributeProto.FLOAT
    elif isinstance(value, (str, bytes)):
        attr.s, attr.type = _bytes(value), AttributeProto.STRING
    elif isinstance(value, TensorProto):
        attr.t.CopyFrom(value)
        attr.type = AttributeProto.TENSOR
    elif isinstance(value, GraphProto):
        attr.g.CopyFrom(value)
        attr.type = AttributeProto.GRAPH
    else:
        values = list(value)
        kinds = ((numbers.Integral, AttributeProto.INTS, "ints"), (numbers.Real, AttributeProto.FLOATS, "floats"),
                 ((str, bytes), AttributeProto.STRINGS, "strings"))
        kind = next((k for k in kinds if values and all(isinstance(v, k[0]) for v in values)), None)
        if kind is None:
            raise ValueError(f"Could not infer the type of attribute `{key}` from {value!r}")
        getattr(attr, kind[2]).extend(_bytes(v) for v in values) if kind[2] == "strings" else \
            getattr(attr, kind[2]).extend(values)
        attr.type = kind[1]
    return attr


def make_node(op_type: str, inputs, outputs, name: str | None = None, domain: str | None = None,
              **attrs) -> NodeProto:
    """``onnx.helper.make_node``: attributes sorted by name, None ones left out."""
    node = NodeProto(op_type=op_type, input=inputs, output=outputs)
    if name:
        node.name = name
    if domain is not None:
        node.domain = domain
    node.attribute.extend(make_attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
    return node


def _bfloat16_bits(value: float) -> int:
    """``value`` rounded to bfloat16 (to nearest, ties to even, from the double as ml_dtypes rounds
    it), as its 16 bits; within bfloat16's normal range."""
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    kept = (bits + (1 << 44) - 1 + ((bits >> 45) & 1)) >> 45  # sign, 11 exponent bits, 7 mantissa bits
    exponent = ((kept >> 7) & 0x7FF) - 1023 + 127
    if not 1 <= exponent <= 254:
        raise OverflowError("outside bfloat16's normal range")
    return (kept >> 18) << 15 | exponent << 7 | (kept & 0x7F)


def make_tensor(name: str, data_type: int, dims, values) -> TensorProto:
    """``onnx.helper.make_tensor`` of values in their typed field (not raw), for the types numpy
    holds and bfloat16 numbers; others through onnx's own helper."""
    tensor = TensorProto(name=name, data_type=data_type, dims=dims)
    try:
        if data_type == T.BFLOAT16:
            bits = np.array([_bfloat16_bits(float(v)) for v in np.asarray(values).flatten()], dtype=np.uint16)
        elif data_type in NUMPY_TYPES and data_type != T.STRING:
            array = np.asarray(values, dtype=NUMPY_TYPES[data_type][0]).flatten()
            bits = array.view(np.uint16) if data_type == T.FLOAT16 else \
                array.astype(np.uint8) if data_type == T.BOOL else array
        else:
            raise OverflowError("a type numpy does not hold")
    except OverflowError:
        from onnx import helper

        return helper.make_tensor(name, data_type, dims, values)
    if bits.size != int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"Number of values ({bits.size}) does not match tensor dimensions {list(dims)}.")
    if data_type in (T.COMPLEX64, T.COMPLEX128):
        bits = bits.view(np.float32 if data_type == T.COMPLEX64 else np.float64)
    getattr(tensor, storage_field(data_type)).extend(bits)
    return tensor


def make_tensor_value_info(name: str, elem_type: int, shape) -> ValueInfoProto:
    """``onnx.helper.make_tensor_value_info``: dims as ints, named symbols, or None (unknown)."""
    info = ValueInfoProto(name=name)
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = elem_type
    if shape is not None:
        tensor_type.shape.dim.extend([])  # an empty shape is a shape (rank 0), not an unknown one
        for d in shape:
            dim = tensor_type.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
            elif d is not None:
                raise ValueError(f"Invalid item in shape: {d}. Needs to be of int or str.")
    return info


def make_opsetid(domain: str, version: int) -> OperatorSetIdProto:
    return OperatorSetIdProto(domain=domain, version=version)


def make_model(nodes, name: str, inputs, outputs, initializer, opsets, ir_version: int = IR_VERSION) -> ModelProto:
    """``onnx.helper.make_model(make_graph(...), ir_version=..., opset_imports=...)`` in one call."""
    model = ModelProto(ir_version=ir_version)
    graph = model.graph
    graph.node.extend(nodes)
    graph.name = name
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    graph.initializer.extend(initializer)
    model.opset_import.extend(opsets)
    return model
