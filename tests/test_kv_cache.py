"""KV cache bytes per token against onnxruntime: tiny Hugging Face decoders exported with their past
keys and values as inputs and outputs (tools/make_kv_exports.py) are run here, and the bytes the
presents grow by per token are what archcalc reads from the export and from the model's config --
MHA, GQA, MQA, a head dim other than hidden / heads, fused QKV, sliding windows and DeepSeek's
latent attention (whose cache transformers, like vLLM, keeps as the latent)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT

import archcalc

EXPORTS = ROOT / "tests" / "fixtures" / "kv_exports"
MEASURED = json.loads((EXPORTS / "measured.json").read_text())["variants"]


def _present_bytes(session: ort.InferenceSession, batch: int, past: int, new: int) -> int:
    feeds = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = np.ones((batch, new), np.int64)
        else:
            dims = [batch if d == "batch" else past if d == "past" else d for d in i.shape]
            feeds[i.name] = np.zeros(dims, np.float32)
    names = [o.name for o in session.get_outputs() if o.name.startswith("present")]
    return sum(a.nbytes for a in session.run(names, feeds))


@pytest.fixture(scope="module", params=sorted(MEASURED))
def variant(request):
    name = request.param
    session = ort.InferenceSession(str(EXPORTS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    # what a token adds to the presents, per sequence: onnxruntime's own outputs at two lengths
    grown = (_present_bytes(session, 2, 9, 3) - _present_bytes(session, 2, 5, 3)) // (2 * 4)
    return name, grown


def test_export_read_by_archcalc_is_what_onnxruntime_keeps(variant):
    name, grown = variant
    kv = archcalc.estimate(EXPORTS / f"{name}.onnx", batch=2, dims={"past": 5, "new": 3}).kv_cache()
    assert kv.bytes_per_token == grown


def test_config_gives_the_exports_cache(variant):
    name, grown = variant
    kv = archcalc.estimate(EXPORTS / f"{name}.config.json", dims={"sequence": 8}).kv_cache()
    assert kv.bytes_per_token == grown
    config = json.loads((EXPORTS / f"{name}.config.json").read_text())
    types = config.get("layer_types") or ["sliding_attention" if config.get("sliding_window") else "full"] * len(
        kv.layers)
    assert [layer.window for layer in kv.layers] == [
        config["sliding_window"] if t == "sliding_attention" else None for t in types]


def test_the_exports_run_at_the_sizes_the_tool_recorded(variant):
    """The committed measurements are the same run's: a regenerated fixture that disagrees shows here."""
    name, grown = variant
    assert MEASURED[name]["kv_bytes_per_token"] == grown


def test_kv_dtype_prices_the_cache_in_another_element_type():
    est = archcalc.estimate(EXPORTS / "llama_gqa.config.json", dims={"sequence": 8})
    fp32, fp8 = est.kv_cache(), est.kv_cache("float8e4m3fn")
    assert fp8.bytes_per_token * 4 == fp32.bytes_per_token


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_eager_and_fused_attention_keep_the_same_cache(name):
    """`estimate` reads the eager graph, `fit --mode serve` the fused one: one cache either way."""
    from archcalc.analysis.estimate import analyse
    from archcalc.frontends.sources import serving_graph

    eager = archcalc.estimate(EXPORTS / f"{name}.config.json", dims={"sequence": 8}).kv_cache()
    graph = serving_graph(EXPORTS / f"{name}.config.json")
    assert analyse(graph, 1, {"sequence": 8}).kv_cache() == eager


def test_a_fused_qkv_projection_is_not_latent_attention():
    """microsoft/Phi-3-mini-4k-instruct's config (tests/fixtures/hf_configs/phi3_mini.json: multi-head
    attention, 32 layers, 32 key/value heads of 96, q, k and v from one qkv_proj): its cache keeps
    2 x 32 x 32 x 96 bf16 values a token, 393,216 B -- not the 3,072-wide input of qkv_proj read as a
    latent (196,608 B, what archcalc printed before)."""
    kv = archcalc.estimate(str(ROOT / "tests" / "fixtures" / "hf_configs" / "phi3_mini.json"),
                           dims={"sequence": 8}).kv_cache("bfloat16")
    assert kv is not None and not kv.latent and kv.bytes_per_token == 2 * 32 * 32 * 96 * 2


def test_a_fused_qkv_cache_against_transformers_own():
    """The same, against the cache transformers builds for a tiny multi-head Phi-3
    (tests/fixtures/hf_configs/phi3_mha.json, float32): its DynamicCache's keys and values, per token."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = ROOT / "tests" / "fixtures" / "hf_configs" / "phi3_mha.json"
    model = transformers.Phi3ForCausalLM(transformers.Phi3Config(**json.loads(path.read_text()))).eval()
    with torch.no_grad():
        cache = model(torch.ones(1, 5, dtype=torch.long), use_cache=True).past_key_values
    per_token = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)) // 5
    assert archcalc.estimate(str(path), dims={"sequence": 8}).kv_cache().bytes_per_token == per_token


def test_dtype_prices_the_cache_as_it_prices_the_model():
    """--dtype fp16 on GPT-2 124M (12 layers of 768-wide keys and values): 12 x 2 x 768 x 2 bytes a
    token, as transformers' fp16 cache holds them -- the cache at the width the model computes in,
    unless --kv-dtype says otherwise."""
    est = archcalc.estimate("gpt2-124m", dtype="fp16")
    assert est.kv_cache().bytes_per_token == 12 * 2 * 768 * 2
    assert est.kv_cache("float8e4m3fn").bytes_per_token == 12 * 2 * 768
    assert est.to_dict()["kv_cache"]["bytes_per_token"] == 12 * 2 * 768 * 2


TINY_DECODERS = sorted(p.stem for p in (ROOT / "tests" / "fixtures" / "hf_configs").glob("*.json")
                       if p.stem not in ("transformers_counts", "bert", "phi3_mini"))


@pytest.mark.parametrize("name", TINY_DECODERS)
def test_every_familys_cache_is_transformers_own(name):
    """Each decoder family archcalc reads (a tiny config of each: MHA, GQA, fused QKV, sliding and
    per-layer windows, q/k norms, MoE, DeepSeek's latent attention), against the cache transformers
    builds for it: the keys and values its DynamicCache holds after 5 tokens, per token (float32,
    where every window is wider than 5)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = ROOT / "tests" / "fixtures" / "hf_configs" / f"{name}.json"
    config = transformers.AutoConfig.for_model(**json.loads(path.read_text()))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        cache = model(torch.ones(1, 5, dtype=torch.long), use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
               if t is not None)
    assert archcalc.estimate(str(path), dims={"sequence": 8}).kv_cache("float32").bytes_per_token == held // 5


def _variant(config: dict, rnd) -> dict:
    """A random valid reshaping of a tiny config: heads, key/value heads, head size, width, depth."""
    c = dict(config)
    keys = {"heads": "n_head" if "n_head" in c else "num_attention_heads",
            "hidden": "n_embd" if "n_embd" in c else "hidden_size",
            "layers": "n_layer" if "n_layer" in c else "num_hidden_layers"}
    if c.get("model_type") not in ("deepseek_v2", "deepseek_v3"):  # latent attention's widths are its own
        heads, size = rnd.choice([2, 4, 8]), rnd.choice([16, 32])
        c[keys["heads"]] = heads
        if "num_key_value_heads" in c:
            c["num_key_value_heads"] = rnd.choice([d for d in (1, 2, 4, 8) if heads % d == 0])
        if "head_dim" in c:
            c["head_dim"], c[keys["hidden"]] = size, rnd.choice([64, 128])
        else:
            c[keys["hidden"]] = heads * size
    layers = rnd.choice([1, 2, 3])
    c[keys["layers"]] = layers
    if c.get("layer_types"):
        c["layer_types"] = (c["layer_types"] * layers)[:layers]
    return c


@pytest.mark.parametrize("name", TINY_DECODERS)
def test_random_configs_of_every_family_cache_as_transformers_does(name, tmp_path):
    """#24's fuzz: three random valid reshapings of each family's config (seeded), each where
    transformers accepts it, cached as transformers' DynamicCache holds it."""
    import random

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    base = json.loads((ROOT / "tests" / "fixtures" / "hf_configs" / f"{name}.json").read_text())
    rnd = random.Random(name)
    for k in range(3):
        config = _variant(base, rnd)
        try:
            model = transformers.AutoModelForCausalLM.from_config(
                transformers.AutoConfig.for_model(**config), dtype=torch.float32).eval()
        except (ValueError, AssertionError):
            continue  # transformers refuses this shape
        with torch.no_grad():
            cache = model(torch.ones(1, 5, dtype=torch.long), use_cache=True).past_key_values
        held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
                   if t is not None)
        path = tmp_path / f"{name}_{k}.json"
        path.write_text(json.dumps(config))
        got = archcalc.estimate(str(path), dims={"sequence": 8}).kv_cache("float32").bytes_per_token
        assert got == held // 5, (k, config)
