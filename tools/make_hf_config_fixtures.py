"""Small configs of each family archcalc builds from a config.json, and transformers' own parameter
count of each (the model built on torch's meta device; a tied weight once, as ``parameters()``
yields it): tests/fixtures/hf_configs/. Needs torch and transformers.
Usage: python tools/make_hf_config_fixtures.py [NAME ...]   (no names: every one)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf_configs"
SMALL = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 1000}
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**SMALL, intermediate_size=688, num_key_value_heads=2),
    "mistral": lambda: transformers.MistralConfig(**SMALL, intermediate_size=512, num_key_value_heads=4),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL, intermediate_size=512, num_key_value_heads=2,
                                              tie_word_embeddings=True),
    "qwen3": lambda: transformers.Qwen3Config(**SMALL, intermediate_size=512, num_key_value_heads=2, head_dim=48),
    "gemma": lambda: transformers.GemmaConfig(**SMALL, intermediate_size=512, num_key_value_heads=1, head_dim=64),
    "gemma2": lambda: transformers.Gemma2Config(**SMALL, intermediate_size=512, num_key_value_heads=4,
                                                head_dim=32),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(**SMALL, intermediate_size=512, num_key_value_heads=4,
                                                         head_dim=32),
    "phi3": lambda: transformers.Phi3Config(**SMALL, intermediate_size=512, num_key_value_heads=4, pad_token_id=0,
                                            bos_token_id=1, eos_token_id=2),
    "mixtral": lambda: transformers.MixtralConfig(**SMALL, intermediate_size=384, num_key_value_heads=2,
                                                  num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(**SMALL, intermediate_size=512, num_key_value_heads=2,
                                                     moe_intermediate_size=128,
                                                     shared_expert_intermediate_size=256,
                                                     num_experts=6, num_experts_per_tok=2, decoder_sparse_step=1,
                                                     mlp_only_layers=[1]),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(**SMALL, intermediate_size=512, num_key_value_heads=2,
                                                     head_dim=48, moe_intermediate_size=96, num_experts=8,
                                                     num_experts_per_tok=2),
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        hidden_size=256, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=8, vocab_size=1000,
        intermediate_size=512, moe_intermediate_size=128, n_routed_experts=8, num_experts_per_tok=2,
        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=96, qk_rope_head_dim=16,
        qk_nope_head_dim=32, v_head_dim=32, n_group=2, topk_group=1),
    "deepseek_v2": lambda: transformers.DeepseekV2Config(  # V2-Lite's shape: queries projected directly
        hidden_size=256, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=8, vocab_size=1000,
        intermediate_size=512, moe_intermediate_size=128, n_routed_experts=8, num_experts_per_tok=2,
        n_shared_experts=2, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=None, qk_rope_head_dim=16,
        qk_nope_head_dim=32, v_head_dim=32),
    "gpt2": lambda: transformers.GPT2Config(n_embd=256, n_layer=2, n_head=8, vocab_size=1000, n_positions=128),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(**SMALL, intermediate_size=1024),
    "bert": lambda: transformers.BertConfig(**SMALL, intermediate_size=1024),
    "olmo2": lambda: transformers.Olmo2Config(**SMALL, intermediate_size=512, num_key_value_heads=2,
                                              pad_token_id=0, eos_token_id=2),
    "olmo3": lambda: transformers.Olmo3Config(**{**SMALL, "num_hidden_layers": 4}, intermediate_size=512,
                                              num_key_value_heads=4, sliding_window=64, pad_token_id=0,
                                              eos_token_id=2),
    "phi": lambda: transformers.PhiConfig(**SMALL, intermediate_size=1024, qk_layernorm=True,
                                          partial_rotary_factor=0.4),
    "falcon": lambda: transformers.FalconConfig(**SMALL, multi_query=True, parallel_attn=True, bias=False),
    "falcon_new": lambda: transformers.FalconConfig(**SMALL, new_decoder_architecture=True, num_kv_heads=2,
                                                    ffn_hidden_size=768),
    "falcon_rw": lambda: transformers.FalconConfig(**SMALL, multi_query=False, parallel_attn=False, bias=True,
                                                   alibi=True),
}


def count(name: str, config) -> int:
    with torch.device("meta"):
        auto = transformers.AutoModel if name == "bert" else transformers.AutoModelForCausalLM
        model = auto.from_config(config)
    return sum(p.numel() for p in model.parameters())


def main(names: list[str]) -> None:
    path = OUT / "transformers_counts.json"
    counts = json.loads(path.read_text()) if names else {}
    for name in names or list(CONFIGS):
        make = CONFIGS[name]
        config = make()
        config.to_json_file(str(OUT / f"{name}.json"))
        counts[name] = count(name, config)
        print(name, counts[name])
    path.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
