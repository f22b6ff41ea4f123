"""What a new user meets on a third-party file: dims named "?" (paddle2onnx), a batch dim that is
not first (a recurrent state), a file that fixes its batch, a Conv1d in the notes' table, a mask
typed as its input (Dropout before opset 10), and a file onnxruntime refuses to run."""

from __future__ import annotations

import json

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import archcalc
from archcalc.cli import main

F = TensorProto.FLOAT


def save(tmp_path, nodes, inputs, outputs, inits=(), opset=17, name="m.onnx"):
    g = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name=o) for o in outputs], list(inits))
    path = tmp_path / name
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9), str(path))
    return path


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def test_dims_named_question_mark_are_separate_and_the_hint_is_a_shape(tmp_path):
    """paddle2onnx names H and W both '?': binding one value to both would make every image square."""
    x = helper.make_tensor_value_info("x", F, ["?", 3, "?", "?"])
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [x], ["y"])
    code, out = cli("estimate", path)
    assert code == 2 and "pass --input x=Nx3xNxN" in out and "--dim ?" not in out
    est = archcalc.estimate(path, inputs={"x": "1x3x48x192"})
    assert est.graph.tensors["y"].shape == (1, 3, 48, 192)


def test_batch_binds_a_dim_named_batch_wherever_it_stands(tmp_path):
    x = helper.make_tensor_value_info("x", F, ["batch", 16])
    state = helper.make_tensor_value_info("state", F, [2, "batch", 16])
    path = save(tmp_path, [helper.make_node("Add", ["x", "state"], ["y"])], [x, state], ["y"])
    est = archcalc.estimate(path, batch=4)
    assert est.graph.tensors["state"].shape == (2, 4, 16) and est.batch == 4


def test_a_fixed_three_channel_image_is_not_a_batch_of_three(tmp_path):
    x = helper.make_tensor_value_info("images", F, [3, "height", "width"])
    path = save(tmp_path, [helper.make_node("Relu", ["images"], ["y"])], [x], ["y"])
    assert archcalc.estimate(path, dims={"height": 8, "width": 8}).batch == 1


def test_fit_on_a_fixed_batch_model_judges_it_as_it_is(tmp_path):
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [1, 8])],
                ["y"])
    code, out = cli("fit", path, "--gpu", "T4")
    assert code == 0 and "--batch 2" not in out and "the file fixes the batch" in out
    code, out = cli("fit", path, "--gpu", "T4", "--format", "json")
    assert json.loads(out)["batch_fixed"] is True


def test_notes_view_of_a_conv1d(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 2, 3), np.float32), "w")
    path = save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"])],
                [helper.make_tensor_value_info("x", F, [1, 2, 16])], ["y"], [w])
    code, out = cli("estimate", path, "--view", "notes")
    assert code == 0 and "(3*2)*4 = 24" in out


def test_dropout_mask_has_the_inputs_type_before_opset_10(tmp_path):
    import onnxruntime as ort

    node = helper.make_node("Dropout", ["x"], ["y", "mask"])
    path = save(tmp_path, [node], [helper.make_tensor_value_info("x", F, [2, 3])], ["y", "mask"], opset=9)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mask = sess.run(["mask"], {"x": np.ones((2, 3), np.float32)})[0]
    assert archcalc.estimate(path).graph.tensors["mask"].dtype == str(mask.dtype) == "float32"


def test_validate_exits_2_with_the_reason_when_onnxruntime_cannot_run_the_file(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [2])], [onnx.ValueInfoProto(name="y")])
    path = tmp_path / "future.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=99), str(path))
    code, out = cli("validate", path, "--quiet")
    assert code == 2 and out.startswith("error: ") and "future.onnx" in out and "onnxruntime cannot run it" in out
    assert out.count("\n") == 1


def test_fit_says_when_its_total_rests_on_a_bound(tmp_path):
    """NonZero's count depends on the data: the memory judged is an upper bound, and fit says so."""
    nodes = [helper.make_node("NonZero", ["x"], ["idx"]), helper.make_node("Cast", ["idx"], ["y"], to=F)]
    path = save(tmp_path, nodes, [helper.make_tensor_value_info("x", F, ["batch", 64])], ["y"])
    code, out = cli("fit", path, "--gpu", "T4", "--batch", "2")
    assert code == 0 and "upper bounds" in out
    code, out = cli("fit", path, "--gpu", "T4", "--batch", "2", "--format", "json")
    assert json.loads(out)["verdicts"][0]["status"] == "upper bound"


def test_validate_judges_a_bound_as_a_bound(tmp_path):
    """NonZero keeps about half of random data: the estimate (every element) holds what ran."""
    nodes = [helper.make_node("NonZero", ["x"], ["idx"]), helper.make_node("Cast", ["idx"], ["y"], to=F)]
    path = save(tmp_path, nodes, [helper.make_tensor_value_info("x", F, [64, 64])], ["y"])
    code, out = cli("validate", path, "--quiet", "--opt-level", "disable")
    assert code == 0 and "passed" in out, out


def test_notes_view_of_a_graph_whose_first_input_is_a_scalar_or_an_empty_batch(tmp_path):
    for shape in ([], [0, 4]):
        x = helper.make_tensor_value_info("x", F, shape)
        path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [x], ["y"], name=f"m{len(shape)}.onnx")
        code, out = cli("estimate", path, "--view", "notes")
        assert code == 0 and "INPUT" in out, out
