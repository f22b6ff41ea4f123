"""Element types: the IR's dtype names, their sizes, and the mapping from ONNX's enum."""

from __future__ import annotations

# Bytes per element. bfloat16 and the 8-bit floats have no numpy dtype, so sizes are a table
# rather than ``np.dtype(name).itemsize``.
DTYPE_BYTES: dict[str, float] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "float8e4m3fn": 1, "float8e4m3fnuz": 1, "float8e5m2": 1, "float8e5m2fnuz": 1,
    "int64": 8, "uint64": 8, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2,
    "int8": 1, "uint8": 1, "bool": 1, "int4": 0.5, "uint4": 0.5,
    "complex64": 8, "complex128": 16, "string": 8,
}
FLOAT_DTYPES = frozenset(d for d in DTYPE_BYTES if d.startswith(("float", "bfloat")))

# The --dtype choices: how a user names the precision floating-point tensors are priced at.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8",
              "mixed": "float16", "mixed-bf16": "bfloat16"}
# Mixed precision: activations, weights and gradients at 16 bits, plus fp32 master weights and
# fp32 optimizer state (training).
MIXED = frozenset({"mixed", "mixed-bf16"})


def onnx_dtype(elem_type: int) -> str:
    """The IR's dtype name for an ONNX ``TensorProto.DataType`` value."""
    from onnx import TensorProto

    name = TensorProto.DataType.Name(elem_type).lower()
    return {"float": "float32", "double": "float64", "undefined": "float32"}.get(name, name)
