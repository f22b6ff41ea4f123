"""One pass over an ONNX model's structure before any work: every problem the rest of archcalc
would trip over becomes a one-line InputError that names the file, the place and the fix.

Checked: element types (known and defined), dims (not negative, element counts that fit any real
memory), the length of raw data against the dims, Constant nodes (one output, one value of its
declared type), attributes (a defined type, UTF-8 strings), and names (one writer per tensor, no
node writing over an input or a weight, no two inputs of one name, every output written).
"""

from __future__ import annotations

import math

from archcalc.dtypes import DTYPE_BYTES, dtype_name
from archcalc.errors import InputError
from archcalc.frontends.onnx_helpers import storage_field
from archcalc.onnx_proto import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto

# No real tensor holds more: 2^48 elements are 1 PiB of bytes. Larger counts are corrupt dims.
MAX_ELEMENTS = 1 << 48
CONSTANT_VALUES = {"value": AttributeProto.TENSOR, "value_float": AttributeProto.FLOAT,
                   "value_floats": AttributeProto.FLOATS, "value_int": AttributeProto.INT,
                   "value_ints": AttributeProto.INTS, "value_string": AttributeProto.STRING,
                   "value_strings": AttributeProto.STRINGS, "sparse_value": AttributeProto.SPARSE_TENSOR}
REEXPORT = "the file is corrupt or was written by a broken exporter; re-export it"


def _elem_type(source: str, what: str, elem: int) -> str:
    name = dtype_name(elem)
    if name is None or name == "undefined":
        raise InputError(f"{source}: {what} has element type {elem} "
                         f"({'UNDEFINED' if name else 'no such type'}): {REEXPORT}")
    if name not in DTYPE_BYTES:
        raise InputError(f"{source}: {what} has element type {name}, which archcalc cannot price")
    return name


MAX_RANK = 64  # numpy's limit, and far past any real tensor


def _dims(source: str, what: str, dims) -> int:
    if len(dims) > MAX_RANK:
        raise InputError(f"{source}: {what} has {len(dims)} dims, more than any tensor ({MAX_RANK}): {REEXPORT}")
    if any(d < 0 for d in dims):
        raise InputError(f"{source}: {what} has a negative dim {list(dims)}: {REEXPORT}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise InputError(f"{source}: {what} declares {count:.3g} elements (dims {list(dims)}), more than any "
                         f"memory holds: {REEXPORT}")
    return count


def check_tensor(source: str, t: TensorProto, what: str, raw_bytes: int | None = None) -> None:
    """A stored tensor: its type, its dims, and its raw data's length (``raw_bytes`` where the
    reader left the data out but noted its length)."""
    dtype = _elem_type(source, what, t.data_type)
    count = _dims(source, what, t.dims)
    if t.data_location == TensorProto.EXTERNAL:
        return
    raw = len(t.raw_data) if t.raw_data else raw_bytes
    need = math.ceil(count * DTYPE_BYTES[dtype])
    if raw and dtype == "string":
        raise InputError(f"{source}: {what} is a string tensor holding raw bytes (strings go in string_data): "
                         f"{REEXPORT}")
    if raw and raw != need:
        raise InputError(f"{source}: {what} holds {raw:,} bytes of raw data, but its dims {list(t.dims)} of "
                         f"{dtype} need {need:,}: {REEXPORT}")
    if raw_bytes is None and not t.raw_data:  # values kept whole: the typed field must hold them all
        field = storage_field(t.data_type)
        per_value = 2 if dtype.startswith("complex") else DTYPE_BYTES[dtype] if DTYPE_BYTES[dtype] < 1 else 1
        held, want = len(getattr(t, field)), math.ceil(count * per_value)
        if held != want:
            raise InputError(f"{source}: {what} holds {held:,} values in {field}, but its dims {list(t.dims)} of "
                             f"{dtype} need {want:,}: {REEXPORT}")


def _value_info(source: str, vi: ValueInfoProto, kind: str) -> None:
    if vi.type.HasField("tensor_type"):
        _elem_type(source, f"{kind} '{vi.name}'", vi.type.tensor_type.elem_type)
        if len(vi.type.tensor_type.shape.dim) > MAX_RANK:
            raise InputError(f"{source}: {kind} '{vi.name}' has {len(vi.type.tensor_type.shape.dim)} dims, more "
                             f"than any tensor ({MAX_RANK}): {REEXPORT}")
    elif kind == "graph input":
        which = vi.type.WhichOneof("value") or "no type"
        raise InputError(f"{source}: graph input '{vi.name}' is a {which.removesuffix('_type')}, not a tensor: "
                         "archcalc sizes tensors only (sequences, maps and optionals are not supported)")


def _attributes(source: str, node: NodeProto, where: str) -> None:
    for a in node.attribute:
        if a.type == AttributeProto.UNDEFINED:
            raise InputError(f"{source}: {where} attribute '{a.name}' has no type (UNDEFINED): {REEXPORT}")
        for text in ([a.s] if a.type == AttributeProto.STRING else list(a.strings)
                     if a.type == AttributeProto.STRINGS else []):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{source}: {where} attribute '{a.name}' is not UTF-8 text: {REEXPORT}") from None
        if a.type == AttributeProto.TENSOR:
            check_tensor(source, a.t, f"{where} attribute '{a.name}'")
        for g in ([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)):
            for sub in g.node:
                _attributes(source, sub, f"node '{sub.name or sub.op_type}' (inside {where.split(' (')[0]})")


def _constant(source: str, node: NodeProto, where: str) -> None:
    if len(node.output) != 1 or not node.output[0]:
        raise InputError(f"{source}: {where} has {len(node.output)} outputs; a Constant has exactly one: "
                         f"{REEXPORT}")
    if len(node.attribute) != 1 or node.attribute[0].name not in CONSTANT_VALUES:
        names = [a.name for a in node.attribute] or ["none"]
        raise InputError(f"{source}: {where} has attributes {names}; a Constant has exactly one of "
                         f"{', '.join(CONSTANT_VALUES)}: {REEXPORT}")
    a = node.attribute[0]
    if a.name == "sparse_value":
        raise InputError(f"{source}: {where} holds a sparse tensor, which archcalc does not read: store it dense "
                         "(an initializer or a Constant 'value')")
    if a.type != CONSTANT_VALUES[a.name]:
        kinds = AttributeProto.AttributeType
        given = kinds.Name(a.type) if a.type in kinds.values() else str(a.type)
        raise InputError(f"{source}: {where} attribute '{a.name}' has type {given}, not "
                         f"{kinds.Name(CONSTANT_VALUES[a.name])}: {REEXPORT}")


def _names(source: str, g: GraphProto) -> None:
    inputs = [vi.name for vi in g.input]
    dupes = sorted({n for n in inputs if inputs.count(n) > 1})
    if dupes:
        raise InputError(f"{source}: two graph inputs are named '{dupes[0]}': {REEXPORT}")
    stored = {t.name for t in g.initializer}
    writer: dict[str, str] = {}
    for i, node in enumerate(g.node):
        where = f"node '{node.name or f'{node.op_type}_{i}'}' ({node.op_type})"
        for out in filter(None, node.output):
            if out in writer:
                raise InputError(f"{source}: {where} writes '{out}', which {writer[out]} writes too: {REEXPORT}")
            if out in stored or out in inputs:
                kind = "a weight" if out in stored else "a graph input"
                raise InputError(f"{source}: {where} writes over '{out}', {kind}: {REEXPORT}")
            writer[out] = where
    for vi in g.output:
        if vi.name not in writer and vi.name not in stored and vi.name not in inputs:
            raise InputError(f"{source}: graph output '{vi.name}' is written by no node: {REEXPORT}")


def _utf8_names(source: str, g: GraphProto) -> None:
    """protobuf hands back a name that is not UTF-8 as bytes: such a file is corrupt."""
    def bad(*names) -> bool:
        return any(isinstance(n, bytes) for n in names)

    for kind, items in (("initializer", g.initializer), ("graph input", g.input), ("graph output", g.output)):
        for k, item in enumerate(items):
            if bad(item.name):
                raise InputError(f"{source}: {kind} {k}'s name is not UTF-8 text: {REEXPORT}")
    for i, node in enumerate(g.node):
        if bad(node.name, node.op_type, node.domain, *node.input, *node.output):
            op = node.op_type if isinstance(node.op_type, str) else "?"
            raise InputError(f"{source}: node {i} ({op}) has a name, op or tensor name that is not UTF-8 text: "
                             f"{REEXPORT}")


def check_model(model: ModelProto, source: str, raw_lengths: dict[str, int] | None = None) -> None:
    """Raise an InputError for the first structural problem of ``model``'s main graph.
    ``raw_lengths``: the raw data lengths of initializers whose bytes the reader skipped."""
    g = model.graph
    _utf8_names(source, g)
    raw_lengths = raw_lengths or {}
    for t in g.initializer:
        check_tensor(source, t, f"initializer '{t.name}'", raw_lengths.get(t.name))
    for vi in g.input:
        _value_info(source, vi, "graph input")
    for vi in g.output:
        _value_info(source, vi, "graph output")
    for i, node in enumerate(g.node):
        where = f"node '{node.name or f'{node.op_type}_{i}'}' ({node.op_type})"
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            _constant(source, node, where)
        _attributes(source, node, where)
    _names(source, g)
