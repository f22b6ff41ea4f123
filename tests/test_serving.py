"""Serving memory against what vLLM printed at start-up for named models and GPUs
(tests/fixtures/serving/vllm_logs.json, each with its source): KV cache blocks, tokens and the
largest concurrency, within 3%. The configs are the models' published config.json fields."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import ROOT

import archcalc
from archcalc.analysis.gpus import GPU, GiB, gpu
from archcalc.analysis.serve.capacity import groups, kv_capacity
from archcalc.api import serve
from archcalc.cli import main

LOGS = json.loads((ROOT / "tests" / "fixtures" / "serving" / "vllm_logs.json").read_text())
LLAMA_3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "max_position_embeddings": 8192}
LLAMA_31_8B = {**LLAMA_3_8B, "max_position_embeddings": 131072}
MISTRAL_7B = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "torch_dtype": "float16",
              "sliding_window": None, "max_position_embeddings": 32768}
QWEN3_235B = {"model_type": "qwen3_moe", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 94,
              "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
              "moe_intermediate_size": 1536, "num_experts": 128, "num_experts_per_tok": 8,
              "torch_dtype": "bfloat16"}


def _config(tmp_path, cfg) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _close(ours, theirs, within=0.03):
    return abs(ours - theirs) <= within * theirs


@pytest.mark.parametrize("run", LOGS["llama-3.1-8b-rtx3090"]["runs"], ids=lambda r: str(r["context"]))
def test_v0_blocks_and_concurrency_on_an_rtx_3090(tmp_path, run):
    result = serve(_config(tmp_path, LLAMA_31_8B), gpu("RTX-3090"), run["context"], engine="v0").cache
    assert _close(result.blocks, run["blocks"]) and _close(result.concurrency, run["concurrency"])


def test_v0_available_memory_on_an_80gb_card(tmp_path):
    log = LOGS["llama-3-8b-80gb"]
    result = serve(_config(tmp_path, LLAMA_3_8B), gpu("H100-80GB"), 8192, engine="v0",
                   non_torch=int(log["non_torch_gib"] * GiB))
    assert _close(result.cache.available, log["available_gib"] * GiB)
    assert _close(result.terms["weights"], log["weights_gib"] * GiB, 0.005)


def _kv(tmp_path, cfg):
    return archcalc.estimate(_config(tmp_path, cfg), dims={"sequence": 4}).kv_cache()


def test_v1_tokens_with_tensor_parallel_from_the_available_memory(tmp_path):
    """Qwen3-235B on 4 H100s: 4 KV heads over 4 ranks, one a rank; the rank's blocks from its memory."""
    log = LOGS["qwen3-235b-a22b-fp8-tp4"]
    result = kv_capacity(_kv(tmp_path, QWEN3_235B), 0, int(log["available_gib"] * GiB), context=4096, tp=4,
                         kv_heads=4, utilization=1.0)
    assert _close(result.tokens, log["tokens"])


def test_v1_tokens_and_concurrency_of_a_mistral_decoder(tmp_path):
    """llava-v1.6-mistral's language model is Mistral-7B; its weights and activation peak as logged."""
    log = LOGS["llava-v1.6-mistral-7b-h100"]
    capacity = int(log["capacity_gib"] * GiB)
    taken = sum(int(log[k] * GiB) for k in ("weights_gib", "activation_gib", "non_torch_gib"))
    result = kv_capacity(_kv(tmp_path, MISTRAL_7B), taken, capacity, context=log["context"], kv_heads=8)
    assert _close(result.tokens, log["tokens"]) and _close(result.concurrency, log["concurrency"])


def test_latent_attention_caches_one_latent_a_layer(tmp_path):
    """DeepSeek-V2-Lite's MLA stage (14 layers; kv_lora_rank 512 + rope 64, bf16) on an L4."""
    log = LOGS["deepseek-v2-lite-4xl4-pp"]
    cfg = {"model_type": "deepseek_v3", "hidden_size": 2048, "num_hidden_layers": log["layers"],
           "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 102400, "intermediate_size": 10944,
           "moe_intermediate_size": 1408, "n_routed_experts": 64, "num_experts_per_tok": 6, "n_shared_experts": 2,
           "first_k_dense_replace": 1, "kv_lora_rank": log["kv_lora_rank"], "q_lora_rank": None,
           "qk_rope_head_dim": log["qk_rope_head_dim"], "qk_nope_head_dim": 128, "v_head_dim": 128,
           "torch_dtype": "bfloat16"}
    kv = _kv(tmp_path, cfg)
    assert kv.bytes_per_token == log["layers"] * (log["kv_lora_rank"] + log["qk_rope_head_dim"]) * 2
    result = kv_capacity(kv, 0, int(log["available_gib"] * GiB), context=4096, tp=2, utilization=1.0)
    assert _close(result.tokens, log["tokens"])


def test_sliding_window_layers_share_blocks_in_groups():
    """Gemma-2's alternation: two groups; a request keeps its window in the sliding ones."""
    g = groups([4096, None] * 21, "v1")
    assert g.size == 21 and sorted(g.kinds, key=str) == [4096, None]
    assert groups([4096, None] * 21, "v0").kinds == (None,)


def test_the_command_line_serves_a_config(tmp_path):
    out = CliRunner().invoke(main, ["fit", _config(tmp_path, LLAMA_3_8B), "--mode", "serve", "--gpu", "A100-80GB",
                                    "--context", "8192", "--format", "json"])
    data = json.loads(out.output)
    assert out.exit_code == 0 and data["kv_bytes_per_token"] == 131072
    assert data["tokens"] == data["blocks"] * 16 and data["max_concurrency"] == data["blocks"] / 512


def test_serve_refuses_what_it_cannot_price(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["fit", "resnet18", "--mode", "serve", "--gpu", "T4", "--context", "10"])
    assert out.exit_code == 2 and "no attention layers" in out.output
    out = runner.invoke(main, ["fit", "resnet18", "--gpu", "T4", "--context", "10"])
    assert out.exit_code == 2 and "--context has no effect without --mode serve" in out.output


def test_a_budget_serves_too(tmp_path):
    card = GPU("budget", "24GiB", 24 * GiB, 0, "--memory", None, 24 * GiB)
    result = serve(_config(tmp_path, MISTRAL_7B), card, 4096, runtime="plain")
    assert result.cache.blocks > 0 and result.terms["weights"] == 7_241_732_096 * 2


def test_a_model_larger_than_the_gpu_is_a_shortfall_never_a_negative_size(tmp_path):
    """Llama-3.1-405B in bf16 (published config: hidden 16384, 126 layers, 128 heads, 8 KV heads, FFN 53248,
    vocabulary 128256) on one A100-80GB: its 811 GB of weights leave nothing; the deficit is said as one."""
    import json

    from click.testing import CliRunner

    from archcalc.cli import main

    cfg = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_attention_heads": 128,
           "num_key_value_heads": 8, "num_hidden_layers": 126, "vocab_size": 128256, "torch_dtype": "bfloat16",
           "max_position_embeddings": 131072, "tie_word_embeddings": False}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    args = ["fit", str(path), "--mode", "serve", "--gpu", "A100-80GB", "--context", "4096"]
    out = json.loads(CliRunner().invoke(main, [*args, "--format", "json"]).output)
    weights = 405_853_388_800 * 2  # Meta's published parameter count, at two bytes each
    assert out["available_kv_cache"] == 0 and out["shortfall"] > weights - 80e9
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 1 and "available KV cache memory: none" in text.output and "-" not in text.output.split(
        "available KV cache memory")[1].split("\n")[0]
