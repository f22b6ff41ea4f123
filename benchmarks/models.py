"""Benchmark models, built without torch: the zoo's exports refilled with random weights, and
synthetic transformers and chains of any size, written with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def refilled(stripped: Path, out: Path) -> Path:
    """``stripped`` (weights replaced by references to a missing file) with random weights embedded."""
    if out.exists():
        return out
    model = onnx.load(str(stripped), load_external_data=False)
    rng = np.random.default_rng(0)
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        data = rng.standard_normal(int(np.prod(t.dims)), dtype=np.float32).astype(dtype)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT
        t.raw_data = data.tobytes()
    onnx.save(model, str(out))
    return out


def _dense(name, x, d_in, d_out, inits, nodes, rng):
    inits.append(numpy_helper.from_array(rng.standard_normal((d_in, d_out), np.float32) * 0.02, f"{name}.w"))
    inits.append(numpy_helper.from_array(np.zeros(d_out, np.float32), f"{name}.b"))
    nodes.append(helper.make_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"]))
    nodes.append(helper.make_node("Add", [f"{name}.mm", f"{name}.b"], [f"{name}.out"]))
    return f"{name}.out"


def decoder(out: Path, layers: int, d: int = 768, heads: int = 12, vocab: int = 50257) -> Path:
    """A GPT-2-shaped decoder: token embedding, ``layers`` pre-norm blocks, tied-free LM head."""
    if out.exists():
        return out
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    inits.append(numpy_helper.from_array(rng.standard_normal((vocab, d), np.float32) * 0.02, "wte"))
    nodes.append(helper.make_node("Gather", ["wte", "ids"], ["h0"]))
    for c, v in (("heads_shape", [0, 0, heads, d // heads]), ("merge_shape", [0, 0, d])):
        inits.append(numpy_helper.from_array(np.array(v, np.int64), c))
    h = "h0"
    for i in range(layers):
        p = f"l{i}"
        for ln in ("ln1", "ln2"):
            inits.append(numpy_helper.from_array(np.ones(d, np.float32), f"{p}.{ln}.g"))
            inits.append(numpy_helper.from_array(np.zeros(d, np.float32), f"{p}.{ln}.b"))
        nodes.append(helper.make_node("LayerNormalization", [h, f"{p}.ln1.g", f"{p}.ln1.b"], [f"{p}.n1"]))
        qkv = []
        for part in "qkv":
            y = _dense(f"{p}.{part}", f"{p}.n1", d, d, inits, nodes, rng)
            nodes.append(helper.make_node("Reshape", [y, "heads_shape"], [f"{p}.{part}.r"]))
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            nodes.append(helper.make_node("Transpose", [f"{p}.{part}.r"], [f"{p}.{part}.t"], perm=perm))
            qkv.append(f"{p}.{part}.t")
        nodes.append(helper.make_node("MatMul", qkv[:2], [f"{p}.scores"]))
        nodes.append(helper.make_node("Softmax", [f"{p}.scores"], [f"{p}.probs"], axis=-1))
        nodes.append(helper.make_node("MatMul", [f"{p}.probs", qkv[2]], [f"{p}.ctx"]))
        nodes.append(helper.make_node("Transpose", [f"{p}.ctx"], [f"{p}.ctx.t"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"{p}.ctx.t", "merge_shape"], [f"{p}.ctx.m"]))
        a = _dense(f"{p}.proj", f"{p}.ctx.m", d, d, inits, nodes, rng)
        nodes.append(helper.make_node("Add", [h, a], [f"{p}.res1"]))
        nodes.append(helper.make_node("LayerNormalization", [f"{p}.res1", f"{p}.ln2.g", f"{p}.ln2.b"],
                                      [f"{p}.n2"]))
        f1 = _dense(f"{p}.fc", f"{p}.n2", d, 4 * d, inits, nodes, rng)
        nodes.append(helper.make_node("Gelu", [f1], [f"{p}.gelu"]))
        f2 = _dense(f"{p}.fc2", f"{p}.gelu", 4 * d, d, inits, nodes, rng)
        nodes.append(helper.make_node("Add", [f"{p}.res1", f2], [f"{p}.out"]))
        h = f"{p}.out"
    inits.append(numpy_helper.from_array(rng.standard_normal((d, vocab), np.float32) * 0.02, "lm_head"))
    nodes.append(helper.make_node("MatMul", [h, "lm_head"], ["logits"]))
    graph = helper.make_graph(nodes, f"decoder{layers}",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    onnx.save(model, str(out))
    return out


def chain(out: Path, nodes_wanted: int, width: int = 64) -> Path:
    """A synthetic graph of ``nodes_wanted`` nodes: MatMul -> Add -> Relu, repeated, small weights."""
    if out.exists():
        return out
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i in range(nodes_wanted // 3):
        y = _dense(f"b{i}", x, width, width, inits, nodes, rng)
        nodes.append(helper.make_node("Relu", [y], [f"b{i}.relu"]))
        x = f"b{i}.relu"
    graph = helper.make_graph(nodes, f"chain{nodes_wanted}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(out))
    return out
