"""Quantized checkpoints priced at the bytes they store (#24 Build 4): a config's quantization_config
read into the weights' stored types, scales, zero points and the format's extras.

The compressed-tensors fixtures are real checkpoints written by the library itself
(tools/make_quantized_fixtures.py), kept as config and safetensors header: the bytes the header
declares are the reference. AWQ and GPTQ are checked against the tensors vLLM's loaders create for
a checkpoint of the format (vllm/model_executor/layers/quantization/awq.py and gptq.py
``create_weights``), FP8 block checkpoints against fp8.py's."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from conftest import ROOT

import archcalc
from archcalc.analysis.gpus import gpu
from archcalc.api import serve
from archcalc.cli import main
from archcalc.errors import InputError

QUANTIZED = ROOT / "tests" / "fixtures" / "quantized"
SCHEMES = sorted(p.name for p in QUANTIZED.iterdir() if p.is_dir())
LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000, "torch_dtype": "float16"}


def _declared(header: dict) -> int:
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_compressed_tensors_checkpoints_cost_what_their_headers_declare(scheme):
    """int4 packed with group scales (symmetric and with zero points), int8 and fp8 per channel, fp8
    per tensor with a static input scale, fp8 per 128x128 block: every byte the header declares."""
    header = json.loads((QUANTIZED / scheme / "header.json").read_text())
    est = archcalc.estimate(str(QUANTIZED / scheme / "config.json"), dims={"sequence": 8})
    assert est.totals.param_bytes == _declared(header)


def test_a_quantized_model_keeps_its_parameter_count():
    """Packed or not, a weight of K x N values is K x N parameters: transformers' count of the model
    the checkpoint quantized (its config without quantization_config, built on the meta device)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = QUANTIZED / "W4A16" / "config.json"
    plain = {k: v for k, v in json.loads(path.read_text()).items() if k != "quantization_config"}
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**plain))
    assert archcalc.estimate(str(path), dims={"sequence": 8}).totals.params == \
        sum(p.numel() for p in model.parameters())


def _vllm_awq(k: int, n: int, group: int, dtype_bytes: int) -> int:
    """awq.py AWQLinearMethod.create_weights: qweight [K, N/8] int32, qzeros [K/g, N/8] int32,
    scales [K/g, N] in the model's dtype."""
    return k * (n // 8) * 4 + (k // group) * (n // 8) * 4 + (k // group) * n * dtype_bytes


def _vllm_gptq(k: int, n: int, bits: int, group: int, dtype_bytes: int) -> int:
    """gptq.py GPTQLinearMethod.create_weights: qweight [K / pack, N] int32, g_idx [K] int32, qzeros
    [K/g, N / pack] int32, scales [K/g, N] (group_size -1: one group)."""
    pack, groups = 32 // bits, 1 if group == -1 else k // group
    return (k // pack) * n * 4 + k * 4 + groups * (n // pack) * 4 + groups * n * dtype_bytes


def _vllm_fp8_block(k: int, n: int, block: int) -> int:
    """fp8.py Fp8LinearMethod.create_weights with weight_block_size: weight [N, K] fp8,
    weight_scale_inv [ceil(N/b), ceil(K/b)] float32."""
    return k * n + math.ceil(n / block) * math.ceil(k / block) * 4


LINEARS = [(256, 256), (256, 64), (256, 64), (256, 256), (256, 512), (256, 512), (512, 256)]  # q k v o gate up down
PLAIN = 2 * 1000 * 256 * 2 + (2 * 2 + 1) * 256 * 2  # embeddings, head, norms at fp16


@pytest.mark.parametrize("quant, layer_bytes", [
    ({"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True, "version": "gemm"},
     lambda k, n: _vllm_awq(k, n, 64, 2)),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True},
     lambda k, n: _vllm_gptq(k, n, 4, 128, 2)),
    ({"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": False, "sym": True},
     lambda k, n: _vllm_gptq(k, n, 8, -1, 2)),
    ({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
     lambda k, n: _vllm_fp8_block(k, n, 128)),
])
def test_awq_gptq_and_fp8_checkpoints_cost_what_vllm_loads(tmp_path, quant, layer_bytes):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "quantization_config": quant}))
    est = archcalc.estimate(str(path), dims={"sequence": 8})
    assert est.totals.param_bytes == PLAIN + 2 * sum(layer_bytes(k, n) for k, n in LINEARS)


def test_modules_the_checkpoint_leaves_unquantized_stay_at_the_models_dtype(tmp_path):
    """modules_to_not_convert names layers kept in fp16: q_proj of each layer here."""
    quant = {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm",
             "modules_to_not_convert": ["q_proj"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "quantization_config": quant}))
    est = archcalc.estimate(str(path), dims={"sequence": 8})
    q = LINEARS[0]
    assert est.totals.param_bytes == PLAIN + 2 * (q[0] * q[1] * 2 + sum(_vllm_awq(k, n, 64, 2) for k, n in LINEARS[1:]))


def test_dtype_does_not_reprice_fp8_values():
    """--dtype fp32 prices the model's 16-bit tensors at 4 bytes; fp8 values and scales stay as stored."""
    path = str(QUANTIZED / "FP8_DYNAMIC" / "config.json")
    header = json.loads((QUANTIZED / "FP8_DYNAMIC" / "header.json").read_text())
    wide = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
               if k != "__metadata__" and v["dtype"] == "BF16" and not k.endswith("_scale"))
    est = archcalc.estimate(path, dims={"sequence": 8}, dtype="fp32")
    assert est.totals.param_bytes == _declared(header) + wide


def test_serving_a_quantized_checkpoint_holds_its_stored_weights():
    """vLLM's weights term: the checkpoint's bytes and the rotary cos/sin table get_rope precomputes
    (max_position_embeddings x head size, at the model's dtype)."""
    path = QUANTIZED / "W4A16" / "config.json"
    config = json.loads(path.read_text())
    header = json.loads((QUANTIZED / "W4A16" / "header.json").read_text())
    rotary = config["max_position_embeddings"] * config["head_dim"] * 2
    report = serve(str(path), gpu("A100-80GB"), 512)
    assert report.terms["weights"] == _declared(header) + rotary


@pytest.mark.parametrize("args", [["fit", "--mode", "train", "--gpu", "A100-80GB", "--dim", "sequence=64"],
                                  ["plan", "--gpu", "A100-80GB", "--dim", "sequence=64"],
                                  ["export", "-o", "out.onnx"]])
def test_training_or_exporting_a_quantized_checkpoint_is_refused(args, tmp_path):
    path = str(QUANTIZED / "W4A16" / "config.json")
    result = CliRunner().invoke(main, [args[0], path, *args[1:]])
    assert result.exit_code == 2, result.output
    assert "quantized checkpoint" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("quant, field", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method"),
    ({"quant_method": "awq", "bits": 4, "version": "gemv"}, "AWQ"),
    ({"quant_method": "gptq", "bits": 3}, "bits"),
    ({"quant_method": "gptq", "bits": 4, "lm_head": True}, "lm_head"),
    ({"quant_method": "fp8", "weight_block_size": [128]}, "weight_block_size"),
    ("fp8", "quantization_config"),
    ({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {
        "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "block"}}}}, "block_structure"),
])
def test_a_format_archcalc_cannot_price_is_refused_not_guessed(tmp_path, quant, field):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "quantization_config": quant}))
    with pytest.raises(InputError, match=field):
        archcalc.estimate(str(path), dims={"sequence": 8})
