"""Tiny random-weight Hugging Face decoders exported to ONNX as one decoder step with a KV cache.

Needs torch and transformers (not archcalc's dependencies) plus onnx and onnxruntime. Each variant
is built from a config (hidden 64, 2 layers, vocab 64, MLP 64, fp32, random weights from a fixed
seed, eager attention; nothing downloaded) and wrapped so that the graph takes ``input_ids`` [batch, new]
and, per layer i, ``past_key_values.{i}.key`` / ``past_key_values.{i}.value`` (what the model's
transformers cache layer holds: [batch, kv_heads, past, head_dim]; for DeepSeek V3's multi-head
latent attention the compressed latent [batch, 1, past, kv_lora_rank] and the shared rotary key
[batch, 1, past, qk_rope_head_dim]) and returns ``logits`` plus ``present.{i}.key`` /
``present.{i}.value``. The wrapper fills a ``transformers.DynamicCache`` from the flat past and
calls the model with ``use_cache=True``: the attention math is the model's own. The cache is a plain
(uncapped) DynamicCache; the sliding-window mask still comes from the config, so the sliding models
compute what transformers computes while their presents grow with every token. Exported with the
TorchScript exporter (opset 17, IR 8, dynamic batch / new / past axes), weights inline; the
exporter's intermediate tensor names are shortened to t0, t1, ... (node names, the module paths,
are kept) to keep the files small.

Under tests/fixtures/kv_exports/ it writes, per variant NAME:
  NAME.onnx         the exported step (each file under 300 KB, 2.2 MB in all);
  NAME.config.json  the tiny model's config (``config.to_json_file``);
and measured.json: per variant the torch parameter count, the onnxruntime (CPU) present shapes at
batch 1 and 2, past 0, 1, 5, 9 and new 1, 3, the present bytes per token per sequence (constant
across those runs, checked) and per layer, the largest output difference from the wrapper in
torch, the largest logits difference between the ONNX step fed transformers' own prefill cache
(past 6 and 20, i.e. beyond the window) and a cache-free transformers forward, and for the
sliding-window variants how transformers' own ``DynamicCache(config=...)`` grows in eager PyTorch
(capped at sliding_window - 1 tokens on sliding layers). Variants that fail to build or export are
recorded under "failed" with the error.

Usage: /path/to/python-with-torch tools/make_kv_exports.py [NAME ...]
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "kv_exports"
SEED = 0
VOCAB, HIDDEN, LAYERS, FFN, POSITIONS = 64, 64, 2, 64, 64
OPSET = 17
PASTS, NEWS, BATCHES = (0, 1, 5, 9), (1, 3), (1, 2)
WINDOW = 16
CONTINUATION_PASTS = (6, 20)  # 20 > WINDOW: the sliding mask must hold for a past beyond the window


def _llama(kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=8, num_key_value_heads=kv_heads, max_position_embeddings=POSITIONS)
    return cfg, LlamaForCausalLM


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_inner=FFN,
                     n_positions=POSITIONS)
    return cfg, GPT2LMHeadModel


def _qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=POSITIONS)
    return cfg, Qwen3ForCausalLM


def _mistral():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                        num_attention_heads=8, num_key_value_heads=2, sliding_window=WINDOW,
                        max_position_embeddings=POSITIONS)
    return cfg, MistralForCausalLM


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=12, sliding_window=WINDOW,
                       layer_types=["sliding_attention", "full_attention"], max_position_embeddings=POSITIONS)
    return cfg, Gemma2ForCausalLM


def _phi3():
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                     num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                     original_max_position_embeddings=POSITIONS, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return cfg, Phi3ForCausalLM


def _deepseek_v3():
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    cfg = DeepseekV3Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, moe_intermediate_size=32,
                           num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4,
                           q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16,
                           v_head_dim=12, first_k_dense_replace=LAYERS, n_routed_experts=4, num_experts_per_tok=2,
                           n_group=1, topk_group=1, max_position_embeddings=POSITIONS, rope_scaling=None)
    return cfg, DeepseekV3ForCausalLM


VARIANTS = {
    "llama_gqa": lambda: _llama(2),
    "llama_mqa": lambda: _llama(1),
    "gpt2": _gpt2,
    "qwen3": _qwen3,
    "mistral_sliding": _mistral,
    "gemma2": _gemma2,
    "phi3": _phi3,
    "deepseek_v3": _deepseek_v3,
}


class _Step(torch.nn.Module):
    """One decoder step: input_ids and the flat past in, logits and the flat present out."""

    def __init__(self, model, layers):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        past_len = past[0].shape[2]
        new = input_ids.shape[1]
        position_ids = (torch.arange(new, dtype=torch.long) + past_len).unsqueeze(0).expand(input_ids.shape[0], -1)
        mask = torch.ones(input_ids.shape[0], past_len + new, dtype=torch.long)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                         use_cache=True)
        flat = []
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def _build(name):
    cfg, cls = VARIANTS[name]()
    cfg._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = cls(cfg).eval()
    return cfg, model


def _cache_shapes(model):
    """Per layer, the (heads, dim) of the key and of the value that transformers' own cache holds after a
    one-token prefill: [batch, heads, tokens, dim] tensors."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True)
    return [((layer.keys.shape[1], layer.keys.shape[3]), (layer.values.shape[1], layer.values.shape[3]))
            for layer in out.past_key_values.layers]


def _past(shapes, batch, length, rng):
    feeds = []
    for (kh, kd), (vh, vd) in shapes:
        feeds.append(rng.standard_normal((batch, kh, length, kd)).astype(np.float32))
        feeds.append(rng.standard_normal((batch, vh, length, vd)).astype(np.float32))
    return feeds


def _hf_sliding_growth(model, cfg):
    """Eager transformers, its own DynamicCache(config=...): per-layer cached tokens after each step."""
    from transformers import DynamicCache

    cache = DynamicCache(config=cfg)
    seen, rows = 0, []
    with torch.no_grad():
        for step in (1, 4, 5, 6, 8, 1, 3):
            ids = torch.zeros(1, step, dtype=torch.long)
            model(input_ids=ids, cache=cache, use_cache=True)
            seen += step
            rows.append({"total_tokens": seen, "cached_tokens_per_layer": [int(layer.keys.shape[2])
                                                                           for layer in cache.layers]})
    return {"layer_classes": [type(layer).__name__ for layer in cache.layers], "steps": rows}


def _short_value_names(graph):
    """Rename the exporter's intermediate tensors (``/model/layers.0/self_attn/Concat_7_output_0``) to
    ``t0``, ``t1``, ...: they are half the file. Node names (the module paths), graph inputs and outputs
    and initializers keep theirs."""
    keep = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer} | {""}
    new = {}
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out not in keep:
                new[out] = node.output[i] = new.get(out, f"t{len(new)}")
        for i, inp in enumerate(node.input):
            node.input[i] = new.get(inp, inp)


def _continuation_diff(sess, model, layers, past_len, new=3, batch=2):
    """Largest logits difference between the ONNX step fed transformers' own prefill cache for the first
    past_len tokens and one full (cache-free) transformers forward over past_len + new tokens."""
    from transformers import DynamicCache

    ids = torch.from_numpy(np.random.default_rng(SEED + past_len).integers(0, VOCAB, (batch, past_len + new)))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[:, past_len:].numpy()
        cache = DynamicCache()
        model(input_ids=ids[:, :past_len], cache=cache, use_cache=True)
    feeds = {"input_ids": ids[:, past_len:].numpy()}
    for i, layer in enumerate(cache.layers[:layers]):
        feeds[f"past_key_values.{i}.key"] = layer.keys.numpy()
        feeds[f"past_key_values.{i}.value"] = layer.values.numpy()
    return float(np.abs(sess.run(["logits"], feeds)[0] - full).max())


def _export(name):
    cfg, model = _build(name)
    params = sum(p.numel() for p in model.parameters())
    shapes = _cache_shapes(model)
    layers = len(shapes)
    step = _Step(model, layers).eval()
    rng = np.random.default_rng(SEED)
    ids = torch.from_numpy(rng.integers(0, VOCAB, (2, 3)))
    past = [torch.from_numpy(a) for a in _past(shapes, 2, 5, rng)]
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
    axes.update({n: {0: "batch", 2: "past"} for n in past_names})
    axes.update({n: {0: "batch", 2: "total"} for n in present_names})
    path = OUT / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, (ids, *past), str(path), input_names=["input_ids", *past_names],
                          output_names=["logits", *present_names], dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)  # onnxruntime 1.23 reads IR <= 10
    _short_value_names(proto.graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    cfg.to_json_file(str(OUT / f"{name}.config.json"))
    return cfg, model, step, shapes, params, path


def _measure(name, cfg, model, step, shapes, params, path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(SEED + 1)
    runs, per_token, worst = [], set(), 0.0
    for batch in BATCHES:
        for new in NEWS:
            base = None
            for past_len in PASTS:
                ids = rng.integers(0, VOCAB, (batch, new))
                past = _past(shapes, batch, past_len, rng)
                feeds = {"input_ids": ids, **{i.name: a for i, a in zip(sess.get_inputs()[1:], past)}}
                outs = sess.run(None, feeds)
                with torch.no_grad():
                    ref = step(torch.from_numpy(ids), *[torch.from_numpy(a) for a in past])
                worst = max(worst, max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, ref)))
                present = {n: o for n, o in zip(names, outs) if n.startswith("present.")}
                total = sum(o.nbytes for o in present.values())
                runs.append({"batch": batch, "past": past_len, "new": new, "present_bytes": total,
                             "present_shapes": {n: list(o.shape) for n, o in present.items()}})
                if base is None:
                    base = (past_len, total)
                else:
                    per_token.add((total - base[1]) / (past_len - base[0]) / batch)
            # the total itself: every cached token of every sequence costs the same
            per_token.add(total / (past_len + new) / batch)
    if len(per_token) != 1:
        raise AssertionError(f"{name}: bytes per token not constant: {sorted(per_token)}")
    per_layer = [{"key": [s[0][0], "T", s[0][1]], "value": [s[1][0], "T", s[1][1]]} for s in shapes]
    entry = {"onnx": path.name, "config": f"{name}.config.json", "model_type": cfg.model_type,
             "parameters": params, "file_bytes": path.stat().st_size, "opset": OPSET, "dtype": "float32",
             "kv_bytes_per_token": per_token.pop(),
             "cache_per_layer_heads_T_dim": per_layer,
             "kv_bytes_per_token_per_layer": [4 * (kh * kd + vh * vd) for (kh, kd), (vh, vd) in shapes],
             "max_abs_diff_vs_transformers": worst, "runs": runs,
             "continuation_max_abs_diff": {str(p): _continuation_diff(sess, model, len(shapes), p)
                                           for p in CONTINUATION_PASTS}}
    if getattr(cfg, "sliding_window", None):
        entry["sliding_window"] = cfg.sliding_window
        entry["layer_types"] = getattr(cfg, "layer_types", None)
        entry["onnx_cache"] = ("uncapped DynamicCache: presents hold past + new tokens on every layer; "
                               "the sliding window is applied by the attention mask")
        entry["transformers_dynamic_cache"] = _hf_sliding_growth(model, cfg)
    return entry


def main(argv):
    names = argv or list(VARIANTS)
    OUT.mkdir(parents=True, exist_ok=True)
    result_path = OUT / "measured.json"
    result = json.loads(result_path.read_text()) if argv and result_path.exists() else {}
    result.setdefault("variants", {})
    result.setdefault("failed", {})
    result["how"] = ("onnxruntime CPUExecutionProvider; kv_bytes_per_token = present bytes per cached token "
                     "per sequence, the same from (present bytes difference / token difference / batch) "
                     f"over past {list(PASTS)}, new {list(NEWS)}, batch {list(BATCHES)}")
    for name in names:
        result["variants"].pop(name, None)
        result["failed"].pop(name, None)
        try:
            entry = _measure(name, *_export(name))
        except Exception as exc:  # record and move on
            traceback.print_exc()
            result["failed"][name] = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        result["variants"][name] = entry
        print(f"{name}: {entry['kv_bytes_per_token']} B/token, {entry['file_bytes']} B, "
              f"diff {entry['max_abs_diff_vs_transformers']:.2e}")
    result_path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
