"""The command line: formats, options, the JSON contract, and README / --help agreement."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
from click.testing import CliRunner
from conftest import ROOT, model_path

from archcalc.cli import main


def invoke(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


def test_json_contract_carries_totals_and_every_tensor():
    data = json.loads(invoke("estimate", "torchvision/vgg16", "--format", "json"))
    assert data["schema"] == "archcalc.estimate/2"
    totals = data["totals"]
    # VGG-16 (config D): torchvision's parameter count, and the closed-form MACs at 224x224. The
    # exporter merged the fresh model's equal zero biases, so the file stores 7,360 fewer weights.
    assert totals["params_per_layer"] == 138_357_544 and round(totals["macs"] / 1e9, 2) == 15.47
    assert totals["params"] == 138_350_184  # its distinct non-scalar float initializers, as onnx.load lists them
    for key in ("params", "macs", "activation_elements", "peak_bytes"):
        assert isinstance(totals[key], int)
    assert data["tensors"]["x"]["shape"] == [1, 3, 224, 224]
    assert len(data["tensors"]) > len(data["layers"])
    assert sum(r["params"] for r in data["layers"]) == totals["params_per_layer"]


def test_csv_rows_sum_to_the_totals():
    df = pd.read_csv(io.StringIO(invoke("estimate", "torchvision/resnet50", "--format", "csv")))
    data = json.loads(invoke("estimate", "torchvision/resnet50", "--format", "json"))
    assert df["macs"].sum() == data["totals"]["macs"]
    assert df["params"].sum() == data["totals"]["params_per_layer"]


def test_top_keeps_the_heaviest_in_execution_order():
    df = pd.read_csv(io.StringIO(invoke("estimate", "torchvision/vgg16", "--format", "csv",
                                        "--top", "3", "--sort", "params")))
    assert list(df["op"]) == ["Gemm", "Gemm", "Gemm"]
    assert df["weights"].iloc[0] == 7 * 7 * 512 * 4096  # the notes: the first FC holds most weights


def test_dtype_reprices_floats_and_batch_scales_activations():
    fp32 = json.loads(invoke("estimate", "torchvision/alexnet", "--format", "json"))["totals"]
    fp16 = json.loads(invoke("estimate", "torchvision/alexnet", "--format", "json", "--dtype", "fp16"))["totals"]
    b8 = json.loads(invoke("estimate", "torchvision/alexnet", "--format", "json", "--batch", "8"))["totals"]
    assert fp16["param_bytes"] * 2 == fp32["param_bytes"]
    assert fp16["activation_bytes"] * 2 == fp32["activation_bytes"]
    assert b8["activation_elements"] == 8 * fp32["activation_elements"]
    assert b8["macs"] == 8 * fp32["macs"] and b8["params"] == fp32["params"]


def test_markdown_and_table_show_totals_and_conventions():
    md = invoke("estimate", model_path("vgg16"), "--format", "markdown")
    # The file stores each weight once (the exporter merged equal zero biases); per layer, torch's count.
    assert "| parameters | 138,350,184 (138.35 M): each stored weight once |" in md and "FLOPs = 2 x MACs" in md
    assert "per layer | 138,357,544: " in md
    table = invoke("estimate", "torchvision/vgg16")
    assert "inference peak" in table and "MiB" in table


def test_dim_binds_a_named_dim():
    data = json.loads(invoke("estimate", model_path("bert_base"), "--dim", "sequence=64", "--batch", "2",
                             "--format", "json"))
    assert data["inputs"] == {"input_ids": [2, 64], "attention_mask": [2, 64]}
    assert list(data["outputs"].values()) == [[2, 64, 768]]


def test_zoo_lists_the_default():
    assert "torchvision/vgg16" in invoke("zoo")


def test_every_command_has_an_example_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, command in main.commands.items():
        assert "Example:" in (command.help or ""), name
        assert f"archcalc {name}" in readme, name


def test_readme_commands_name_real_options():
    readme = (ROOT / "README.md").read_text()
    for name, flag in re.findall(r"archcalc (\w+)[^\n]*?(--[a-z-]+)", readme):
        assert flag in invoke(name, "--help"), (name, flag)
