"""Bad input: each a one-line message naming the place and the fix, exit code 2, no traceback."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import model_path
from onnx import TensorProto, helper, numpy_helper

from archcalc.cli import main

F = TensorProto.FLOAT


def run(*args):
    result = CliRunner().invoke(main, ["estimate", *map(str, args)])
    return result.exit_code, result.output.strip()


def one_line_error(code, text):
    assert code == 2, text
    assert "Traceback" not in text
    assert text.count("\n") == 0 and text.startswith("error: "), text
    return text


def model(nodes, inputs, inits=(), outputs=("y",)):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, F, None) for o in outputs],
                              list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_missing_file():
    text = one_line_error(*run("nope/missing.onnx"))
    assert text == ("error: nope/missing.onnx: no such file or zoo model: check the path, "
                    "or list the zoo with 'archcalc zoo'")


def test_directory(tmp_path):
    assert "is a directory" in one_line_error(*run(tmp_path))


def test_not_onnx(tmp_path):
    """Design text under another suffix is told for what it is (issue 21, item 8)."""
    path = tmp_path / "notes.onnx"
    path.write_text("INPUT[224x224x3] -> CONV3-64 -> POOL2\n" * 20)
    text = one_line_error(*run(path))
    assert str(path) in text and "a design, not an ONNX model" in text and "notes.arch" in text


def test_truncated_protobuf(tmp_path):
    path = tmp_path / "cut.onnx"
    data = model_path("resnet50").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    text = one_line_error(*run(path))
    assert str(path) in text and "truncated" in text


def test_unbound_symbolic_dim_names_it_and_the_flag():
    text = one_line_error(*run(model_path("bert_base")))
    assert text.endswith("input 'input_ids' dim 1 ('sequence') has no value: pass --dim sequence=N")


def test_batch_on_a_static_model_is_refused(tmp_model):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [1, 3])])
    text = one_line_error(*run(tmp_model(m), "--batch", 8))
    assert "no input has a symbolic first dim" in text and "x [1, 3]" in text


def test_shape_computed_from_data_is_unknown_and_named_or_with_strict_an_error(tmp_model):
    m = model([helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape_by_data")],
              [helper.make_tensor_value_info("x", F, [2, 6]),
               helper.make_tensor_value_info("target", TensorProto.INT64, [2])])
    path = tmp_model(m)
    code, text = run(path)
    assert code == 0 and "lower bounds" in text
    assert "unknown: node 'reshape_by_data' (Reshape): its target shape (input 'target') is computed" in text
    text = one_line_error(*run(path, "--strict"))
    assert "node 'reshape_by_data' (Reshape)" in text and "input 'target'" in text


def test_inconsistent_shapes_name_both(tmp_model):
    m = model([helper.make_node("Add", ["a", "b"], ["y"], name="bad_add")],
              [helper.make_tensor_value_info("a", F, [2, 3]), helper.make_tensor_value_info("b", F, [4, 5])])
    text = one_line_error(*run(tmp_model(m)))
    assert "node 'bad_add' (Add): inputs do not broadcast: 'a' [2, 3], 'b' [4, 5]" in text


def test_conv_channel_mismatch_names_both(tmp_model):
    w = numpy_helper.from_array(np.ones((8, 4, 3, 3), np.float32), "w")
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")],
              [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])], [w])
    text = one_line_error(*run(tmp_model(m)))
    assert "node 'conv1' (Conv): input [1, 3, 8, 8] has 3 channels but weight [8, 4, 3, 3]" in text


def test_unknown_op_is_named_and_only_what_depends_on_it_is_unknown(tmp_model):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="before"),
             helper.make_node("FancyAttention", ["r"], ["a"], name="fa", domain="com.example"),
             helper.make_node("Relu", ["a"], ["y"], name="after"),
             helper.make_node("Sigmoid", ["x"], ["z"], name="beside")]
    m = model(nodes, [helper.make_tensor_value_info("x", F, [1, 3])], outputs=("y", "z"))
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_model(m)
    import archcalc

    est = archcalc.estimate(path)
    assert est.totals.status == "lower bound"
    assert set(est.totals.unknown) == {"fa", "after"}
    assert "archcalc has no rule for com.example.FancyAttention" in est.totals.unknown["fa"]
    assert est.totals.unknown["after"] == "reads 'a', whose shape is unknown"
    assert est.graph.tensors["z"].shape == (1, 3) and est.graph.tensors["r"].shape == (1, 3)
    assert not est.graph.tensors["y"].known and est.graph.tensors["y"].numel == 0
    text = one_line_error(*run(path, "--strict"))
    assert "node 'fa' (com.example.FancyAttention): archcalc has no rule for com.example.FancyAttention" in text


@pytest.mark.parametrize("args,expected", [
    (["--dim", "nonsense=3"], "--dim nonsense: no input has a dim of that name"),
    (["--input", "ghost=1x2"], "--input names 'ghost', but the inputs are x"),
    (["--input", "x=1xfoo"], "--input x=1xfoo: not a shape: write whole numbers from 0 to 2^40, as 1x3x224x224"),
])
def test_bad_binding_flags(tmp_model, args, expected):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, ["N", 3])])
    assert expected in one_line_error(*run(tmp_model(m), *args))


def test_batch_with_every_input_set_says_so(tmp_model):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, ["N", 3])])
    text = one_line_error(*run(tmp_model(m), "--batch", 4, "--input", "x=4x3"))
    assert text.endswith("--batch 4 has nothing to bind: every input's shape is set with --input; put the batch in those shapes")


def test_errors_carry_their_place_as_fields():
    import archcalc

    bad = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", F, [2, 3])],
                [numpy_helper.from_array(np.ones((4, 5), np.float32), "w")])
    with pytest.raises(archcalc.ShapeError) as err:
        archcalc.estimate(bad)
    assert (err.value.node, err.value.op_type) == ("MatMul_0", "MatMul")
    assert err.value.shapes == {"x": (2, 3), "w": (4, 5)}
    design = "INPUT[32x32x3] -> CONV3-8 -> BOGUS"
    with pytest.raises(archcalc.DSLError) as dsl:
        archcalc.estimate(design)
    assert (dsl.value.line, dsl.value.column) == (1, design.index("BOGUS") + 1)


def test_a_crashing_rule_is_a_bug_not_a_user_error(monkeypatch):
    """Strict (the tests): the crash itself. Otherwise one line that names the node and says bug."""
    import archcalc
    from archcalc.ops import RULES

    def broken(n):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(RULES, "Relu", broken)
    relu = model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [2])])
    with pytest.raises(ZeroDivisionError):
        archcalc.estimate(relu)
    monkeypatch.delenv("ARCHCALC_STRICT")
    with pytest.raises(archcalc.ShapeError) as err:
        archcalc.estimate(relu)
    assert type(err.value).__name__ == "RuleCrash" and err.value.node == "Relu_0"
    assert "a bug in archcalc" in str(err.value)
