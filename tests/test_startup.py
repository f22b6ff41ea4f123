"""The front door (issue 21, item 7): a command imports only what its input needs. Each case runs
``python -X importtime -m archcalc ...`` in a fresh process and reads the modules it imported: no
onnx (its ml_dtypes extension alone costs half a second), pandas or matplotlib for a design, a
config, an ONNX file whose ops all have rules, --help, gpus or zoo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, ZOO

import archcalc.frontends.dsl.parser as dsl_parser

HEAVY = {"onnx", "ml_dtypes", "pandas", "matplotlib", "scipy", "torch"}
CONFIG = ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json"
DECODER = "TOKENS[16] -> EMBED-100x32 -> [RMSNORM -> ATTN-4h/kv2 -> RMSNORM -> SWIGLU-64]*2 -> RMSNORM -> LMHEAD-100"
COMMANDS = {
    "cnn design": ["estimate", "vgg16"],
    "transformer design": ["estimate", DECODER],
    "config": ["estimate", str(CONFIG), "--dim", "sequence=128"],
    "onnx file, every op ruled": ["estimate", str(ZOO / "resnet50.onnx"), "--format", "json"],
    "onnx file, fit": ["fit", str(ZOO / "mobilenet_v2.onnx"), "--gpu", "T4"],
    "help": ["--help"],
    "gpus": ["gpus"],
    "zoo": ["zoo"],
}


def imported(args: list[str], env: dict | None = None) -> set[str]:
    """The modules ``archcalc args`` imports, by their top-level package."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "archcalc", *args], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    names = [line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    return {name.split(".")[0] for name in names[1:]}  # the first line is the header


@pytest.mark.parametrize("case", COMMANDS)
def test_no_heavy_import(case):
    assert imported(COMMANDS[case]) & HEAVY == set()


def test_a_bfloat16_config_imports_no_onnx(tmp_path):
    """A bf16 config's model is all bfloat16 constants, read without onnx's ml_dtypes."""
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps({**json.loads(CONFIG.read_text()), "torch_dtype": "bfloat16"}))
    assert imported(["estimate", str(config), "--dim", "sequence=128"]) & HEAVY == set()


def test_an_op_without_a_rule_still_gets_onnx(tmp_path):
    """The check above could pass by never asking onnx: an op with no rule must still reach it."""
    from onnx import TensorProto, helper, save

    node = helper.make_node("Det", ["x"], ["y"])  # no rule in archcalc: onnx's inference sizes it
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "det.onnx"))
    assert "onnx" in imported(["estimate", str(tmp_path / "det.onnx")])


def test_onnx_imported_after_archcalc_is_whole():
    """The messages and the extension archcalc loads on its own are the ones onnx then uses."""
    script = f"""
import archcalc
archcalc.estimate({str(CONFIG)!r}, dims={{"sequence": 8}}).to_dict()   # loads messages and extension
from archcalc import onnx_proto
import onnx, onnx.checker, onnx.reference, onnx.shape_inference, numpy as np
from onnx import TensorProto, helper
assert onnx_proto.ModelProto is onnx.ModelProto and onnx_proto.TensorProto is onnx.TensorProto
assert onnx.shape_inference.C is onnx_proto._extension().shape_inference
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
onnx.checker.check_model(m)
assert onnx.shape_inference.infer_shapes(m).graph.output[0].type.tensor_type.shape.dim[0].dim_value == 2
assert onnx.reference.ReferenceEvaluator(m).run(None, {{"x": np.array([-1, 2], np.float32)}})[0].tolist() == [0, 2]
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.stdout.strip() == "ok", run.stderr[-2000:]


def test_the_design_parser_is_kept_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    text = "INPUT[32x32x3] -> [CONV3-8 -> RELU]*2 -> POOL2 -> FC-10"
    built = dsl_parser.parser.__wrapped__()  # no file yet: built, and written
    kept = list((tmp_path / "archcalc").glob("dsl-parser-*.lark"))
    assert len(kept) == 1
    loaded = dsl_parser.parser.__wrapped__()
    assert loaded.parse(text) == built.parse(text)
    assert [t.meta.column for t in loaded.parse(text).iter_subtrees()] == \
        [t.meta.column for t in built.parse(text).iter_subtrees()]
    kept[0].write_bytes(b"not a parser")  # a broken file is built again
    assert dsl_parser.parser.__wrapped__().parse(text) == built.parse(text)


def test_the_design_parser_without_a_cache(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # no folder can be made under a file
    assert dsl_parser.parser.__wrapped__().parse("INPUT[8x8x1] -> FC-2") is not None
    assert os.listdir(tmp_path) == ["file"]
