"""Transformer designs (TOKENS[S] -> EMBED -> ... -> LMHEAD): published counts, the same counts as the
equivalent Hugging Face config, onnxruntime running the exported model, and positioned errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import archcalc
from archcalc.analysis.estimate import analyse
from archcalc.cli import main
from archcalc.errors import DSLError
from archcalc.frontends.dsl.build import _Build, build
from archcalc.frontends.dsl.parser import parser
from archcalc.frontends.dsl.transformer import design_model
from archcalc.frontends.transformer_net import with_random_weights
from archcalc.measure.validate import check_shapes, feeds

# Trainable parameters as published (each zoo file's header cites its source).
PUBLISHED = {"gpt2-124m": 124_439_808, "bert-base": 109_482_240, "llama-2-7b": 6_738_415_616,
             "mistral-7b": 7_241_732_096, "mixtral-8x7b": 46_702_792_704}
_DECODER = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# The config.json of each zoo design's model (the fields archcalc reads) and its sequence length.
CONFIGS = {
    "gpt2-124m": ({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
                   "n_positions": 1024, "activation_function": "gelu_new"}, 1024),
    "bert-base": ({"model_type": "bert", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "vocab_size": 30522, "max_position_embeddings": 512,
                   "type_vocab_size": 2, "hidden_act": "gelu"}, 512),
    "llama-2-7b": ({**_DECODER, "model_type": "llama", "intermediate_size": 11008, "num_key_value_heads": 32}, 4096),
    "mistral-7b": ({**_DECODER, "model_type": "mistral", "intermediate_size": 14336, "num_key_value_heads": 8,
                    "sliding_window": 4096}, 8192),
    "mixtral-8x7b": ({**_DECODER, "model_type": "mixtral", "intermediate_size": 14336, "num_key_value_heads": 8,
                      "num_local_experts": 8, "num_experts_per_tok": 2}, 4096),
}
SMALL = [
    "TOKENS[16] -> EMBED-100x32 -> [RMSNORM -> ATTN-4h/kv2 -> RMSNORM -> SWIGLU-64]*2 -> RMSNORM -> LMHEAD-100",
    "TOKENS[16] -> EMBED-100x32/pos64 -> [LN -> ATTN-4h/bias/fused -> LN -> MLP-128/gelu_tanh]*2 -> LN "
    "-> LMHEAD-100/tied",
    "TOKENS[16] -> EMBED-100x32/pos16/types2 -> LN -> [ATTN-4h/bias/post -> LN -> MLP-128/relu/post -> LN]*2 "
    "-> POOLER",
    "TOKENS[16] -> EMBED-100x32 -> [RMSNORM -> ATTN-4h/kv1/d16/window8/fused -> RMSNORM -> MOE-4x48/top2/shared32 "
    "-> RMSNORM -> GEGLU-40/bias]*2 -> RMSNORM -> LMHEAD-120",
]


def _model(text: str):
    return design_model(_Build("<design>", text), parser().parse(text).children[0])


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_zoo_transformer_parameter_counts(name):
    assert archcalc.estimate(name).totals.params == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_design_counts_equal_the_configs(tmp_path, name):
    config, sequence = CONFIGS[name]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    from_config = archcalc.estimate(path, dims={"sequence": sequence})
    design = archcalc.estimate(name)
    assert design.totals.params == from_config.totals.params == PUBLISHED[name]
    assert design.totals.macs == from_config.totals.macs


@pytest.mark.parametrize("text", SMALL)
def test_exported_design_runs_in_onnxruntime_with_archcalcs_shapes(text):
    model = with_random_weights(_model(text))
    est = analyse(build(text), batch=2)
    inputs = feeds(est)
    assert inputs["input_ids"].shape == (2, 16) and inputs["input_ids"].dtype == np.int64
    checked, mismatches, _ = check_shapes(model, est, inputs)
    assert checked == len(model.graph.node) and not mismatches
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, inputs)
    width = 32 if "POOLER" in text else int(text.rsplit("LMHEAD-", 1)[1].split("/")[0])
    assert out.shape == (2, 1 if "POOLER" in text else 16, width) and np.isfinite(out).all()
    assert est.totals.params == archcalc.estimate(model).totals.params


def test_layers_are_the_planners_units():
    graph = build(SMALL[0])
    assert {ly.name.split("/")[2] for ly in graph.layers if ly.name.startswith("/model/layers.")} == \
        {"layers.0", "layers.1"}
    out = CliRunner().invoke(main, ["plan", "llama-2-7b", "--gpus", "8", "--dtype", "mixed", "--format", "json"])
    data = json.loads(out.output)
    assert data["units"]["source"] == "module paths"
    assert len([n for n in data["units"]["names"] if n.startswith("model/layers.")]) == 32


def test_pre_norm_residual_adds_to_the_norms_input_and_post_to_the_branchs():
    pre = build("TOKENS[8] -> EMBED-10x8 -> RMSNORM -> ATTN-2h")
    post = build("TOKENS[8] -> EMBED-10x8 -> RMSNORM -> ATTN-2h/post")
    add_pre, add_post = pre.layers[-1], post.layers[-1]
    assert add_pre.op_type == add_post.op_type == "Add"
    assert pre.layers[pre.producer(add_pre.inputs[0])].op_type == "Gather"  # x + ATTN(NORM(x))
    assert post.layers[post.producer(add_post.inputs[0])].op_type == "RMSNormalization"  # y + ATTN(y)


@pytest.mark.parametrize("text, where, message", [
    ("TOKENS[8] -> EMBED-10x8 -> ATTN-3h", "ATTN", "3 heads do not divide the hidden size 8"),
    ("TOKENS[8] -> EMBED-10x8 -> ATTN-4h/kv3", "ATTN", "3 key/value heads do not divide 4 heads"),
    ("TOKENS[8] -> EMBED-10x8 -> LMHEAD-12/tied", "LMHEAD", "a tied head reuses the EMBED table of 10 tokens"),
    ("TOKENS[8] -> EMBED-10x8 -> ATTN-2h/bogus", "ATTN", "unknown option '/bogus'"),
    ("TOKENS[8] -> EMBED-10x8 -> MLP-0", "MLP", "sizes are whole numbers from 1"),
    ("TOKENS[8] -> EMBED-10 -> LN", "EMBED", "write EMBED as EMBED-32000x4096"),
    ("TOKENS[8] -> LN -> EMBED-10x8", "LN", "put the embedding first"),
    ("TOKENS[8] -> EMBED-10x8 -> EMBED-10x8", "EMBED", "EMBED-VxH comes once"),
    ("TOKENS[8] -> EMBED-10x8/pos4", "EMBED", "4 learned positions do not cover TOKENS[8]"),
    ("TOKENS[8] -> EMBED-10x8 -> CONV3-8", "CONV", "CONV3 is not a transformer term"),
    ("TOKENS[8] -> EMBED-10x8 -> MOE-4x8/top5", "MOE", "/top5 takes more experts than the 4"),
    ("TOKENS[8] -> EMBED-10x8 -> MOE-4x8", "MOE", "give how many experts each token takes"),
    ("TOKENS[8] -> EMBED-10x8 -> LMHEAD-10 -> LN", "LN", "LMHEAD ends the design"),
    ("TOKENS[8] -> EMBED-10x8 -> ADD(LN | ID)", "ADD", "joins are not part of transformer designs"),
    ("TOKENS[8x8] -> EMBED-10x8", "8x8", "give the sequence length"),
    ("INPUT[8x8x3] -> CONV3-8 -> TOKENS[8]", "TOKENS", "TOKENS[8] can only start a design"),
    ("TOKENS[8] -> EMBED-10x8 -> TOKENS[8]", "TOKENS", "TOKENS[8] can only start a design"),
    ("INPUT[8x8x3] -> ATTN-2h", "ATTN", "ATTN is a transformer term: start the design with TOKENS[S]"),
])
def test_errors_are_positioned_with_a_fix(text, where, message):
    with pytest.raises(DSLError) as info:
        build(text, "t.arch")
    assert info.value.column == text.rindex(where) + 1 and message in info.value.message, str(info.value)
