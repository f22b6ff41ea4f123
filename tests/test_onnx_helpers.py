"""archcalc's stand-ins for onnx's helpers (frontends/onnx_helpers.py, archcalc/onnx_proto.py)
against onnx's own: the same messages byte for byte, the same arrays, dtypes and errors."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import ROOT
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from archcalc import onnx_proto
from archcalc.dtypes import DTYPE_BYTES, dtype_name
from archcalc.frontends import onnx_helpers as ours
from archcalc.frontends.hf_config import read_config
from archcalc.frontends.hf_layers import config_model

ATTRIBUTES = {"axis": -1, "alpha": 0.5, "approximate": "tanh", "mode": b"constant", "perm": [0, 2, 1, 3],
              "scales": [1.0, 2.5], "names": ["a", b"b"], "flag": True, "big": np.int64(7), "f32": np.float32(0.25),
              "value": helper.make_tensor("v", TensorProto.INT64, [1], [0]),
              "body": helper.make_graph([], "body", [], [])}


def same(a, b) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_make_node_matches_onnx():
    for domain in (None, "", "com.microsoft"):
        mine = ours.make_node("Op", ["x", ""], ["y"], name="/a/Op", domain=domain, skipped=None, **ATTRIBUTES)
        theirs = helper.make_node("Op", ["x", ""], ["y"], name="/a/Op", domain=domain, skipped=None, **ATTRIBUTES)
        assert same(mine, theirs)
    with pytest.raises(ValueError):
        ours.make_attribute("empty", [])


@pytest.mark.parametrize("data_type, values", [
    (TensorProto.INT64, [0, -1, 2**40]), (TensorProto.INT32, [3, -4]), (TensorProto.FLOAT, [0.1, -2.0]),
    (TensorProto.DOUBLE, [0.1]), (TensorProto.FLOAT16, [1 / 3, 65504.0]), (TensorProto.BOOL, [True, False]),
    (TensorProto.UINT8, [255, 0]), (TensorProto.INT8, [-128, 5]), (TensorProto.UINT64, [2**63]),
    (TensorProto.BFLOAT16, [1 / math.sqrt(d) for d in range(1, 513)] + [9.343749724943226, -3.0e38, 0.0]),
])
def test_make_tensor_matches_onnx(data_type, values):
    dims = [len(values)]
    assert same(ours.make_tensor("t", data_type, dims, values), helper.make_tensor("t", data_type, dims, values))
    scalar = values[0]
    assert same(ours.make_tensor("s", data_type, [], [scalar]), helper.make_tensor("s", data_type, [], [scalar]))


def test_make_tensor_counts_values():
    with pytest.raises(ValueError):
        ours.make_tensor("t", TensorProto.INT64, [3], [1, 2])


@pytest.mark.parametrize("shape", [["batch", 7, None], [], None, [3]])
def test_make_value_info_matches_onnx(shape):
    assert same(ours.make_tensor_value_info("x", TensorProto.FLOAT16, shape),
                helper.make_tensor_value_info("x", TensorProto.FLOAT16, shape))


def test_make_model_matches_onnx():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])]
    inits = [helper.make_tensor("c", TensorProto.INT64, [1], [4])]
    opsets = [helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)]
    theirs = helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits), ir_version=10, opset_imports=opsets)
    mine = ours.make_model(nodes, "g", ins, outs, inits, [ours.make_opsetid("", 23),
                                                          ours.make_opsetid("com.microsoft", 1)], ir_version=10)
    assert same(mine, theirs)
    default = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=opsets[:1])
    assert same(ours.make_model(nodes, "g", ins, outs, [], opsets[:1]), default)


NUMPY_VALUES = [np.array([[1.5, -2.0]], np.float32), np.array([1e300], np.float64), np.array([1, -2], np.int64),
                np.array([7], np.int32), np.array([-3, 4], np.int16), np.array([-8], np.int8),
                np.array([255], np.uint8), np.array([65535], np.uint16), np.array([2**32 - 1], np.uint32),
                np.array([2**64 - 1], np.uint64), np.array([True, False]), np.array([0.5, -1], np.float16),
                np.array([1 + 2j], np.complex64), np.array([[3 - 1j]], np.complex128), np.array(4.0, np.float32),
                np.zeros((0, 3), np.float32)]


def _typed(array: np.ndarray) -> TensorProto:
    """The same values in the typed field rather than raw_data."""
    enum = helper.np_dtype_to_tensor_dtype(array.dtype)
    return helper.make_tensor("t", enum, array.shape, array.flatten().tolist())


@pytest.mark.parametrize("array", NUMPY_VALUES, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_to_array_matches_onnx(array):
    for tensor in (numpy_helper.from_array(array, "t"), _typed(array)):
        mine, theirs = ours.to_array(tensor), numpy_helper.to_array(tensor)
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        np.testing.assert_array_equal(mine, theirs)


def test_to_array_of_strings_and_types_numpy_lacks():
    strings = helper.make_tensor("s", TensorProto.STRING, [2], ["a", "é"])
    np.testing.assert_array_equal(ours.to_array(strings), numpy_helper.to_array(strings))
    assert ours.to_array(strings).dtype == object
    values = [1 / math.sqrt(d) for d in range(1, 513)] + [9.343749724943226, -3.0e38, 0.0, -0.0, 65280.0]
    for raw in (False, True):  # read widened to float32, the same numbers as onnx's ml_dtypes array
        bf16 = helper.make_tensor("b", TensorProto.BFLOAT16, [len(values)], values, raw=False)
        if raw:
            bf16 = helper.make_tensor("b", TensorProto.BFLOAT16, [len(values)],
                                      numpy_helper.to_array(bf16).tobytes(), raw=True)
        mine, theirs = ours.to_array(bf16), numpy_helper.to_array(bf16)
        assert mine.dtype == np.float32 and mine.shape == theirs.shape
        np.testing.assert_array_equal(mine, theirs.astype(np.float32))


def test_attribute_values_match_onnx():
    for key, value in ATTRIBUTES.items():
        attr = helper.make_attribute(key, value)
        mine, theirs = ours.attribute_value(attr), helper.get_attribute_value(attr)
        assert type(mine) is type(theirs) and (mine == theirs if not hasattr(mine, "SerializeToString")
                                               else same(mine, theirs))
    assert ours.attribute_value(AttributeProto(name="u")) is None
    with pytest.raises(ValueError):
        ours.attribute_value(AttributeProto(name="r", ref_attr_name="outer"))


def test_storage_fields_and_dtype_names_match_onnx():
    for name, number in TensorProto.DataType.items():
        if number == TensorProto.UNDEFINED:
            continue
        assert ours.storage_field(number) == helper.tensor_dtype_to_field(number), name
    assert {dtype_name(n) for n in TensorProto.DataType.values()} - {None, "undefined"} >= \
        {d for d in DTYPE_BYTES if d != "unknown"}


def test_shape_inference_matches_onnx():
    model = config_model(read_config(ROOT / "tests" / "fixtures" / "hf_configs" / "qwen3_moe.json"))
    assert same(onnx_proto.infer_shapes(model), onnx.shape_inference.infer_shapes(model))
