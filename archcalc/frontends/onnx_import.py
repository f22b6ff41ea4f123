"""ONNX -> IR, reading structure only.

Initializers become tensors with their dims and dtype; their bytes are never turned into arrays,
except for the few small integer and scalar tensors that shape arithmetic needs (a Reshape's target,
a Gather's index). External data files are never opened.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from archcalc.dtypes import WEIGHT_DTYPES, onnx_dtype
from archcalc.errors import InputError
from archcalc.frontends.onnx_check import check_model
from archcalc.frontends.onnx_helpers import attribute_value, to_array
from archcalc.frontends.onnx_reader import read_structure, read_tensor
from archcalc.frontends.paths import not_onnx, regular_file
from archcalc.ir import Graph, Layer, Role, Shape, Tensor
from archcalc.onnx_proto import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    ValueInfoProto,
    infer_shapes,
)

# Tensors up to this many elements have their values read: enough for every shape and index
# constant an exporter writes, far too few for any real weight.
SMALL_VALUE_LIMIT = 64
CORRUPT = "the file is truncated, corrupt or not ONNX; re-export it"


def load_model(source: str | os.PathLike | ModelProto, skipped: dict[str, tuple[int, int]] | None = None,
               raw: dict[str, int] | None = None) -> ModelProto:
    """Parse an ONNX file's structure (no weight bytes); every failure is a one-line InputError.
    ``skipped`` receives where each initializer whose bytes were not read lies in the file, ``raw``
    the length of its raw data."""
    if isinstance(source, ModelProto):
        return source
    path = regular_file(source)
    try:
        model = read_structure(path, SMALL_VALUE_LIMIT, skipped, raw)
    except RecursionError:
        raise InputError(f"{path}: its graphs nest deeper than protobuf's parser goes (If or Loop bodies "
                         "inside each other, about 100 levels): archcalc cannot read it") from None
    except DecodeError as exc:
        if "MaxDepth" in str(exc) or "recursion" in str(exc).lower():  # not corrupt: too deep for protobuf
            raise InputError(f"{path}: its subgraphs (If, Loop and Scan bodies) nest deeper than protobuf's "
                             "parser reads (100 levels of messages, about 30 bodies inside each other): "
                             "archcalc cannot read it; flatten the control flow") from None
        raise _unreadable(path, f"not a valid ONNX model ({exc}): {CORRUPT}") from None
    except (RuntimeError, ValueError) as exc:
        raise _unreadable(path, f"not a valid ONNX model ({exc}): {CORRUPT}") from None
    if model.ir_version == 0 or not model.HasField("graph"):
        raise _unreadable(path, "not an ONNX model (no ir_version or graph): re-export it")
    return model


def _unreadable(path: Path, problem: str) -> InputError:
    """The error for a file that does not read as ONNX: what it is instead, where its bytes or its
    name tell (a design, another format's checkpoint), else ``problem``."""
    return InputError(not_onnx(path) or f"{path}: {problem}")


def _value_info_tensor(vi: ValueInfoProto, role: Role) -> Tensor:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise InputError(f"graph input '{vi.name}' is not a tensor (sequences and maps are not supported)")
    shape: Shape | None = None
    if tt.HasField("shape"):
        # A stored dim of -1 or 0 is how some exporters (paddle2onnx, tf2onnx) say "dynamic": it
        # is symbolic, bound like any other, never taken as a size.
        # paddle2onnx names every dynamic dim "?": not one symbol shared by H and W, but none.
        shape = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
            (d.dim_param if d.dim_param and d.dim_param != "?" else f"{vi.name}[{i}]")
            for i, d in enumerate(tt.shape.dim)
        )
    return Tensor(vi.name, shape, onnx_dtype(tt.elem_type), role)


def _initializer_tensor(init: TensorProto) -> Tensor:
    shape = tuple(int(d) for d in init.dims)
    tensor = Tensor(init.name, shape, onnx_dtype(init.data_type), Role.WEIGHT)
    external = init.data_location == TensorProto.EXTERNAL
    if not external and math.prod(shape) <= SMALL_VALUE_LIMIT:
        tensor.value = to_array(init)
    return tensor


def _attr_value(attr: AttributeProto):
    if attr.type == AttributeProto.TENSOR:
        t = attr.t
        small = t.data_location != TensorProto.EXTERNAL and math.prod(t.dims) <= 1 << 16
        # A Constant node holding a real weight is described like an initializer: dims, no bytes.
        return to_array(t) if small else _initializer_tensor(t)
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return attribute_value(attr)  # kept as protobuf for onnx's fallback inference
    value = attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _constant_tensor(node: NodeProto) -> Tensor:
    """A Constant node's output as a tensor: its value if small, else dims like an initializer.

    A Constant is a stored tensor like an initializer (paddle2onnx writes every weight as one), so
    one of a weight dtype with more than one element is a parameter candidate, settled as for
    initializers: a weight where a layer reads it as one, else a constant. Its value is kept when
    small, for folding."""
    attrs = {a.name: _attr_value(a) for a in node.attribute}
    name = node.output[0]
    value = next(iter(attrs.values()))
    if isinstance(value, Tensor):
        return Tensor(name, value.shape, value.dtype, Role.WEIGHT)
    key = next(iter(attrs))
    array = np.asarray(value, dtype={"value_float": np.float32, "value_floats": np.float32,
                                     "value_int": np.int64, "value_ints": np.int64}.get(key))
    tensor_attr = next((a for a in node.attribute if a.type == AttributeProto.TENSOR), None)
    dtype = onnx_dtype(tensor_attr.t.data_type) if tensor_attr is not None else \
        "string" if array.dtype.kind in "US" else str(array.dtype)
    role = Role.WEIGHT if dtype in WEIGHT_DTYPES and array.size else Role.CONSTANT
    return Tensor(name, tuple(array.shape), dtype, role, array)


def _layers(graph: GraphProto, tensors: dict[str, Tensor], source: str, opset: int) -> list[Layer]:
    """The graph's nodes as layers; Constant nodes become constant tensors instead."""
    layers, seen = [], set()
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensors[node.output[0]] = _constant_tensor(node)
            continue
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        layers.append(Layer(
            name=name,
            op_type=node.op_type,
            inputs=list(node.input),
            outputs=list(node.output),
            attrs={a.name: _attr_value(a) for a in node.attribute},
            domain="" if node.domain == "ai.onnx" else node.domain,
            subgraphs={a.name: _subgraph(a.g, f"{source}: node '{name}' ({node.op_type}) {a.name}", opset)
                       for a in node.attribute if a.type == AttributeProto.GRAPH},
            meta={p.key: p.value for p in node.metadata_props},
        ))
    return layers


def _subgraph(g: GraphProto, source: str, opset: int) -> Graph:
    """A control-flow body as a graph: its inputs (a Loop's iteration number, condition and state)
    take their shapes from the enclosing node when analysed; names it reads but does not define are
    the enclosing graph's."""
    tensors = {init.name: _initializer_tensor(init) for init in g.initializer}
    for vi in g.input:
        if vi.name not in tensors:
            tt = vi.type.tensor_type
            tensors[vi.name] = Tensor(vi.name, None, onnx_dtype(tt.elem_type) if vi.type.HasField("tensor_type")
                                      else "unknown", Role.INPUT)
    layers = _layers(g, tensors, source, opset)
    inputs = [vi.name for vi in g.input if vi.name not in {i.name for i in g.initializer}]
    return Graph(name=g.name, tensors=tensors, layers=layers, inputs=inputs, outputs=[o.name for o in g.output],
                 opset=opset, source=source)


def _execution_order(layers: list[Layer], known: set[str], source: str) -> list[Layer]:
    """ONNX requires nodes in topological order; exporters that break it get a stable sort."""
    available = set(known)
    for ly in layers:
        if not all(n in available or not n for n in ly.inputs):
            break
        available.update(ly.outputs)
    else:
        return layers
    import networkx as nx

    producer = {o: i for i, ly in enumerate(layers) for o in ly.outputs}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(layers)))
    g.add_edges_from((producer[n], i) for i, ly in enumerate(layers) for n in ly.inputs if n in producer)
    try:
        return [layers[i] for i in nx.lexicographical_topological_sort(g)]
    except nx.NetworkXUnfeasible:
        raise InputError(f"{source}: the graph has a cycle: it is not a valid ONNX graph") from None


def to_ir(model: ModelProto, source: str = "<model>") -> Graph:
    """Build the IR of ``model``'s main graph. Shapes of non-inputs are left for inference."""
    g = model.graph
    tensors: dict[str, Tensor] = {}
    for init in g.initializer:
        tensors[init.name] = _initializer_tensor(init)
    inputs = [vi.name for vi in g.input if vi.name not in tensors]
    for vi in g.input:
        if vi.name not in tensors:
            tensors[vi.name] = _value_info_tensor(vi, Role.INPUT)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 21)
    layers = _layers(g, tensors, source, opset)
    undefined = Graph(g.name, tensors, layers, inputs, []).undefined_read()
    if undefined:
        name, reader = undefined
        raise InputError(f"{source}: tensor '{name}' is read (by node '{reader.name}', {reader.op_type}) but "
                         "never defined: the graph is broken")
    layers = _execution_order(layers, set(tensors), source)
    return Graph(
        static_shapes=functools.partial(static_shapes, model),
        name=Path(source).stem if not source.startswith("<") else g.name or "model",
        tensors=tensors,
        layers=layers,
        inputs=inputs,
        outputs=[o.name for o in g.output],
        opset=opset,
        source=source,
    )


def static_shapes(model: ModelProto) -> dict[str, tuple]:
    """Each tensor's shape as onnx's inference knows it before running (what onnxruntime's planner
    sees): dims are ints or the model's named symbols; unknown and generated (unk__) dims are None.
    onnx's C++ inference runs without the onnx package's import (see archcalc.onnx_proto)."""
    try:
        inferred = infer_shapes(model)
    except Exception:  # then nothing is known statically, which is safe
        return {}
    out = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else
                                 (d.dim_param if d.dim_param and not d.dim_param.startswith("unk__") else None)
                                 for d in tt.shape.dim)
    return out


def stored_value(model: ModelProto, path: Path | None, skipped: dict[str, tuple[int, int]],
                 name: str) -> np.ndarray | None:
    """One initializer's values: read from the file where the import skipped them, None where they
    lie in external data (never opened) or cannot be decoded."""
    try:
        tensor: TensorProto | None
        if name in skipped and path is not None:
            tensor = read_tensor(path, skipped[name])
        else:
            tensor = next((t for t in model.graph.initializer if t.name == name), None)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        return to_array(tensor)
    except Exception:  # an undecodable tensor: its values are unknown, said as such
        return None


def import_onnx(source: str | os.PathLike | ModelProto, label: str | None = None) -> Graph:
    """Read ``source`` (a path or a ModelProto; ``label``: what errors call it) into the IR."""
    label = label or ("<ModelProto>" if isinstance(source, ModelProto) else str(source))
    skipped: dict[str, tuple[int, int]] = {}
    raw: dict[str, int] = {}
    model = load_model(source, skipped, raw)
    check_model(model, label, raw)
    graph = to_ir(model, label)
    path = None if isinstance(source, ModelProto) else Path(source)
    graph.stored_value = functools.partial(stored_value, model, path, skipped)
    return graph
