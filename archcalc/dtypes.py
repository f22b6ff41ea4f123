"""Element types: the IR's dtype names, their sizes, and the mapping from ONNX's enum."""

from __future__ import annotations

import functools

# Bytes per element. bfloat16 and the 8-bit floats have no numpy dtype, so sizes are a table
# rather than ``np.dtype(name).itemsize``.
DTYPE_BYTES: dict[str, float] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "float8e4m3fn": 1, "float8e4m3fnuz": 1, "float8e5m2": 1, "float8e5m2fnuz": 1,
    "int64": 8, "uint64": 8, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2,
    "float8e8m0": 1, "float4e2m1": 0.5,
    "int8": 1, "uint8": 1, "bool": 1, "int4": 0.5, "uint4": 0.5, "int2": 0.25, "uint2": 0.25,
    "complex64": 8, "complex128": 16, "string": 8,
    "unknown": 0,  # a tensor whose shape and type are unknown (see ir.Value.known): counted nowhere
}
FLOAT_DTYPES = frozenset(d for d in DTYPE_BYTES if d.startswith(("float", "bfloat")))

# What a stored weight may be held in: floats, and the narrow integers quantized weights are
# stored as. Wider integers are shape and index constants, weights only where an op's rule says so
# (a QLinearConv's int32 bias).
WEIGHT_DTYPES = FLOAT_DTYPES | {"int8", "uint8", "int4", "uint4", "int2", "uint2"}

# The --dtype choices: how a user names the precision floating-point tensors are priced at.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8",
              "mixed": "float16", "mixed-bf16": "bfloat16"}
# Mixed precision: activations, weights and gradients at 16 bits, plus fp32 master weights and
# fp32 optimizer state (training).
MIXED = frozenset({"mixed", "mixed-bf16"})
# A model held in 16 bits (a config's torch_dtype) trains in mixed precision at that width, as
# torchtitan, Megatron-LM, DeepSpeed and transformers' Trainer (bf16=True) train one.
MIXED_AT = {"bfloat16": "mixed-bf16", "float16": "mixed"}


@functools.cache  # asked once per tensor: protobuf's enum lookups cost 10 us each
def dtype_name(elem_type: int) -> str | None:
    """The IR's dtype name for an ONNX ``TensorProto.DataType`` value ("undefined" for 0), or None
    for a number that names no type."""
    from archcalc.onnx_proto import TensorProto  # the enum, without onnx's import cost

    if elem_type not in TensorProto.DataType.values():
        return None
    name = TensorProto.DataType.Name(elem_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


def onnx_dtype(elem_type: int) -> str:
    """The IR's dtype name for a defined ONNX element type (``onnx_check`` has refused the rest);
    an unset one (a value_info without type) is taken as float32."""
    name = dtype_name(elem_type)
    return "float32" if name in (None, "undefined") else name
