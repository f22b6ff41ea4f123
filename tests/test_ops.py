"""Each op rule on one-node graphs: shapes against onnxruntime's executed shapes, costs against
closed forms written from the operator definitions."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import archcalc
from archcalc.render.text import render

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def node_model(op, inputs, attrs=None, opset=17, n_out=1):
    """A one-node model. ``inputs``: (shape, value) pairs; a value makes the input an initializer."""
    names, vis, inits = [], [], []
    for i, (shape, value) in enumerate(inputs):
        name = f"in{i}"
        names.append(name if shape is not None or value is not None else "")
        if value is not None:
            inits.append(numpy_helper.from_array(np.asarray(value), name))
        elif shape is not None:
            vis.append(helper.make_tensor_value_info(name, F, shape))
    outs = [f"out{j}" for j in range(n_out)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    graph = helper.make_graph([node], op, vis, [helper.make_value_info(o, onnx.TypeProto()) for o in outs],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def ort_shapes(model):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).random(i.shape, np.float32) for i in sess.get_inputs()}
    return [list(v.shape) for v in sess.run(None, feeds)]


def ours(model):
    est = archcalc.estimate(model)
    return est, [list(est.graph.tensors[o.name].shape) for o in model.graph.output]


CASES = {
    "conv_same_upper_dilated": ("Conv", [([1, 3, 17, 19], None), (None, np.ones((8, 3, 3, 3), np.float32))],
                                {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    "conv_dilated_padded": ("Conv", [([2, 4, 20, 20], None), (None, np.ones((6, 4, 3, 3), np.float32))],
                            {"dilations": [2, 3], "pads": [1, 2, 0, 1], "strides": [2, 1]}),
    "conv_grouped": ("Conv", [([1, 8, 9, 9], None), (None, np.ones((16, 2, 3, 3), np.float32)),
                              (None, np.zeros(16, np.float32))], {"group": 4}),
    "conv_1d": ("Conv", [([1, 3, 50], None), (None, np.ones((5, 3, 7), np.float32))], {"strides": [3]}),
    "conv_3d": ("Conv", [([1, 2, 8, 9, 10], None), (None, np.ones((4, 2, 3, 3, 3), np.float32))], {}),
    "conv_valid": ("Conv", [([1, 1, 10, 10], None), (None, np.ones((1, 1, 4, 4), np.float32))],
                   {"auto_pad": "VALID", "strides": [3, 3]}),
    "conv_transpose": ("ConvTranspose", [([1, 4, 7, 9], None), (None, np.ones((4, 3, 3, 3), np.float32))],
                       {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}),
    "conv_transpose_grouped": ("ConvTranspose", [([1, 4, 5, 5], None),
                                                 (None, np.ones((4, 2, 4, 4), np.float32))],
                               {"group": 2, "strides": [2, 2]}),
    "maxpool_ceil": ("MaxPool", [([1, 3, 112, 112], None)],
                     {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "maxpool_ceil_pad": ("MaxPool", [([1, 1, 10, 10], None)],
                         {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "maxpool_dilated": ("MaxPool", [([1, 2, 15, 15], None)], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    "avgpool_same": ("AveragePool", [([1, 3, 11, 11], None)],
                     {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "lppool": ("LpPool", [([1, 3, 8, 8], None)], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "global_avg": ("GlobalAveragePool", [([2, 5, 7, 3], None)], {}),
    "gemm_trans": ("Gemm", [([7, 5], None), (None, np.ones((9, 7), np.float32))], {"transA": 1, "transB": 1}),
    "matmul_batched": ("MatMul", [([2, 1, 4, 5], None), ([3, 5, 6], None)], {}),
    "matmul_vec_left": ("MatMul", [([5], None), ([2, 5, 6], None)], {}),
    "matmul_vec_right": ("MatMul", [([3, 4, 5], None), ([5], None)], {}),
    "einsum": ("Einsum", [([2, 3, 4], None), ([2, 4, 5], None)], {"equation": "bij,bjk->bik"}),
    "layernorm": ("LayerNormalization", [([2, 5, 8], None), (None, np.ones(8, np.float32)),
                                         (None, np.zeros(8, np.float32))], {"axis": -1}),
    "lrn": ("LRN", [([1, 8, 5, 5], None)], {"size": 5}),
    "softmax": ("Softmax", [([2, 3, 4], None)], {"axis": 1}),
    "resize_scales": ("Resize", [([1, 3, 7, 9], None), (None, np.array([], np.float32)),
                                 (None, np.array([1, 1, 2.5, 0.5], np.float32))], {"mode": "nearest"}),
    "resize_sizes": ("Resize", [([1, 3, 7, 9], None), (None, np.array([], np.float32)),
                                (None, np.array([], np.float32)), (None, np.array([1, 3, 13, 4]))],
                     {"mode": "linear"}),
    "pad": ("Pad", [([1, 3, 5, 5], None), (None, np.array([0, 0, 1, 2, 0, 0, 3, 4]))], {}),
    "pad_10": ("Pad", [([1, 3, 5, 5], None)], {"pads": [0, 0, 1, 2, 0, 0, 3, 4]}),
    "resize_scales_10": ("Resize", [([1, 3, 4, 6], None), (None, np.array([1, 1, 2, 1.5], np.float32))],
                         {"mode": "nearest"}),
    "slice_neg_step": ("Slice", [([10, 20], None), (None, np.array([-1, 15])), (None, np.array([-100, 2])),
                                 (None, np.array([0, 1])), (None, np.array([-2, -3]))], {}),
    "slice_big_end": ("Slice", [([10, 20], None), (None, np.array([2])), (None, np.array([2**62])),
                                (None, np.array([1]))], {}),
    "reshape_zero_minus_one": ("Reshape", [([2, 3, 4, 5], None), (None, np.array([0, -1, 5]))], {}),
    "flatten_axis": ("Flatten", [([2, 3, 4, 5], None)], {"axis": 2}),
    "transpose": ("Transpose", [([2, 3, 4], None)], {"perm": [2, 0, 1]}),
    "squeeze_13": ("Squeeze", [([1, 3, 1, 5], None), (None, np.array([0, -2]))], {}),
    "unsqueeze_13": ("Unsqueeze", [([3, 5], None), (None, np.array([0, 3]))], {}),
    "expand": ("Expand", [([3, 1], None), (None, np.array([2, 1, 6]))], {}),
    "tile": ("Tile", [([2, 3], None), (None, np.array([3, 2]))], {}),
    "gather_axis1": ("Gather", [([5, 6, 7], None), (None, np.array([[0, 1], [2, 3], [4, 5]]))], {"axis": 1}),
    "reduce_mean_18": ("ReduceMean", [([2, 3, 4], None), (None, np.array([1]))], {"keepdims": 0}),
    "reduce_sum_all": ("ReduceSum", [([2, 3, 4], None)], {}),
    "argmax": ("ArgMax", [([2, 3, 4], None)], {"axis": -1, "keepdims": 0}),
    "topk": ("TopK", [([3, 10], None), (None, np.array([4]))], {}),
    "depth_to_space": ("DepthToSpace", [([1, 8, 3, 3], None)], {"blocksize": 2}),
    "add_broadcast": ("Add", [([2, 1, 4], None), ([3, 1], None)], {}),
    "where": ("Where", [(None, np.array([True, False])), ([3, 1], None), ([2], None)], {}),
    "prelu": ("PRelu", [([2, 3, 4], None), (None, np.array([0.1], np.float32))], {}),
    "concat": ("Concat", [([2, 3], None), ([2, 5], None)], {"axis": 1}),
    "hardswish": ("HardSwish", [([2, 3], None)], {}),
    "gelu_20": ("Gelu", [([2, 3], None)], {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_matches_onnxruntime(case):
    op, inputs, attrs = CASES[case]
    opset = int(case.rsplit("_", 1)[1]) if case.rsplit("_", 1)[-1] in ("10", "18", "20") else 17
    n_out = 2 if op == "TopK" else 1
    model = node_model(op, inputs, attrs, opset=opset, n_out=n_out)
    assert ours(model)[1] == ort_shapes(model)


@pytest.mark.parametrize("op,inputs,attrs", [
    ("Split", [([2, 10], None), (None, np.array([3, 7]))], {"axis": 1}),
    ("Split", [([2, 10], None)], {"axis": 1}),
])
def test_split_outputs_match_onnxruntime(op, inputs, attrs):
    model = node_model(op, inputs, attrs, n_out=2)
    assert ours(model)[1] == ort_shapes(model)


def test_opset11_attribute_forms():
    """Before opset 13, Squeeze/Unsqueeze/ReduceSum took axes as attributes."""
    for op, shape, attrs in [("Unsqueeze", [3, 4], {"axes": [0, 2]}), ("Squeeze", [1, 3, 1], {"axes": [2]}),
                             ("ReduceSum", [2, 3, 4], {"axes": [1], "keepdims": 1})]:
        model = node_model(op, [(shape, None)], attrs, opset=11)
        assert ours(model)[1] == ort_shapes(model)


def test_conv_macs_closed_form():
    # AlexNet conv1 from the CS231n notes: 227x227x3, 96 filters of 11x11, stride 4 -> 55x55x96.
    model = node_model("Conv", [([1, 3, 227, 227], None), (None, np.ones((96, 3, 11, 11), np.float32)),
                                (None, np.zeros(96, np.float32))], {"strides": [4, 4]})
    est, shapes = ours(model)
    assert shapes == [[1, 96, 55, 55]]
    assert est.totals.activation_elements - 227 * 227 * 3 == 290_400
    assert est.layers_list[0].weights == 34_848 and est.layers_list[0].biases == 96
    assert est.totals.macs == 55 * 55 * 96 * 11 * 11 * 3


def test_grouped_and_transposed_conv_macs():
    model = node_model("Conv", [([1, 8, 9, 9], None), (None, np.ones((16, 2, 3, 3), np.float32))],
                       {"group": 4, "pads": [1, 1, 1, 1]})
    assert archcalc.estimate(model).totals.macs == 16 * 9 * 9 * 2 * 3 * 3
    model = node_model("ConvTranspose", [([1, 4, 5, 5], None), (None, np.ones((4, 3, 2, 2), np.float32))],
                       {"strides": [2, 2]})
    assert archcalc.estimate(model).totals.macs == 4 * 5 * 5 * 3 * 2 * 2


def test_matmul_and_gemm_macs():
    model = node_model("MatMul", [([2, 1, 4, 5], None), ([3, 5, 6], None)])
    assert archcalc.estimate(model).totals.macs == 2 * 3 * 4 * 6 * 5
    model = node_model("Gemm", [([7, 5], None), (None, np.ones((5, 9), np.float32)),
                                (None, np.zeros(9, np.float32))])
    est = archcalc.estimate(model)
    assert est.totals.macs == 7 * 9 * 5 and est.totals.params == 5 * 9 + 9


def test_einsum_macs():
    model = node_model("Einsum", [([2, 3, 4], None), ([2, 4, 5], None)], {"equation": "bij,bjk->bik"})
    assert archcalc.estimate(model).totals.macs == 2 * 3 * 4 * 5


def test_pools_and_activations_have_no_macs_but_flops():
    est = archcalc.estimate(node_model("MaxPool", [([1, 3, 8, 8], None)],
                                       {"kernel_shape": [2, 2], "strides": [2, 2]}))
    assert est.totals.macs == 0 and est.totals.flops == 3 * 4 * 4 * 4
    est = archcalc.estimate(node_model("Relu", [([2, 3], None)]))
    assert est.totals.macs == 0 and est.totals.flops == 6


def test_scalar_prelu_slope_is_a_parameter():
    est = archcalc.estimate(node_model("PRelu", [([2, 3, 4], None), (None, np.array([0.1], np.float32))]))
    assert est.totals.params == 1


def test_batchnorm_statistics_are_buffers():
    c = 6
    ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
    est = archcalc.estimate(node_model("BatchNormalization",
                                       [([2, c, 4, 4], None), (None, ones), (None, zeros),
                                        (None, zeros + 0.5), (None, ones * 2)]))
    assert est.totals.params == 2 * c and est.totals.buffers == 2 * c


def test_op_without_rule_takes_onnx_shape_and_is_reported():
    """Det has no cost rule: its shape comes from onnx's inference, and it is listed by name."""
    model = node_model("Det", [([4, 3, 3], None)])
    est, shapes = ours(model)
    assert shapes == ort_shapes(model)
    assert est.totals.unsupported_ops == {"Det": 1}
    assert "Det x1" in render(est) and "no cost rule" in render(est, "csv")


def test_shape_arithmetic_is_folded():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as PyTorch exports x.view(x.size(0), -1)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["bu"]),
        helper.make_node("Concat", ["bu", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0), "zero"), numpy_helper.from_array(np.array([0]), "axes"),
             numpy_helper.from_array(np.array([-1]), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["N", 3, 4])],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    est = archcalc.estimate(model, batch=5)
    assert est.graph.tensors["y"].shape == (5, 12)
    assert [r.op_type for r in est.layers_list] == ["Reshape"]  # the arithmetic is not a layer
    assert math.prod(est.graph.tensors["y"].shape) == 60
