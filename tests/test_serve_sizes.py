"""Serving's sizes read from the graph: a config, the equivalent design and an export of one decoder
get the same vLLM accounting; the sizes are the published configs' own; FlashMLA's block follows the
GPU's architecture (NVIDIA's compute-capability table), not its name."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import ROOT
from test_serving import QWEN3_235B

from archcalc.analysis.gpus import CATALOG, gpu
from archcalc.analysis.serve.sizes import Attention, Experts
from archcalc.api import serve
from archcalc.cli import main

KV = ROOT / "tests" / "fixtures" / "kv_exports"
# Llama-architecture 7B with Mistral's sizes, fp32, no max_position_embeddings (no rotary table to
# count, as the design says nothing of one): the config and the design of the issue.
LLAMA_FP32 = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": False}
DESIGN = ("TOKENS[128] -> EMBED-32000x4096 -> [RMSNORM -> ATTN-32h/kv8 -> RMSNORM -> SWIGLU-14336]*32 -> RMSNORM "
          "-> LMHEAD-32000")
GPT2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
        "activation_function": "gelu_new"}


def _config(tmp_path, cfg) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _json(*args) -> dict:
    out = CliRunner().invoke(main, ["fit", *args, "--mode", "serve", "--format", "json"])
    assert out.exit_code in (0, 1), out.output
    return {k: v for k, v in json.loads(out.output).items() if k != "model"}


@pytest.mark.parametrize("how", [["--gpu", "A100-80GB", "--context", "8192"],
                                 ["--gpu", "H100-80GB", "--context", "4096", "--tp", "2", "--engine", "v0"]])
def test_a_config_and_its_design_serve_alike(tmp_path, how):
    config, design = _json(_config(tmp_path, LLAMA_FP32), *how), _json(DESIGN, *how)
    assert design.pop("notes") == ["the rotary cos/sin table vLLM keeps beside the weights is not in this graph: "
                                   "not counted"]
    assert config == design


def test_an_export_serves_as_its_config(tmp_path):
    """GPT-2 exported by torch's dynamo exporter (transposed weights, a viewed embedding) and its
    published config: one result. GPT-2's positions are learned, so the config counts no rotary
    table; the export cannot say so, and says that it cannot."""
    export = ROOT / "tests" / "fixtures" / "models" / "gpt2_dynamo.onnx"
    how = ["--gpu", "L4", "--context", "1024"]
    served = _json(str(export), *how)  # its batch and sequence dims bound as the config's are
    assert served.pop("notes") and served == _json(_config(tmp_path, GPT2), *how)


@pytest.mark.parametrize("name", ["llama_gqa", "llama_mqa", "phi3", "qwen3", "gemma2", "deepseek_v3", "gpt2"])
def test_a_kv_export_reads_the_sizes_of_its_config(name):
    """transformers' own decoder step (tools/make_kv_exports.py: rotary, repeat_kv, a past fed in,
    gemma2's soft cap, DeepSeek's latent attention) and the graph archcalc builds from its config."""
    card = gpu("H100-80GB")  # within the 64 positions the tiny models have: a step of 63 new tokens after 1
    export = serve(KV / f"{name}.onnx", card, 64, dims={"new": 63, "past": 1})
    config = serve(KV / f"{name}.config.json", card, 64)
    assert export.sizes.rotary_bytes is None and export.notes
    assert export.sizes.attentions == config.sizes.attentions
    assert export.sizes.feed_forwards == config.sizes.feed_forwards
    assert export.terms["activation peak"] == config.terms["activation peak"]


def test_the_sizes_are_the_configs(tmp_path):
    """Qwen3-235B-A22B's config.json: 64 query heads and 4 KV heads of 128, 128 experts of 1536, top 8."""
    sizes = serve(_config(tmp_path, QWEN3_235B), gpu("H100-80GB"), 4096, tp=4).sizes
    assert set(sizes.attentions) == {Attention(qkv=(64 + 2 * 4) * 128, out=64 * 128, heads=4, head_dim=128)}
    assert {ff.experts for ff in sizes.feed_forwards} == {(Experts(128, 8, 2 * 1536, 1536, 4096),)}
    assert sizes.hidden == 4096 and sizes.vocab == 151936 and sizes.dtype_bytes == 2


# NVIDIA's table of CUDA GPUs (developer.nvidia.com/cuda-gpus): compute capability by chip.
COMPUTE_CAPABILITY = {"T4": (7, 5), "V100-32GB": (7, 0), "A100-80GB": (8, 0), "A10G": (8, 6), "L4": (8, 9),
                      "RTX-4090": (8, 9), "H100-80GB": (9, 0), "H200": (9, 0), "B200": (10, 0), "RTX-5090": (12, 0)}


def test_the_catalog_names_each_architecture():
    assert {n: CATALOG[n].sm for n in COMPUTE_CAPABILITY} == COMPUTE_CAPABILITY
    assert all(g.arch for g in CATALOG.values())
    assert {g.name for g in CATALOG.values() if g.arch == "hopper"} == {"H100-80GB", "H200"}


@pytest.mark.parametrize("card, block", [("H100-80GB", 64), ("H200", 64), ("B200", 16), ("A100-80GB", 16)])
def test_flashmla_blocks_on_hopper_alone(card, block):
    """vLLM forces 64-token blocks for FlashMLA, which runs on compute capability 9.x alone."""
    latent = serve(KV / "deepseek_v3.config.json", gpu(card), 4096)
    assert latent.cache.block_size == block
    assert serve(KV / "llama_gqa.config.json", gpu(card), 4096).cache.block_size == 16


def test_an_encoder_has_no_lm_head_to_sample(tmp_path):
    bert = _config(tmp_path, {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128,
                              "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})
    out = CliRunner().invoke(main, ["fit", bert, "--mode", "serve", "--gpu", "T4", "--context", "128"])
    assert out.exit_code == 2 and "no LM head found" in out.output and "--serve-runtime plain" in out.output
    assert serve(bert, gpu("T4"), 128, runtime="plain").fits


def test_plain_tensor_parallel_reads_the_kv_heads_from_a_design():
    """8 KV heads over 2 ranks: a rank's page is half the model's per-token cache a layer."""
    result = serve(DESIGN, gpu("H100-80GB"), 4096, tp=2, runtime="plain")
    per_layer = result.setup.kv.bytes_per_token // 32
    assert result.cache.page == per_layer // 2 * result.cache.block_size
