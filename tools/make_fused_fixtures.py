"""Tiny random-weight transformers, fused by onnxruntime's transformer optimizer, as test fixtures.

Needs torch, transformers, onnx and onnxruntime (not archcalc's dependencies). Each model is built
from a config (random weights, nothing downloaded), exported with the TorchScript exporter
(opset 17, dynamic "batch" and "sequence" axes) and rewritten by
``onnxruntime.transformers.optimizer.optimize_model`` into com.microsoft fused ops (Attention,
MultiHeadAttention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu, FastGelu, ...).
For each variant it writes, under tests/fixtures/fused/:
  NAME.onnx  the optimized model, weights inline (each file well under 1.5 MB);
  NAME.json  the truths: the feeds (batch 2, sequence 16); every main-graph node output's shape
             and dtype as onnxruntime executed it (ORT_DISABLE_ALL, CPUExecutionProvider); the
             op-type counts (``domain::Op`` outside the default domain); the torch parameter
             count and buffers (name -> elements); the initializers' element counts by dtype; the
             config and the optimizer's settings.
Usage: python tools/make_fused_fixtures.py [NAME ...]
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # archcalc, run from a checkout
from archcalc.measure.validate import every_output  # noqa: E402  (exposes outputs; estimates nothing)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "fused"
BATCH, SEQUENCE = 2, 16
VOCAB = 1000


class _Hidden(torch.nn.Module):
    """Call a Hugging Face model by keyword and return last_hidden_state, as the exporter needs.
    The models use eager attention: onnxruntime's fusions match transformers 5's eager attention
    and mask graphs (for BERT), not the SDPA ones."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args))).last_hidden_state


def _bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128, type_vocab_size=2,
                     attn_implementation="eager")
    return BertModel(cfg, add_pooling_layer=False), cfg, ["input_ids", "attention_mask", "token_type_ids"]


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128, use_cache=False,
                     attn_implementation="eager")
    return GPT2Model(cfg), cfg, ["input_ids"]


def _llama():
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      use_cache=False, attn_implementation="eager")
    return LlamaModel(cfg), cfg, ["input_ids"]


def _t5_encoder():
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=32, use_cache=False, attn_implementation="eager")
    return T5EncoderModel(cfg), cfg, ["input_ids", "attention_mask"]


BUILDERS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama, "t5_encoder": _t5_encoder}
HEADS_HIDDEN = {"bert": (4, 64), "gpt2": (4, 64), "llama": (4, 64), "t5_encoder": (4, 64)}

# fixture name -> (model, optimizer model_type, opt_level, only_onnxruntime, FusionOptions attributes).
# The Python fusions give the same graph at opt_level 1, 2 and 99 (and with use_gpu) for these
# models, so only level 1 is kept; onnxruntime's own fusions alone (only_onnxruntime) differ.
VARIANTS = {
    # Attention fed a 1-D mask index (EmbedLayerNormalization's second output: the optimizer's
    # default for BERT), EmbedLayerNormalization, SkipLayerNormalization, BiasGelu
    "bert_o1": ("bert", "bert", 1, False, {}),
    # Attention fed the raw 2-D int32 mask (AttentionMaskFormat.AttentionMask)
    "bert_rawmask_o1": ("bert", "bert", 1, False, {"attention_mask_format": 2}),
    # MultiHeadAttention (separate Q, K, V, bias) and FastGelu in place of BiasGelu
    "bert_mha_fastgelu_o1": ("bert", "bert", 1, False, {"use_multi_head_attention": True,
                                                         "enable_gelu_approximation": True}),
    # onnxruntime's own level-99 fusions: FusedMatMul, BiasGelu, LayerNormalization
    "bert_ort_o99": ("bert", "bert", 99, True, {}),
    # SkipLayerNormalization, FastGelu (the attention fusions match only transformers-4 GPT-2 graphs)
    "gpt2_o1": ("gpt2", "gpt2", 1, False, {}),
    # SimplifiedLayerNormalization (default domain), SkipSimplifiedLayerNormalization
    "llama_o1": ("llama", "qwen3", 1, False, {}),
    # onnxruntime's own level-2 fusions: QuickGelu (SiLU), FusedMatMul, SimplifiedLayerNormalization
    "llama_ort_o2": ("llama", "qwen3", 2, True, {}),
    # SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization (no RelativePositionBias match)
    "t5_encoder_o1": ("t5_encoder", "t5", 1, False, {}),
}


def _no_packed_sequences():
    """transformers' packed-sequence check calls aten::diff, which the TorchScript exporter lacks;
    for plain (unpacked) inputs it finds nothing, so the export skips it."""
    import transformers.masking_utils as mu

    mu.find_packed_sequence_indices = lambda position_ids: None


def export(model_name: str, path: Path):
    torch.manual_seed(0)
    model, cfg, names = BUILDERS[model_name]()
    model = model.eval()
    with torch.no_grad():  # distinct values everywhere (no all-zero biases or all-one norms), so the
        for p in model.parameters():  # exporter merges no equal initializers into one
            p.normal_(0.0, 0.02)
    gen = torch.Generator().manual_seed(1)
    samples = {"input_ids": torch.randint(0, VOCAB, (BATCH, SEQUENCE), generator=gen),
               "attention_mask": torch.ones(BATCH, SEQUENCE, dtype=torch.int64),
               "token_type_ids": torch.zeros(BATCH, SEQUENCE, dtype=torch.int64)}
    args = tuple(samples[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    _no_packed_sequences()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Hidden(model, names), args, str(path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                          do_constant_folding=True, dynamo=False)
    params = sum(p.numel() for p in model.parameters())
    buffers = {n: b.numel() for n, b in model.named_buffers()}
    return params, buffers, cfg


def optimize(src: Path, dest: Path, model_name, model_type, opt_level, only_ort, options):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fusion = FusionOptions(model_type)
    for k, v in options.items():
        setattr(fusion, k, v)
    heads, hidden = HEADS_HIDDEN[model_name]
    opt = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden,
                         optimization_options=fusion, opt_level=opt_level, use_gpu=False,
                         only_onnxruntime=only_ort)
    opt.save_model_to_file(str(dest), use_external_data_format=False)


_NP = {onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
       onnx.TensorProto.FLOAT: np.float32}


def feeds_of(model: onnx.ModelProto):
    """Each graph input at batch 2, sequence 16, with the dtype the (optimized) graph declares."""
    out = {}
    for i in model.graph.input:
        t = i.type.tensor_type
        dims = []
        for d in t.shape.dim:
            name = d.dim_param
            dims.append(BATCH if name == "batch" else SEQUENCE if name == "sequence" else d.dim_value)
        out[i.name] = {"shape": dims, "dtype": np.dtype(_NP[t.elem_type]).name}
    return out


def _feed(name, spec):
    shape, dtype = spec["shape"], np.dtype(spec["dtype"])
    if name == "input_ids":
        return np.random.default_rng(0).integers(0, VOCAB, shape).astype(dtype)
    if name == "attention_mask":
        return np.ones(shape, dtype)
    return np.zeros(shape, dtype)


def ort_shapes(model: onnx.ModelProto, feeds):
    """Every main-graph node output's executed shape and dtype, all exposed as graph outputs."""
    model = every_output(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {n: _feed(n, s) for n, s in feeds.items()})
    return {n: {"shape": list(v.shape), "dtype": str(v.dtype)} for n, v in zip(names, values)}


def op_counts(model: onnx.ModelProto):
    c = collections.Counter((f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
                            for n in model.graph.node)
    return dict(sorted(c.items()))


def stored(model: onnx.ModelProto):
    by = collections.Counter()
    for t in model.graph.initializer:
        by[onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name] += int(np.prod(t.dims, dtype=np.int64))
    return dict(sorted(by.items()))


def make(name):
    model_name, model_type, opt_level, only_ort, options = VARIANTS[name]
    dest = OUT / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        params, buffers, cfg = export(model_name, raw)
        optimize(raw, dest, model_name, model_type, opt_level, only_ort, options)
    model = onnx.load(str(dest))
    feeds = feeds_of(model)
    truth = {"source": f"torch {torch.__version__}, onnxruntime {ort.__version__}",
             "optimizer": {"model_type": model_type, "opt_level": opt_level, "use_gpu": False,
                           "only_onnxruntime": only_ort,
                           "num_heads": HEADS_HIDDEN[model_name][0],
                           "hidden_size": HEADS_HIDDEN[model_name][1], "options": options},
             "feeds": feeds, "ort": ort_shapes(model, feeds), "ops": op_counts(model),
             "torch_params": params, "torch_buffers": buffers, "stored": stored(model),
             "config": {"class": type(cfg).__name__, **json.loads(cfg.to_json_string(use_diff=True))}}
    (OUT / f"{name}.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    fused = {k: v for k, v in truth["ops"].items() if "::" in k}
    print(f"{name}: {dest.stat().st_size} bytes, params {params}, fused {fused}")


def main(names):
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or VARIANTS:
        make(name)


if __name__ == "__main__":
    main(sys.argv[1:])
