"""The kinds of graph real third-party files hold -- control flow, sequences, recurrent layers,
quantized and fused ops, data-dependent sizes, weights stored as Constant nodes -- built small with
onnx.helper (and onnxruntime.quantization), each checked against onnxruntime's executed shapes and
the ONNX spec's closed forms, so CI needs no download."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import archcalc
from archcalc.measure.validate import every_output

F, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(0)


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def make(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name=o) if isinstance(o, str) else o
                                               for o in outputs], list(inits))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, 1) for d in extra_opsets]]
    return helper.make_model(g, opset_imports=opsets, ir_version=9)


def executed(model, feeds):
    """onnxruntime's shape of every main-graph node output (optimizations off)."""
    m = every_output(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return {n: np.asarray(v) for n, v in zip(names, sess.run(names, feeds)) if isinstance(v, np.ndarray)}


def check_against_onnxruntime(model, feeds, tmp_path, **kw):
    """Every executed tensor: equal to archcalc's shape and dtype, or within its bound."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    est = archcalc.estimate(path, inputs={k: "x".join(map(str, v.shape)) or "scalar" for k, v in feeds.items()},
                            **kw)
    for name, value in executed(model, feeds).items():
        t = est.graph.tensors[name]
        assert t.known, (name, est.totals.unknown)
        if t.bound:
            assert len(t.shape) == value.ndim and all(a >= b for a, b in zip(t.shape, value.shape)), name
        else:
            assert (t.shape, t.dtype) == (value.shape, str(value.dtype)), name
    return est


# --- recurrent layers: MACs from the spec's equations ------------------------------------------

@pytest.mark.parametrize("op,gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_recurrent_shapes_and_closed_form_macs(op, gates, direction, tmp_path):
    seq, batch, inp, hidden = 7, 3, 5, 6
    dirs = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(RNG.standard_normal((dirs, gates * hidden, inp), np.float32), "W"),
             numpy_helper.from_array(RNG.standard_normal((dirs, gates * hidden, hidden), np.float32), "R"),
             numpy_helper.from_array(RNG.standard_normal((dirs, 2 * gates * hidden), np.float32), "B")]
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, ["x", "W", "R", "B"], outs, hidden_size=hidden, direction=direction, name="rnn")
    model = make([node], [vi("x", [seq, batch, inp])], outs, inits)
    est = check_against_onnxruntime(model, {"x": RNG.standard_normal((seq, batch, inp), np.float32)}, tmp_path)
    row = next(r for r in est.layers_list if r.name == "rnn")
    assert row.macs == dirs * seq * batch * gates * hidden * (inp + hidden)
    assert est.totals.params == dirs * gates * hidden * (inp + hidden + 2)


def test_lstm_weights_in_constant_nodes_sliced_at_load_time_count(tmp_path):
    """silero-vad's OpenVINO export: W, R and B are Constant nodes sliced before the LSTM."""
    hidden, inp = 4, 3
    w = RNG.standard_normal((1, 8 * hidden, inp), np.float32)  # two layers' W, the first used
    nodes = [helper.make_node("Constant", [], ["Wall"], value=numpy_helper.from_array(w)),
             helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Constant", [], ["e"], value=numpy_helper.from_array(np.array([4 * hidden], np.int64))),
             helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(np.array([1], np.int64))),
             helper.make_node("Slice", ["Wall", "s", "e", "a"], ["W"]),
             helper.make_node("Constant", [], ["R"], value=numpy_helper.from_array(
                 RNG.standard_normal((1, 4 * hidden, hidden), np.float32))),
             helper.make_node("LSTM", ["x", "W", "R"], ["Y"], hidden_size=hidden)]
    model = make(nodes, [vi("x", [2, 1, inp])], ["Y"])
    est = check_against_onnxruntime(model, {"x": np.ones((2, 1, inp), np.float32)}, tmp_path)
    assert est.totals.params == w.size + 4 * hidden * hidden  # what the file stores


# --- control flow ---------------------------------------------------------------------------------

def _branch(name, op, weight_shape):
    w = numpy_helper.from_array(RNG.standard_normal(weight_shape, np.float32), f"{name}_w")
    return helper.make_graph([helper.make_node(op, ["x", f"{name}_w"], [f"{name}_y"])], name, [],
                             [vi(f"{name}_y", None)], [w])


def test_if_reads_outer_values_and_an_unknown_condition_takes_the_union(tmp_path):
    """Branches read the outer 'x'; which runs depends on an input: the costlier is priced, each
    branch's weights count, and the output is exact where the branches agree."""
    then = _branch("then", "MatMul", (4, 4))
    other = _branch("else", "Add", (4,))
    nodes = [helper.make_node("Greater", ["flag", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    model = make(nodes, [vi("x", [2, 4]), vi("flag", [], F)], ["y"],
                 [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    feeds = {"x": np.ones((2, 4), np.float32), "flag": np.array(1, np.float32)}
    est = check_against_onnxruntime(model, feeds, tmp_path)
    assert est.graph.tensors["y"].shape == (2, 4)
    assert est.totals.params == 16 + 4
    assert est.totals.macs == 2 * 4 * 4  # the MatMul branch, the costlier
    assert est.totals.status == "upper bound"  # the other branch costs less


def test_if_with_a_known_condition_is_exact(tmp_path):
    then = _branch("then", "MatMul", (4, 8))
    other = _branch("else", "MatMul", (4, 2))
    cond = numpy_helper.from_array(np.array(False), "c")
    model = make([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], [vi("x", [3, 4])],
                 ["y"], [cond])
    est = check_against_onnxruntime(model, {"x": np.ones((3, 4), np.float32)}, tmp_path)
    assert est.graph.tensors["y"].shape == (3, 2) and est.totals.status == "exact"
    assert est.totals.macs == 3 * 2 * 4 and est.totals.params == 32 + 8


def test_loop_costs_its_body_per_iteration_and_stacks_scan_outputs(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["h_in", "w"], ["h_out"]),
         helper.make_node("Relu", ["h_out"], ["scan"])],
        "body", [vi("i", [], I64), vi("cond_in", [], TensorProto.BOOL), vi("h_in", None)],
        [onnx.ValueInfoProto(name=n) for n in ("cond_out", "h_out", "scan")])
    inits = [numpy_helper.from_array(np.array(5, np.int64), "M"), numpy_helper.from_array(np.array(True), "go"),
             numpy_helper.from_array(RNG.standard_normal((4, 4), np.float32) / 4, "w")]
    model = make([helper.make_node("Loop", ["M", "go", "h0"], ["h", "scans"], body=body)], [vi("h0", [2, 4])],
                 ["h", "scans"], inits)
    est = check_against_onnxruntime(model, {"h0": np.ones((2, 4), np.float32)}, tmp_path)
    assert est.graph.tensors["scans"].shape == (5, 2, 4)
    assert est.totals.macs == 5 * 2 * 4 * 4 and est.totals.params == 16


def test_a_loop_whose_trip_count_is_an_input_is_unknown_until_given_with_dim(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Relu", ["h_in"], ["h_out"]),
         helper.make_node("Identity", ["h_out"], ["scan"])],
        "body", [vi("i", [], I64), vi("cond_in", [], TensorProto.BOOL), vi("h_in", None)],
        [onnx.ValueInfoProto(name=n) for n in ("cond_out", "h_out", "scan")])
    model = make([helper.make_node("Loop", ["M", "", "h0"], ["h", "scans"], body=body, name="steps")],
                 [vi("M", [], I64), vi("h0", [2, 3])], ["h", "scans"])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    est = archcalc.estimate(path)
    assert "--dim steps.trips=N" in est.totals.unknown["steps"]
    feeds = {"M": np.array(4, np.int64), "h0": np.ones((2, 3), np.float32)}
    est = check_against_onnxruntime(model, feeds, tmp_path, dims={"steps.trips": 4})
    assert est.graph.tensors["scans"].shape == (4, 2, 3) and est.totals.flops == 4 * 6


def test_loop_appending_to_a_sequence_is_extrapolated(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("SequenceInsert", ["s_in", "r"], ["s_out"])],
        "body", [vi("i", [], I64), vi("cond_in", [], TensorProto.BOOL),
                 helper.make_tensor_sequence_value_info("s_in", F, None)],
        [onnx.ValueInfoProto(name="cond_out"), helper.make_tensor_sequence_value_info("s_out", F, None)])
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=F),
             helper.make_node("Loop", ["M", "", "s0"], ["s"], body=body),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)]
    model = make(nodes, [vi("x", [2, 3])], ["y"], [numpy_helper.from_array(np.array(4, np.int64), "M")])
    est = check_against_onnxruntime(model, {"x": np.ones((2, 3), np.float32)}, tmp_path)
    assert est.graph.tensors["y"].shape == (8, 3)


def test_scan_runs_its_body_once_per_slice(tmp_path):
    body = helper.make_graph([helper.make_node("Add", ["acc", "row"], ["acc_out"]),
                              helper.make_node("Identity", ["acc_out"], ["each"])],
                             "body", [vi("acc", [3]), vi("row", [3])], [vi("acc_out", [3]), vi("each", [3])])
    model = make([helper.make_node("Scan", ["a0", "xs"], ["a", "ys"], body=body, num_scan_inputs=1)],
                 [vi("a0", [3]), vi("xs", [6, 3])], ["a", "ys"])
    est = check_against_onnxruntime(model, {"a0": np.zeros(3, np.float32), "xs": np.ones((6, 3), np.float32)},
                                    tmp_path)
    assert est.graph.tensors["ys"].shape == (6, 3) and est.totals.flops == 6 * 3


def test_split_to_sequence_and_back(tmp_path):
    nodes = [helper.make_node("SplitToSequence", ["x", "k"], ["s"], axis=1),
             helper.make_node("SequenceAt", ["s", "zero"], ["first"]),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0, new_axis=1)]
    inits = [numpy_helper.from_array(np.array(2, np.int64), "k"), numpy_helper.from_array(np.array(0, np.int64), "zero")]
    model = make(nodes, [vi("x", [3, 6])], ["first", "n", "y"], inits)
    check_against_onnxruntime(model, {"x": np.ones((3, 6), np.float32)}, tmp_path)


# --- data-dependent sizes: bounds that hold -----------------------------------------------------

def test_nonzero_and_nms_give_bounds_that_hold_and_propagate(tmp_path):
    nodes = [helper.make_node("NonZero", ["mask"], ["idx"]),
             helper.make_node("Transpose", ["idx"], ["idx_t"]),
             helper.make_node("NonMaxSuppression", ["boxes", "scores", "k", "iou", "thr"], ["sel"]),
             helper.make_node("Shape", ["sel"], ["n"]),
             helper.make_node("Gather", ["scores_flat", "picked"], ["picked_scores"]),
             helper.make_node("Gather", ["sel", "two"], ["picked"], axis=1),
             helper.make_node("Reshape", ["scores", "flat"], ["scores_flat"])]
    inits = [numpy_helper.from_array(np.array([3], np.int64), "k"), numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
             numpy_helper.from_array(np.array([0.0], np.float32), "thr"), numpy_helper.from_array(np.array(2, np.int64), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    model = make(nodes, [vi("mask", [4, 5], TensorProto.BOOL), vi("boxes", [1, 10, 4]), vi("scores", [1, 2, 10])],
                 ["idx_t", "n", "picked_scores"], inits)
    boxes = np.sort(RNG.random((1, 10, 4), np.float32), axis=-1)
    feeds = {"mask": RNG.random((4, 5)) > 0.5, "boxes": boxes, "scores": RNG.random((1, 2, 10), np.float32)}
    est = check_against_onnxruntime(model, feeds, tmp_path)
    assert est.graph.tensors["idx"].shape == (2, 20) and est.graph.tensors["idx"].bound
    assert est.graph.tensors["sel"].shape == (1 * 2 * 3, 3)  # batches x classes x max boxes per class
    assert est.graph.tensors["picked_scores"].bound and est.totals.status == "upper bound"


def test_a_reshape_to_a_shape_computed_from_data_is_unknown_and_only_its_readers(tmp_path):
    nodes = [helper.make_node("Cast", ["t"], ["target"], to=I64), helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"]), helper.make_node("Relu", ["x"], ["z"])]
    model = make(nodes, [vi("x", [2, 6]), vi("t", [2])], ["y", "z"])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    est = archcalc.estimate(path)
    assert set(est.totals.unknown) == {"Reshape_1", "Relu_2"} and est.graph.tensors["z"].shape == (2, 6)


# --- quantized models -----------------------------------------------------------------------------

def _float_model(tmp_path):
    w1 = RNG.standard_normal((8, 3, 3, 3), np.float32)
    w2 = RNG.standard_normal((8 * 6 * 6, 10), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "w2"], ["y"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2")]
    path = tmp_path / "float.onnx"
    onnx.save(make(nodes, [vi("x", [1, 3, 8, 8])], ["y"], inits, opset=13), str(path))
    return path, w1.size + 8 + w2.size


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                 "QLinearConv", "QLinearMatMul"}


def _split(model) -> tuple[int, int]:
    """(values, scales and zero points) stored in the file, read with onnx: onnxruntime's quantizer
    names every scale and zero point it writes ``*_scale`` / ``*_zero_point``; those a quantized op
    reads are quantization parameters (a scale the graph multiplies by with Mul is arithmetic on a
    scalar, as any other)."""
    read_by = {name: node.op_type for node in model.graph.node for name in node.input}
    values = quant = 0
    for t in model.graph.initializer:
        size = int(np.prod(t.dims))
        if t.name.endswith(("_scale", "_zero_point")):
            reader = read_by.get(t.name, "")
            quant += size if reader in QUANTIZED_OPS or reader.startswith("QLinear") else 0
        elif t.data_type != TensorProto.INT64:  # int64: shape constants
            values += size
    return values, quant


def test_dynamic_quantization_counts_int8_weights_and_their_scales_apart(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, float_params = _float_model(tmp_path)
    dst = tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    est = check_against_onnxruntime(model, {"x": np.ones((1, 3, 8, 8), np.float32)}, tmp_path)
    values, quant = _split(model)
    assert est.totals.params == values == float_params
    assert est.totals.quant_params == quant
    assert est.totals.unsupported_ops == {} and est.totals.macs == 8 * 6 * 6 * 27 + 288 * 10


def test_static_qdq_quantization_prices_weights_at_their_true_bytes(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Data(CalibrationDataReader):
        def __init__(self):
            self.left = [{"x": RNG.random((1, 3, 8, 8), np.float32)} for _ in range(2)]

        def get_next(self):
            return self.left.pop() if self.left else None

    src, float_params = _float_model(tmp_path)
    dst = tmp_path / "qdq.onnx"
    quantize_static(str(src), str(dst), Data(), quant_format=QuantFormat.QDQ)
    model = onnx.load(str(dst))
    est = check_against_onnxruntime(model, {"x": np.ones((1, 3, 8, 8), np.float32)}, tmp_path)
    values, quant = _split(model)
    assert est.totals.params == values == float_params  # int8 weights, an int32 bias
    assert est.totals.quant_params == quant
    # True bytes (int8 one each, the int32 bias four), not elements x 4.
    assert est.totals.param_bytes == sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
                                         if t.data_type != TensorProto.INT64)


# --- onnxruntime's fused ops, run by onnxruntime ----------------------------------------------------

def test_fused_transformer_ops_against_onnxruntime(tmp_path):
    b, s, d, heads = 2, 5, 8, 2
    nodes = [
        helper.make_node("Attention", ["x", "wqkv", "bqkv"], ["att"], domain="com.microsoft", num_heads=heads),
        helper.make_node("SkipLayerNormalization", ["att", "x", "g", "beta", "bias"], ["ln"], domain="com.microsoft"),
        helper.make_node("FastGelu", ["ln", "bias"], ["gelu"], domain="com.microsoft"),
        helper.make_node("FusedMatMul", ["gelu", "w"], ["mm"], domain="com.microsoft", transB=1),
        helper.make_node("MultiHeadAttention", ["mm", "mm", "mm"], ["mha"], domain="com.microsoft", num_heads=heads),
        helper.make_node("BiasGelu", ["mha", "bias"], ["y"], domain="com.microsoft"),
    ]
    inits = [numpy_helper.from_array(RNG.standard_normal((d, 3 * d), np.float32), "wqkv"),
             numpy_helper.from_array(np.zeros(3 * d, np.float32), "bqkv"),
             numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "beta"),
             numpy_helper.from_array(np.zeros(d, np.float32), "bias"),
             numpy_helper.from_array(RNG.standard_normal((d, d), np.float32), "w")]
    model = make(nodes, [vi("x", [b, s, d])], ["y"], inits, extra_opsets=["com.microsoft"])
    est = check_against_onnxruntime(model, {"x": RNG.standard_normal((b, s, d), np.float32)}, tmp_path)
    rows = {r.op_type: r for r in est.layers_list}
    head = d // heads
    assert rows["Attention"].macs == b * s * d * 3 * d + 2 * b * heads * s * s * head
    assert rows["MultiHeadAttention"].macs == 2 * b * heads * s * s * head
    assert rows["FusedMatMul"].macs == b * s * d * d
    assert est.totals.params == 3 * d * d + 3 * d + d + d + d + d * d
    assert est.totals.unsupported_ops == {}


# --- scikit-learn pipelines (ai.onnx.ml) ----------------------------------------------------------

def test_scikit_learn_style_pipeline_against_onnxruntime(tmp_path):
    ml = "ai.onnx.ml"
    nodes = [
        helper.make_node("Scaler", ["x"], ["s"], domain=ml, offset=[0.0] * 4, scale=[1.0] * 4),
        helper.make_node("LinearClassifier", ["s"], ["label", "scores"], domain=ml, classlabels_ints=[0, 1, 2],
                         coefficients=list(RNG.standard_normal(12)), intercepts=[0.0, 0.0, 0.0]),
        helper.make_node("Normalizer", ["scores"], ["p"], domain=ml, norm="L1"),
        helper.make_node("ZipMap", ["p"], ["maps"], domain=ml, classlabels_int64s=[0, 1, 2]),
        # A depth-2 tree: root -> (leaf, node 2 -> (leaf, leaf)).
        helper.make_node("TreeEnsembleClassifier", ["x"], ["tl", "tp"], domain=ml, classlabels_int64s=[0, 1],
                         nodes_treeids=[0] * 5, nodes_nodeids=[0, 1, 2, 3, 4], nodes_featureids=[0, 0, 1, 0, 0],
                         nodes_modes=["BRANCH_LEQ", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF"],
                         nodes_values=[0.5, 0, 0.5, 0, 0], nodes_truenodeids=[1, 0, 3, 0, 0],
                         nodes_falsenodeids=[2, 0, 4, 0, 0], class_treeids=[0, 0, 0], class_nodeids=[1, 3, 4],
                         class_ids=[0, 1, 1], class_weights=[1.0, 1.0, 1.0]),
    ]
    g = helper.make_graph(nodes, "g", [vi("x", [5, 4])], [onnx.ValueInfoProto(name=o)
                                                         for o in ("label", "maps", "tl", "tp")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ml, 3)],
                              ir_version=9)
    est = check_against_onnxruntime(model, {"x": RNG.random((5, 4), np.float32)}, tmp_path)
    rows = {r.op_type: r for r in est.layers_list}
    assert rows["LinearClassifier"].macs == 5 * 4 * 3
    assert rows["TreeEnsembleClassifier"].flops == 5 * (2 + 1 * 2)  # depth 2, one tree, 2 classes
    assert est.graph.tensors["maps"].seq == 5 and est.totals.status == "exact"


def test_qoperator_quantization_against_onnxruntime(tmp_path):
    """onnxruntime's QOperator format: QLinearConv, QLinearAdd, QLinearSigmoid, QLinearConcat,
    QLinearGlobalAveragePool, QLinearMatMul between QuantizeLinear and DequantizeLinear."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Data(CalibrationDataReader):
        def __init__(self):
            self.left = [{"x": RNG.random((1, 3, 8, 8), np.float32)} for _ in range(2)]

        def get_next(self):
            return self.left.pop() if self.left else None

    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(RNG.standard_normal((8, 5), np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "c"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["s"]), helper.make_node("Concat", ["s", "c"], ["cat"], axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["y"])]
    src = tmp_path / "float.onnx"
    onnx.save(make(nodes, [vi("x", [1, 3, 8, 8])], ["y"], [w, m], opset=13), str(src))
    dst = tmp_path / "qop.onnx"
    quantize_static(str(src), str(dst), Data(), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["Conv", "Add", "Sigmoid", "Concat", "GlobalAveragePool", "MatMul"])
    model = onnx.load(str(dst))
    est = check_against_onnxruntime(model, {"x": np.ones((1, 3, 8, 8), np.float32)}, tmp_path)
    assert est.totals.unsupported_ops == {} and est.totals.status == "exact"
    values, quant = _split(model)
    assert est.totals.params == values and est.totals.quant_params == quant
