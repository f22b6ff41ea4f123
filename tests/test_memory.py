"""Liveness peak on small graphs, against peaks worked out by hand."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import archcalc

F = TensorProto.FLOAT


def graph(nodes, x_shape, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, x_shape)],
                          [helper.make_tensor_value_info("y", F, None)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_chain_peak_is_the_largest_adjacent_pair():
    # x(100) -> a = Relu(x) (100) -> b = Tile(a) (300) -> y = Relu(b) (300): peak at y: b + y = 600 floats.
    reps = numpy_helper.from_array(np.array([3]), "reps")
    m = graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Tile", ["a", "reps"], ["b"]),
               helper.make_node("Relu", ["b"], ["y"])], [100], [reps])
    t = archcalc.estimate(m).totals
    assert t.peak_activation_bytes == 600 * 4 and t.peak_layer == "Relu_2"
    assert t.input_bytes == 400 and t.peak_bytes == 400 + 600 * 4


def test_skip_connection_keeps_its_source_alive():
    # a = Relu(x); b = Relu(a); c = Relu(b); y = Add(a, c): at the Add, a, c and y are alive (3 x 50).
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Add", ["a", "c"], ["y"])]
    assert archcalc.estimate(graph(nodes, [50])).totals.peak_activation_bytes == 3 * 50 * 4


def test_views_share_their_input_buffer():
    # a = Relu(x) (60); v = Reshape(a) is a view; y = Relu(v) (60): peak 120 floats, not 180.
    shape = numpy_helper.from_array(np.array([6, 10]), "shape")
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Reshape", ["a", "shape"], ["v"]),
             helper.make_node("Relu", ["v"], ["y"])]
    est = archcalc.estimate(graph(nodes, [60], [shape]))
    assert est.totals.peak_activation_bytes == 120 * 4
    assert est.totals.activation_elements == 60 + 3 * 60  # the sum still lists the view


def test_peak_scales_with_batch():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    one = archcalc.estimate(graph(nodes, ["N", 10])).totals.peak_activation_bytes
    assert archcalc.estimate(graph(nodes, ["N", 10]), batch=7).totals.peak_activation_bytes == 7 * one
