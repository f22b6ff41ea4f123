"""Malformed input found by held-out fuzz runs, one class per test: control flow (an If with no
condition, an empty or many-valued condition, a body that reads a name nothing defines) and a design
that is not UTF-8 -- each one line naming the file and the place, exit 2."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from archcalc.cli import main

F = TensorProto.FLOAT


def _branch(name: str, src: str, out: str) -> onnx.GraphProto:
    return helper.make_graph([helper.make_node("Relu", [src], [out], name=f"{name}_relu")], name, [],
                             [helper.make_tensor_value_info(out, F, None)])


def _model(cond: np.ndarray | None, cond_name="c", then_src="x", else_src="x") -> onnx.ModelProto:
    node = helper.make_node("If", [cond_name], ["y"], name="choose", then_branch=_branch("t", then_src, "a"),
                            else_branch=_branch("e", else_src, "b"))
    inits = [numpy_helper.from_array(cond, "c")] if cond is not None else []
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [1, 4])],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("model,needles", [
    (_model(np.zeros([0], dtype=bool)), ("'choose'", "holds 0 values")),
    (_model(np.array([True, False])), ("'choose'", "holds 2 values")),
    (_model(None, cond_name=""), ("'choose'", "no condition")),
    (_model(np.array(True), then_src="nope"), ("'nope'", "t_relu", "never defined")),
    (_model(None, cond_name="x", else_src="nope"), ("'nope'", "e_relu", "never defined")),
])
def test_malformed_if_is_one_line(tmp_path, model, needles):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    result = CliRunner().invoke(main, ["estimate", str(path)])
    text = result.output.strip()
    assert result.exit_code == 2 and text.count("\n") == 0 and text.startswith(f"error: {path}: "), text
    for needle in needles:
        assert needle in text, text


def test_a_body_reads_the_enclosing_graphs_names(tmp_path):
    """The scope check does not refuse what ONNX allows: a body reading an outer tensor runs."""
    path = tmp_path / "m.onnx"
    onnx.save(_model(np.array(True)), str(path))
    result = CliRunner().invoke(main, ["estimate", str(path)])
    assert result.exit_code == 0, result.output


def test_a_design_that_is_not_utf8_shows_its_line_and_a_caret(tmp_path):
    path = tmp_path / "bad.arch"
    path.write_bytes(b"INPUT[32x32x3] -> CONV3-8 \xff -> FC-10\n")
    result = CliRunner().invoke(main, ["estimate", str(path)])
    lines = result.output.rstrip("\n").split("\n")
    assert result.exit_code == 2 and lines[0] == f"error: {path}:1:27: byte 0xff is not UTF-8: save the design as UTF-8"
    assert lines[2].index("^") == lines[1].index("\\xff")


@pytest.mark.parametrize("trips,cond", [(np.zeros([0], np.int64), None), (np.array(3, np.int64), np.zeros([0], bool)),
                                        (np.array([3, 4], np.int64), None)])
def test_a_loop_whose_trip_count_or_condition_is_not_one_value(tmp_path, trips, cond):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cin"], ["cout"]), helper.make_node("Relu", ["s"], ["s2"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cin", TensorProto.BOOL, []), helper.make_tensor_value_info("s", F, None)],
        [helper.make_tensor_value_info("cout", TensorProto.BOOL, []), helper.make_tensor_value_info("s2", F, None)])
    inits = [numpy_helper.from_array(trips, "n")] + ([numpy_helper.from_array(cond, "c")] if cond is not None else [])
    node = helper.make_node("Loop", ["n", "c" if cond is not None else "", "x"], ["y"], name="repeat", body=body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [1, 4])],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    path = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    result = CliRunner().invoke(main, ["estimate", str(path)])
    text = result.output.strip()
    assert result.exit_code == 2 and text.count("\n") == 0 and "'repeat'" in text and "values; Loop's is one" in text


def test_a_gather_past_its_table_is_refused_as_onnxruntime_refuses_it(tmp_path):
    """Known indices outside the table (a constant, or positions folded from the sequence): the spec's
    bounds, which onnxruntime enforces at run time; archcalc says so before pricing it."""
    import onnxruntime as ort

    table = numpy_helper.from_array(np.ones((8, 4), np.float32), "table")
    idx = numpy_helper.from_array(np.arange(10, dtype=np.int64), "idx")
    node = helper.make_node("Gather", ["table", "idx"], ["y"], name="lookup")
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", F, [10, 4])], [table, idx])
    path = tmp_path / "past.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    with pytest.raises(Exception, match="(?i)out of bounds|indices"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {})
    result = CliRunner().invoke(main, ["estimate", str(path)])
    text = result.output.strip()
    assert result.exit_code == 2 and text.count("\n") == 0, text
    assert "'lookup'" in text and "reads index 9 of 'table', whose axis 0 has 8 entries" in text, text


def test_a_sequence_past_a_configs_learned_positions_is_refused(tmp_path):
    """GPT-2's 128 learned positions (the fixture's n_positions) cannot embed a 129th token, as
    transformers' own model fails on one (an index error in the position embedding)."""
    from conftest import ROOT

    config = ROOT / "tests" / "fixtures" / "hf_configs" / "gpt2.json"
    ok = CliRunner().invoke(main, ["estimate", str(config), "--dim", "sequence=128"])
    past = CliRunner().invoke(main, ["estimate", str(config), "--dim", "sequence=129"])
    assert ok.exit_code == 0 and past.exit_code == 2, past.output
    assert past.output.startswith(f"error: {config}: ") and "wpe.weight', whose axis 0 has 128 entries" in past.output
    served = [CliRunner().invoke(main, ["fit", str(config), "--mode", "serve", "--gpu", "L4", "--context", str(n)])
              for n in (128, 129)]
    assert [r.exit_code for r in served] == [0, 2] and "--context N, N at most 128" in served[1].output
