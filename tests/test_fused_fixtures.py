"""Models rewritten by onnxruntime's transformer optimizer (tools/make_fused_fixtures.py: tiny
random-weight BERT, GPT-2, Llama and T5 encoders, exported by torch, then fused into com.microsoft
Attention, MultiHeadAttention, EmbedLayerNormalization, SkipLayerNormalization, FastGelu,
BiasGelu, FusedMatMul, QuickGelu, SimplifiedLayerNormalization): every tensor against onnxruntime's
executed shape, parameters against torch's count."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

import archcalc

FUSED = ROOT / "tests" / "fixtures" / "fused"
# The rotary embedding's inv_freq is a torch buffer the export stores as a float initializer that a
# MatMul reads: nothing in the file tells it from a weight, so it counts as one.
STORED_BUFFERS = {"llama_o1": 8, "llama_ort_o2": 8}


@pytest.mark.parametrize("name", sorted(p.stem for p in FUSED.glob("*.json")))
def test_fused_model_against_onnxruntime_and_torch(name):
    truth = json.loads((FUSED / f"{name}.json").read_text())
    shapes = {k: "x".join(map(str, v["shape"])) for k, v in truth["feeds"].items()}
    est = archcalc.estimate(FUSED / f"{name}.onnx", inputs=shapes)
    wrong = {n: (est.graph.tensors[n].shape, s["shape"]) for n, s in truth["ort"].items()
             if (list(est.graph.tensors[n].shape), est.graph.tensors[n].dtype) != (s["shape"], s["dtype"])}
    assert not wrong
    assert est.totals.status == "exact" and not est.totals.unsupported_ops
    assert est.totals.params == truth["torch_params"] + STORED_BUFFERS.get(name, 0)
    fused = {op for op in truth["ops"] if op.startswith("com.microsoft.")}
    assert fused <= {f"com.microsoft.{r.op_type}" for r in est.layers_list}
