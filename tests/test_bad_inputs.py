"""The reproducers of inputs that broke archcalc (copied from ../shared/bad-inputs/ into
tests/fixtures/bad/): each ends in one `error:` line that names the file and the place, with exit
code 2, or in a result whose every number is finite and not negative -- never a traceback."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from conftest import ROOT
from fuzzing import numbers

from archcalc.cli import main

BAD = ROOT / "tests" / "fixtures" / "bad"
# The reproducers that are valid models: they must give a result, not an error.
VALID = {"cast_to_float4e2m1.onnx", "external_etc_passwd.onnx", "first_output_omitted.onnx", "if_outer_scope.onnx", "input_dim_minus1.onnx",
         "input_float4e2m1.onnx", "lstm_y_omitted.onnx", "node_named_ansi_escape.onnx",
         "node_named_newline_pipe.onnx", "node_named_rich_markup.onnx", "node_named_rich_markup_close.onnx",
         "regex_redos_fold.onnx", "bom.arch"}


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def assert_clean_error(code, out, file_name, design=False):
    assert code == 2, out
    first, *rest = out.strip("\n").split("\n")
    assert first.startswith("error: ") and file_name in first, out
    assert "Traceback" not in out and "\x1b" not in out
    if design:  # file:line:col, then the line and a caret under the place
        assert f"{file_name}:" in first and len(rest) in (0, 2), out
    else:
        assert not rest, out


def assert_sane_result(*args):
    code, out = cli("estimate", *args, "--format", "json")
    assert code == 0, out
    data = json.loads(out)
    bad = [v for v in numbers({"totals": data["totals"], "layers": data["layers"], "memory": data.get("memory")})
           if not math.isfinite(v) or v < 0]
    assert not bad, bad


@pytest.mark.parametrize("mode", [(), ("--mode", "train")])
@pytest.mark.parametrize("path", sorted(BAD.glob("*.onnx")), ids=lambda p: p.name)
def test_every_onnx_reproducer(path, mode):
    if path.name in VALID:
        assert_sane_result(path, *mode)
    else:
        assert_clean_error(*cli("estimate", path, *mode), path.name)


@pytest.mark.parametrize("path", sorted(BAD.glob("*.arch")), ids=lambda p: p.name)
def test_every_design_reproducer(path):
    if path.name in VALID:
        assert_sane_result(path)
    else:
        assert_clean_error(*cli("estimate", path), path.name, design=True)


def test_a_long_inline_design_is_design_text_not_a_file_name():
    assert_sane_result((BAD / "long_inline.txt").read_text().strip())


def test_dynamic_dims_written_as_minus_one_are_bound_by_batch():
    code, out = cli("estimate", BAD / "input_dim_minus1.onnx", "--batch", "4", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["batch"] == 4 and list(data["inputs"].values())[0][0] == 4 and data["totals"]["macs"] > 0


def test_the_batch_label_follows_the_binding():
    for args in (["--dim", "batch=8"], ["--input", "x=8x3x224x224"], ["--batch", "8"]):
        code, out = cli("estimate", "torchvision/resnet50", *args, "--format", "json")
        assert code == 0 and json.loads(out)["batch"] == 8, args


@pytest.mark.parametrize("args,place", [
    (["estimate", "torchvision/resnet50", "--mode", "inference", "--runtime-overhead", "-1GiB"], "--runtime-overhead"),
    (["estimate", "torchvision/resnet50", "--dim", "batch=-5"], "--dim batch=-5"),
    (["estimate", "torchvision/resnet50", "--dim", "batch=0"], "--dim batch=0"),
    (["estimate", "torchvision/resnet50", "--mode", "inference", "--runtime-overhead", "1e400"], "--runtime-overhead"),
    (["fit", "torchvision/resnet50", "--memory", "1e400GiB"], "--memory"),
    (["fit", "torchvision/resnet50", "--memory", "-5GiB"], "--memory"),
    (["fit", "torchvision/resnet50", "--gpu", ""], "--gpu"),
    (["fit", "torchvision/resnet50", "--gpu", "T4", "--sweep", "-1,0"], "--sweep"),
    (["fit", "torchvision/resnet50", "--gpu", "T4", "--sweep", "1,2", "--batch", "4"], "--batch"),
    (["estimate", "torchvision/resnet50", "--optimizer", "adam"], "--optimizer"),
    (["fit", "torchvision/resnet50", "--gpu", "T4", "--optimizer", "adam"], "--optimizer"),
    (["report", "cifar10-small", "-o", str(ROOT / "README.md" / "sub"), "--quiet"], "README.md/sub"),
    (["report", "cifar10-small", "-o", "/proc/archcalc_report", "--quiet"], "/proc/archcalc_report"),
    (["compare", "cifar10-small", "lenet5", "-o", "/proc/archcalc_compare"], "/proc/archcalc_compare"),
    (["export", "cifar10-small", "-o", "/nonexistent/x.onnx"], "/nonexistent"),
    (["estimate", "/dev/zero"], "/dev/zero: not a regular file"),
])
def test_command_line_values_and_paths(args, place):
    code, out = cli(*args)
    assert code == 2 and out.startswith("error: ") and out.count("\n") == 1 and place in out, out


def test_largest_batch_is_solved_not_capped():
    code, out = cli("fit", "INPUT[4] -> FC-2", "--gpu", "A100-80GB", "--format", "json")
    best = json.loads(out)["largest_batch"]
    assert code == 0 and best > 1 << 24
    over = json.loads(cli("fit", "INPUT[4] -> FC-2", "--gpu", "A100-80GB", "--batch", str(best + 1),
                          "--format", "json")[1])
    assert not over["verdicts"][0]["fits"]


def test_an_interrupted_report_leaves_the_old_one_whole(tmp_path, monkeypatch):
    out = tmp_path / "cifar"
    assert cli("report", "cifar10-small", "-o", out, "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from archcalc.render import files

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "to_html", interrupted)
    code, text = cli("report", "cifar10-small", "-o", out, "--quiet")
    assert code == 130 and text.startswith("error: interrupted")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar"]  # no temporary folder left


def test_fifos_and_link_loops_are_named(tmp_path):
    import os

    fifo, loop = tmp_path / "m.onnx", tmp_path / "loop.onnx"
    os.mkfifo(fifo)
    loop.symlink_to(loop)
    assert_clean_error(*cli("estimate", fifo), "m.onnx")
    code, out = cli("estimate", loop)
    assert_clean_error(code, out, "loop.onnx")
    assert "loop of symbolic links" in out


def test_subgraphs_nested_past_protobufs_limit_are_named_as_such(tmp_path):
    """33 Ifs inside each other, written at the wire level (onnx.helper itself refuses to build it)."""
    from onnx import TensorProto, helper

    from archcalc.frontends.onnx_reader import _encode_varint as enc

    def sub(number, payload):
        return enc(number << 3 | 2) + enc(len(payload)) + payload

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "leaf", [],
                          [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])]).SerializeToString()
    for _ in range(33):
        attribute = sub(1, b"then_branch") + enc(20 << 3) + enc(5) + sub(6, g)  # name, type GRAPH, g
        g = sub(1, sub(1, b"c") + sub(2, b"o") + sub(4, b"If") + sub(5, attribute)) + sub(2, b"g")
    path = tmp_path / "nested.onnx"
    path.write_bytes(enc(1 << 3) + enc(9) + sub(7, g) + sub(8, enc(2 << 3) + enc(17)))
    code, out = cli("estimate", path)
    assert_clean_error(code, out, "nested.onnx")
    assert "nest deeper than protobuf" in out


def test_an_attribute_of_the_wrong_type_is_the_files_fault(tmp_model, monkeypatch):
    """A bit flip can turn Conv's strides (INTS) into an INT: onnx's schema says which is right."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w"], ["y"])
    node.attribute.append(helper.make_attribute("strides", 2))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    path = tmp_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "strides.onnx")
    code, out = cli("estimate", path)
    assert_clean_error(code, out, "strides.onnx")
    assert "attribute 'strides' holds a int, but Conv takes INTS" in out and "bug" not in out


def test_more_dims_than_any_tensor_has(tmp_model):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] * 65)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "rank65.onnx")
    code, out = cli("estimate", path)
    assert_clean_error(code, out, "rank65.onnx")
    assert "65 dims" in out
