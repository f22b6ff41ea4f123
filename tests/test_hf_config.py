"""A Hugging Face config.json as a model: parameter counts against transformers' own (the fixtures'
counts come from the model built on torch's meta device, tools/make_hf_config_fixtures.py) and
against the published counts of real configs; the graph's units, and its errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import ROOT

import archcalc
from archcalc.cli import main
from archcalc.errors import InputError

FIXTURES = ROOT / "tests" / "fixtures" / "hf_configs"
COUNTS = json.loads((FIXTURES / "transformers_counts.json").read_text())


@pytest.mark.parametrize("family", sorted(COUNTS))
def test_parameters_are_transformers_count(family):
    est = archcalc.estimate(FIXTURES / f"{family}.json", dims={"sequence": 16})
    assert est.totals.params == COUNTS[family]
    assert not est.totals.unknown and not est.totals.unsupported_ops


@pytest.mark.parametrize("family", sorted(COUNTS))
def test_transformers_builds_what_the_fixture_says(family):
    """The committed count is transformers' own, rebuilt here when torch is installed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.from_pretrained(FIXTURES / f"{family}.json")
    with torch.device("meta"):
        auto = transformers.AutoModel if family == "bert" else transformers.AutoModelForCausalLM
        model = auto.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[family]


# The published parameter counts of real models, from their config.json fields.
PUBLISHED = [
    ("llama-2-7b", {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                    "tie_word_embeddings": False, "torch_dtype": "float16"}, 6_738_415_616),
    ("mistral-7b-v0.1", {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                         "vocab_size": 32000, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, 7_241_732_096),
    ("gpt2", {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
              "n_positions": 1024, "activation_function": "gelu_new"}, 124_439_808),
    ("bert-base-uncased", {"model_type": "bert", "hidden_size": 768, "intermediate_size": 3072,
                           "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 30522,
                           "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu"},
     109_482_240),
    ("opt-125m", {"model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048,
                  "word_embed_proj_dim": 768, "do_layer_norm_before": True, "activation_function": "relu"},
     125_239_296),
]


@pytest.mark.parametrize("name, config, published", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_parameter_counts(tmp_path, name, config, published):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    est = archcalc.estimate(path, dims={"sequence": 8})
    assert est.totals.params == published


def test_a_config_is_planned_by_its_layers(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(PUBLISHED[1][1]))
    out = CliRunner().invoke(main, ["plan", str(path), "--dim", "sequence=4096", "--gpus", "8", "--dtype", "mixed",
                                    "--format", "json"])
    data = json.loads(out.output)
    assert data["units"]["source"] == "module paths" and len([n for n in data["units"]["names"]
                                                               if n.startswith("model/layers.")]) == 32
    assert data["rows"][0]["fits"]


def test_configs_archcalc_cannot_build_are_refused_by_name(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(InputError, match="'mamba' is not one archcalc builds"):
        archcalc.estimate(path)
    path.write_text("{not json")
    out = CliRunner().invoke(main, ["estimate", str(path)])
    assert out.exit_code == 2 and "error:" in out.output and "Traceback" not in out.output


def test_a_cohere_config_with_per_head_norms_is_refused(tmp_path):
    """Cohere's use_qk_norm (Command R+: a LayerNorm per head on queries and keys) is not built: said,
    not guessed."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads((FIXTURES / "cohere.json").read_text()), "use_qk_norm": True}))
    with pytest.raises(InputError, match="use_qk_norm"):
        archcalc.estimate(path, dims={"sequence": 4})


@pytest.mark.parametrize("family, field, value, says", [
    ("opt", "word_embed_proj_dim", -5, "whole number"),
    ("cohere", "logit_scale", "x", "positive number"),
    ("gpt_bigcode", "multi_query", 3, "true or false"),
    ("granite", "residual_multiplier", 0, "positive number"),
])
def test_the_new_families_fields_are_checked(tmp_path, family, field, value, says):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads((FIXTURES / f"{family}.json").read_text()), field: value}))
    with pytest.raises(InputError, match=f"{field}: .* must be a? ?{says}"):
        archcalc.estimate(path, dims={"sequence": 4})


def test_a_config_missing_a_size_names_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
                                "num_hidden_layers": 2}))
    with pytest.raises(InputError, match="vocab_size"):
        archcalc.estimate(path, dims={"sequence": 4})
    path.write_text(json.dumps({**PUBLISHED[0][1], "num_key_value_heads": 5}))
    with pytest.raises(InputError, match="group evenly"):
        archcalc.estimate(path, dims={"sequence": 4})


# Keys and values per token, 16-bit: 2 x layers x key/value heads x head dim x 2 bytes (Llama-2-7B's
# 0.5 MiB a token; Mistral-7B's grouped-query 8 heads, a quarter of it); GPT-2 in fp32.
KV_PER_TOKEN = {"llama-2-7b": 524_288, "mistral-7b-v0.1": 131_072, "gpt2": 73_728}


@pytest.mark.parametrize("name, config, _", [p for p in PUBLISHED if p[0] in KV_PER_TOKEN], ids=list(KV_PER_TOKEN))
def test_kv_cache_per_token_from_the_graph(tmp_path, name, config, _):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    kv = archcalc.estimate(path, batch=3, dims={"sequence": 16}).kv_cache()
    assert kv.bytes_per_token == KV_PER_TOKEN[name] and len(kv.layers) == config.get("num_hidden_layers", 12)
    assert archcalc.estimate(path, dims={"sequence": 16}).kv_cache("int8").bytes_per_token * 2 == (
        KV_PER_TOKEN[name] if config.get("torch_dtype") else KV_PER_TOKEN[name] // 2)


def test_kv_cache_of_exports_equals_their_configs():
    """GPT-2 exported by torch's dynamo exporter, and a grouped-query Llama exported by transformers
    with its shared key/value heads copied (repeat_kv): the same bytes as their configs give."""
    gpt2 = archcalc.estimate(ROOT / "tests/fixtures/models/gpt2_dynamo.onnx", dims={"sequence": 8}).kv_cache()
    assert gpt2.bytes_per_token == 2 * 12 * 768 * 4
    llama = archcalc.estimate(ROOT / "tests/fixtures/fused/llama_o1.onnx", dims={"sequence": 8}).kv_cache()
    assert llama.bytes_per_token == 2 * 2 * 2 * 16 * 4  # 2 layers, k and v, 2 kv heads of 16, fp32


def test_a_config_exports_a_model_onnxruntime_runs(tmp_path):
    """`archcalc export config.json` (was a KeyError): the model runs in onnxruntime, logits over the config's
    vocabulary."""
    import json

    import numpy as np
    import onnxruntime as ort
    from click.testing import CliRunner

    from archcalc.cli import main

    config = ROOT / "tests" / "fixtures" / "hf_configs" / "llama.json"
    out = tmp_path / "llama.onnx"
    result = CliRunner().invoke(main, ["export", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input_ids": np.zeros((1, 8), np.int64)})[0]
    assert logits.shape == (1, 8, json.loads(config.read_text())["vocab_size"])


def test_falcons_new_layers_without_parallel_attention_are_refused(tmp_path):
    """transformers' FalconDecoderLayer builds its norms only for parallel attention when
    new_decoder_architecture is set (the model cannot run): said, with the two fields named."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads((FIXTURES / "falcon_new.json").read_text()), "parallel_attn": False}))
    with pytest.raises(InputError, match="new_decoder_architecture.*parallel_attn"):
        archcalc.estimate(str(path), dims={"sequence": 8})
