"""IR -> ONNX: a design written as a runnable ONNX model with random weights.

Weights are drawn at random (BatchNorm starts as the identity: scale 1, shift 0, mean 0, variance 1),
so the model runs and its shapes and memory can be measured; its outputs mean nothing.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archcalc.errors import InputError
from archcalc.ir import Graph, Role

MAX_EXPORT_BYTES = (1 << 31) - (64 << 20)  # protobuf's 2 GiB, less room for the graph itself

_IDENTITY_BN = {"scale": 1.0, "var": 1.0, "shift": 0.0, "mean": 0.0}


def _initializer(name: str, shape, rng) -> onnx.TensorProto:
    suffix = name.rsplit(".", 1)[-1]
    if suffix in _IDENTITY_BN:
        data = np.full(shape, _IDENTITY_BN[suffix], np.float32)
    else:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        # Drawn as float32 and scaled in place: a float64 draw, scaled and cast, holds 20 bytes an element
        # at its peak where this holds 4 (vgg16's fc6, 103M weights: 1.7 to 3.9 s of CPU against 1.0 s).
        data = rng.standard_normal(shape, dtype=np.float32)
        data *= np.float32(np.sqrt(2.0 / fan_in))
    return numpy_helper.from_array(data, name)


def to_onnx(graph: Graph, seed: int = 0) -> onnx.ModelProto:
    """``graph`` as an ONNX model; the inputs keep their symbolic dims (the batch stays ``N``)."""
    if graph.quantized:  # its layers would export as a float model: not the checkpoint's
        raise InputError(f"{graph.source}: the config of a quantized checkpoint ({graph.quantized}): archcalc "
                         "does not write packed weights; export the model with its quantizer's own tools")
    rng = np.random.default_rng(seed)
    stored = [t for t in graph.tensors.values() if t.role in (Role.WEIGHT, Role.BUFFER) and t.shape is not None]
    size = 4 * sum(math.prod(int(d) for d in t.shape or ()) for t in stored)
    if size > MAX_EXPORT_BYTES:
        raise InputError(f"{graph.source}: the design's weights take {size / (1 << 30):,.1f} GiB; an ONNX file "
                         "holds at most 2 GiB in one piece: export a smaller design (archcalc estimate sizes "
                         "this one without exporting it)")
    if graph.runnable is not None:
        return graph.runnable(seed)
    inits = [_initializer(t.name, t.shape, rng) for t in stored]
    def value_info(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(graph.tensors[name].shape))

    inputs = [value_info(n) for n in graph.inputs]
    outputs = [value_info(n) for n in graph.outputs]
    nodes = [helper.make_node(ly.op_type, ly.inputs, ly.outputs, name=ly.name, **ly.attrs) for ly in graph.layers]
    g = helper.make_graph(nodes, graph.name, inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset)], producer_name="archcalc")
    model.ir_version = 9  # what onnxruntime 1.18 and later read
    onnx.checker.check_model(model)
    return model
