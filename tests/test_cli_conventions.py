"""The command line's conventions: help with -h and bare, ``python -m``, forgiving GPU names,
every unbound dim in one error, --sort, the sweep table, one default optimizer, errors that name
real flags, and outputs written with the user's umask."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import stat
import subprocess
import sys

import click
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT
from onnx import TensorProto, helper

from archcalc.analysis.gpus import gpu
from archcalc.cli import main
from archcalc.errors import InputError
from archcalc.render.atomic import atomic_folder


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def python_m(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_bare_archcalc_prints_its_help_and_exits_0():
    run = python_m("archcalc")
    assert run.returncode == 0 and run.stdout.startswith("Usage: ") and "\\n" not in run.stdout
    assert "Commands:" in run.stdout and run.stderr == ""


def test_h_is_help_everywhere():
    code, out = invoke("-h")
    assert code == 0 and "Commands:" in out
    for name in main.commands:
        code, out = invoke(name, "-h")
        assert code == 0 and out.startswith(f"Usage: main {name}") and "-h, --help" in out, name


def test_the_cli_module_runs_as_a_script_to_its_last_helper():
    """``fit --mode serve`` calls a helper defined after the old ``if __name__`` guard (a NameError)."""
    run = python_m("archcalc.cli", "fit", "llama-2-7b", "--mode", "serve", "--gpu", "H100")
    assert run.returncode == 2 and run.stderr == "error: --mode serve needs --context TOKENS (the tokens of each " \
        "sequence)\n"


@pytest.mark.parametrize("typed,name", [
    ("H100", "H100-80GB"), ("h100", "H100-80GB"), ("a100_80gb", "A100-80GB"), ("A100 40GB", "A100-40GB"),
    ("a100-80", "A100-80GB"), ("rtx4090", "RTX-4090"), ("mi300x", "MI300X"),
    # what nvidia-smi --query-gpu=name (and torch.cuda.get_device_name) print on these cards
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
    ("NVIDIA H100 80GB HBM3", "H100-80GB"), ("Tesla V100-SXM2-16GB", "V100-16GB"), ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 3090", "RTX-3090"), ("AMD Instinct MI300X", "MI300X"),
])
def test_gpu_names_as_users_type_them(typed, name):
    assert gpu(typed).name == name


@pytest.mark.parametrize("typed,message", [
    ("A100", "--gpu A100: which one? did you mean A100-40GB or A100-80GB?"),
    ("v100", "--gpu v100: which one? did you mean V100-16GB or V100-32GB?"),
    ("H20", "--gpu H20: not in the catalog; did you mean H200?"),  # an H20 has 96 GB: never the H200
    ("H100 NVL", "--gpu H100 NVL: not in the catalog; did you mean H100-80GB?"),  # 94 GB: not silently one
    ("mi250", "--gpu mi250: not in the catalog; did you mean MI250X?"),
    ("Voodoo2", "--gpu Voodoo2: not in the catalog; see 'archcalc gpus'"),
])
def test_a_gpu_name_that_is_not_one_card_names_the_candidates(typed, message):
    with pytest.raises(InputError) as err:
        gpu(typed)
    assert str(err.value).startswith(message)


def _images_model(tmp_path):
    """images[batch, 3, height, width] and a shapeless mask[batch, height, width] and a scan[?, 8]."""
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "height", "width"]),
              helper.make_tensor_value_info("scan", TensorProto.FLOAT, [1, None, 8])]
    nodes = [helper.make_node("Relu", [i.name], [f"{i.name}_out"]) for i in inputs]
    outputs = [helper.make_tensor_value_info(f"{i.name}_out", TensorProto.FLOAT, None) for i in inputs]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_every_unbound_dim_in_one_error_whose_fix_pastes(tmp_path):
    path = _images_model(tmp_path)
    code, out = invoke("estimate", path)
    assert code == 2 and out.count("\n") == 1
    assert out == (f"error: {path}: input 'images' dim 2 ('height') and dim 3 ('width') have no value; input "
                   "'scan' dim 1 ('scan[1]') has no value: pass --dim height=N --dim width=N --input scan=1xNx8 "
                   "(each N a size)\n")  # mask's height and width are named once, at images
    fix = out.split(": pass ")[1].split(" (each")[0].replace("N", "5").split()
    code, out = invoke("estimate", path, *fix, "--format", "json")
    assert code == 0 and json.loads(out)["inputs"] == {"images": [1, 3, 5, 5], "mask": [1, 5, 5], "scan": [1, 5, 8]}


def _layer_names(fmt, *args):
    code, out = invoke("estimate", "torchvision/vgg16", "--format", fmt, *args)
    assert code == 0
    if fmt == "json":
        return [r["layer"] for r in json.loads(out)["layers"]]
    if fmt == "csv":
        return list(pd.read_csv(io.StringIO(out))["layer"])
    if fmt == "markdown":
        return [line.split(" | ")[0][2:] for line in out.splitlines()[4:] if line.startswith("| /")]
    return [line.split()[0] for line in out.splitlines()[3:] if line.startswith("/")]


def test_sort_orders_the_layers_largest_first_in_every_format():
    # VGG-16's heaviest layers by weights (the CS231n notes): fc6 7x7x512x4096, fc7 4096x4096, fc8 4096x1000
    fcs = ["/classifier/classifier.0/Gemm", "/classifier/classifier.3/Gemm", "/classifier/classifier.6/Gemm"]
    for fmt in ("table", "markdown", "csv", "json"):
        assert _layer_names(fmt, "--top", 3, "--sort", "params") == fcs, fmt
        assert _layer_names(fmt, "--sort", "params")[:3] == fcs, fmt


def test_without_sort_the_layers_keep_execution_order():
    order = _layer_names("json")
    top = _layer_names("csv", "--top", 4)  # the four heaviest by MACs
    assert top == sorted(top, key=order.index) and len(top) == 4
    assert _layer_names("table") == order


def test_fit_sweep_is_a_table_of_batch_total_terms_and_verdict():
    args = ["fit", "torchvision/resnet50", "--gpu", "T4", "--mode", "train", "--sweep", "1,64,512"]
    code, out = invoke(*args)
    verdicts = json.loads(invoke(*args, "--format", "json")[1])["verdicts"]
    header, rule, *rows = out.splitlines()[1:6]
    assert header.split()[:2] == ["batch", "total"] and header.split()[-1] == "fits"
    for term in verdicts[0]["terms"]:
        assert term in header
    assert set(rule) == {"-", " "}
    assert [r.split()[0] for r in rows] == ["1", "64", "512"]
    assert [r.split()[-1] for r in rows] == ["yes" if v["fits"] else "NO" for v in verdicts] == ["yes", "yes", "NO"]
    assert code == 0  # the first batch decides, as for one --batch


def test_one_default_optimizer_adam_for_every_command():
    """Adam keeps exp_avg and exp_avg_sq, each the size of its parameter (torch/optim/adam.py):
    the MLP's 4x3 + 3 + 3x2 + 2 = 23 fp32 parameters hold 2 x 23 x 4 bytes of state."""
    from test_training_and_fit import mlp

    model = mlp()
    code, out = invoke("estimate", "torchvision/alexnet", "--mode", "train", "--format", "json")
    assert json.loads(out)["memory"]["training"]["optimizer"] == "adam"
    code, out = invoke("fit", "torchvision/alexnet", "--gpu", "T4", "--mode", "train", "--batch", "1", "--format",
                       "json")
    assert json.loads(out)["optimizer"] == "adam"
    code, out = invoke("plan", "torchvision/alexnet", "--format", "json", "--top", "1")
    assert json.loads(out)["optimizer"] == "adam"
    import archcalc

    assert archcalc.estimate(model).training_memory().optimizer_state == 2 * 23 * 4
    for command in ("estimate", "fit", "plan"):
        assert "adam" in invoke(command, "--help")[1].split("--optimizer", 1)[1][:300], command


def _real_flags() -> set[str]:
    flags = {opt for p in main.params for opt in p.opts + p.secondary_opts}
    for command in main.commands.values():
        ctx = click.Context(command, info_name=command.name)
        flags |= {opt for p in command.get_params(ctx) for opt in p.opts + p.secondary_opts}
    return flags


def test_every_flag_archcalc_names_is_a_real_option():
    """Each ``--name`` in any string of archcalc's source (its error messages, its help) is an option
    of some command: an error must not send a user to a flag that does not exist."""
    flags, wrong = _real_flags(), []
    for path in sorted((ROOT / "archcalc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", node.value):
                    if flag not in flags:
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {flag}")
    assert "--strategy" in flags and not wrong


@pytest.mark.parametrize("umask,file_mode,folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_are_written_with_the_users_umask(tmp_path, umask, file_mode, folder_mode):
    old = os.umask(umask)
    try:
        code, _ = invoke("export", "lenet5", "-o", tmp_path / "lenet5.onnx")
        with atomic_folder(tmp_path / "report") as tmp:
            (tmp / "report.md").write_text("# report\n")
    finally:
        os.umask(old)
    assert code == 0 and stat.S_IMODE((tmp_path / "lenet5.onnx").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "report" / "report.md").stat().st_mode) == file_mode
