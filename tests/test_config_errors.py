"""A hostile config.json: every wrong field one line naming the file and the field, exit 2, before any
graph is built; the shapes of JSON that are not a config at all refused as such."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from conftest import ROOT

from archcalc.cli import main

LLAMA = json.loads((ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json").read_text())
GEMMA3 = {"model_type": "gemma3", "torch_dtype": "bfloat16", "text_config": {
    "model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 100, "sliding_window": 8}}


def run(path, *args):
    result = CliRunner().invoke(main, ["estimate", str(path), "--dim", "sequence=16", *args])
    return result.exit_code, result.output.strip()


def refused(path, *needles):
    code, text = run(path)
    assert code == 2 and text.count("\n") == 0 and text.startswith(f"error: {path}: "), text
    for needle in needles:
        assert needle in text, text
    return text


@pytest.mark.parametrize("field,value", [
    ("hidden_size", 0), ("hidden_size", -4096), ("hidden_size", 2 ** 63), ("hidden_size", 4096.5),
    ("hidden_size", "4096"), ("hidden_size", True), ("num_hidden_layers", 10 ** 7), ("num_attention_heads", [32]),
    ("sliding_window", -5), ("sliding_window", 1.5), ("sliding_window", "4096"),
    ("max_position_embeddings", -2048), ("max_position_embeddings", math.nan), ("max_position_embeddings", "2k"),
    ("rotary_pct", 1e300), ("partial_rotary_factor", 0), ("torch_dtype", ["float16"]), ("torch_dtype", "float8"),
    ("hidden_act", "mish"), ("layer_types", [["sliding_attention"]]), ("layer_types", "full_attention"),
    ("tie_word_embeddings", "yes"), ("decoder_sparse_step", 0), ("vocab_size", None),
])
def test_a_wrong_field_names_the_file_and_the_field(tmp_path, field, value):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, field: value}))
    refused(path, field)


@pytest.mark.parametrize("top", ["[]", "3", '"llama"', "null", "true"])
def test_json_that_is_not_an_object(tmp_path, top):
    path = tmp_path / "config.json"
    path.write_text(top)
    code, text = run(path)
    assert code == 2 and "Traceback" not in text and text.count("\n") == 0, text


def test_deep_nesting_and_size_are_bounded(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(deep, "nests deeper")
    big = tmp_path / "big.json"
    with big.open("w") as f:
        f.write('{"model_type": "llama", "pad": "')
        f.write("x" * (17 << 20))
        f.write('"}')
    refused(big, "bytes is not a config.json")


@pytest.mark.parametrize("text_config", [None, [], 7, "x"])
def test_a_wrapped_text_config_must_be_an_object(tmp_path, text_config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GEMMA3, "text_config": text_config}))
    refused(path, "text_config")


def test_a_field_inside_text_config_is_named_by_its_path(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GEMMA3, "text_config": {**GEMMA3["text_config"], "sliding_window": -1}}))
    refused(path, "text_config.sliding_window")


def test_fields_that_contradict_each_other(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "num_key_value_heads": 5}))
    refused(path, "num_key_value_heads", "divide")
    narrow = {k: v for k, v in LLAMA.items() if k != "head_dim"}
    path.write_text(json.dumps({**narrow, "hidden_size": 8, "num_attention_heads": 32, "num_key_value_heads": 32}))
    refused(path, "hidden_size", "head_dim")


def test_a_byte_order_mark_is_read_as_in_designs(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(LLAMA).encode())
    code, text = run(path)
    assert code == 0, text


@pytest.mark.parametrize("field", ["hidden_act", "partial_rotary_factor", "rotary_pct", "torch_dtype", "head_dim"])
def test_a_null_field_is_the_familys_default(tmp_path, field):
    """transformers reads a null field as its default; so does archcalc (a null hidden_act crashed the builder)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, field: None}))
    result = CliRunner().invoke(main, ["estimate", str(path), "--dim", "sequence=16", "--format", "json"])
    assert result.exit_code == 0, result.output
    served = CliRunner().invoke(main, ["fit", str(path), "--mode", "serve", "--gpu", "A100-80GB", "--context", "16"])
    assert served.exit_code == 0, served.output
